// Shard geometry against brute-force enumeration: for every chunk of a segment, the kept
// positions o, o + r, ... (t < ceil((w - o) / r)) that fall inside it, over offsets, rates that
// do and do not divide the chunk, and offsets beyond the kept range; plus the task split into
// local and spanning branches and the zigzag chunk ids.
#include <gtest/gtest.h>

#include <vector>

#include "attention/ring/shard_geometry.h"

namespace ra {
namespace {

TEST(ShardGeometry, KeptInChunkMatchesEnumeration) {
  for (int64_t w : {12, 16, 48}) {
    for (int64_t chunk : {4, 6, 12, 16}) {
      if (w % chunk != 0) continue;
      for (int64_t rate : {1, 2, 3, 5, 7, 20}) {
        for (int64_t offset = 0; offset < rate; ++offset) {
          const int64_t kept = offset >= w ? 0 : (w - offset + rate - 1) / rate;
          int64_t total = 0;
          for (int64_t c = 0; c < w / chunk; ++c) {
            std::vector<int64_t> want;
            for (int64_t t = 0; t < kept; ++t) {
              const int64_t pos = offset + t * rate;
              if (pos >= c * chunk && pos < (c + 1) * chunk) want.push_back(pos - c * chunk);
            }
            const KeptChunk got = kept_in_chunk(c, c * chunk, chunk, 0, offset, rate, kept);
            ASSERT_EQ(got.count, static_cast<int64_t>(want.size()))
                << "w=" << w << " chunk=" << chunk << " r=" << rate << " o=" << offset
                << " c=" << c;
            if (!want.empty()) {
              EXPECT_EQ(got.first, want.front());
            }
            total += got.count;
          }
          EXPECT_EQ(total, kept);
        }
      }
    }
  }
}

TEST(ShardGeometry, TasksSplitIntoLocalAndSpanning) {
  DilatedAttentionConfig config;
  config.segment_lengths = {8, 32, 64};
  config.dilation_rates = {1, 2, 4};
  const DilationPlan plan = DilationPlan::build(config, 64, 4);
  const auto tasks = plan_shard_tasks(plan, 16, 4, /*rank=*/3, /*zigzag=*/false);
  for (const ShardTask& t : tasks) {
    if (t.branch == 0) {
      EXPECT_TRUE(t.local);
      EXPECT_EQ(t.local_segments, 2);
    } else {
      EXPECT_FALSE(t.local);
      EXPECT_EQ(t.group_size, t.branch == 1 ? 2 : 4);
      EXPECT_EQ(t.member, t.branch == 1 ? 1 : 3);
    }
  }
}

TEST(ShardGeometry, ZigzagMembersHoldChunksPAnd2PMinus1MinusP) {
  DilatedAttentionConfig config;
  config.segment_lengths = {64};
  config.dilation_rates = {1};
  config.causal = true;
  const DilationPlan plan = DilationPlan::build(config, 64, 2);
  const auto tasks = plan_shard_tasks(plan, 16, 4, /*rank=*/1, /*zigzag=*/true);
  ASSERT_EQ(tasks.size(), 1u);
  const auto& mine = tasks[0].my_chunks();
  ASSERT_EQ(mine.size(), 2u);
  EXPECT_EQ(mine[0].id, 1);
  EXPECT_EQ(mine[1].id, 6);
  EXPECT_EQ(mine[0].first, 0);
  EXPECT_EQ(mine[1].first, 8);
  EXPECT_EQ(mine[0].count, 8);
  EXPECT_EQ(mine[1].count, 8);
}

}  // namespace
}  // namespace ra
