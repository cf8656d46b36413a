// Shard geometry against brute-force enumeration: for every chunk of a segment, the kept
// positions o, o + r, ... (t < ceil((w - o) / r)) that fall inside it, over offsets, rates that
// do and do not divide the chunk, and offsets beyond the kept range; plus the task split into
// local and spanning branches, the zigzag chunk ids, the causal balance's query chunks and the
// k/v heads of a task's query heads (GQA).
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

// Causal balance: the home rows of member i are its shard halves (ids 2i, 2i + 1) and the ring
// computes in the mirror layout (member i holds chunks 2i and 2(m-1-i) + 1, queries and keys
// alike). Counting a chunk pair as 1 when the key chunk is earlier and 1/2 on the diagonal,
// every member then attends exactly 2 to every member's keys, hop by hop (in the plain layout
// member i attends 1 to earlier members, 1/2 to itself, 0 to later ones). A group whose halves
// do not all keep rows stays unbalanced.
TEST(ShardGeometry, CausalBalanceGivesEveryMemberEqualWorkPerHop) {
  for (int P : {2, 3, 4}) {
    for (int64_t rate : {1, 2, 3}) {
      DilatedAttentionConfig config;
      config.segment_lengths = {16 * P};
      config.dilation_rates = {rate};
      config.causal = true;
      const DilationPlan plan = DilationPlan::build(config, 16 * P, rate);
      for (int rank = 0; rank < P; ++rank) {
        const auto unbalanced = plan_shard_tasks(plan, 16, P, rank, false);
        const auto balanced = plan_shard_tasks(plan, 16, P, rank, false, 1, true);
        ASSERT_EQ(balanced.size(), unbalanced.size());
        for (size_t task = 0; task < balanced.size(); ++task) {
          const ShardTask& t = balanced[task];
          const std::string what = "P=" + std::to_string(P) + " r=" + std::to_string(rate) +
                                   " rank " + std::to_string(rank) + " offset " +
                                   std::to_string(t.offset);
          const auto& home = t.my_home_chunks();
          ASSERT_EQ(home.size(), 2u) << what;
          EXPECT_EQ(home[0].id, 2 * rank) << what;
          EXPECT_EQ(home[1].id, 2 * rank + 1) << what;
          // The halves hold all of the member's kept rows, from where its whole chunk starts.
          const KeptChunk& whole = unbalanced[task].my_chunks()[0];
          EXPECT_EQ(home[0].count + home[1].count, whole.count) << what;
          EXPECT_EQ(home[0].first, whole.first) << what;
          EXPECT_EQ(t.swaps_rows(), 2 * rank + 1 != P) << what;
          for (int i = 0; i < P; ++i) {
            const auto& q = t.member_chunks[i];
            ASSERT_EQ(q.size(), 2u) << what;
            EXPECT_EQ(q[0].id, 2 * i) << what;
            EXPECT_EQ(q[1].id, 2 * (P - 1 - i) + 1) << what;
            for (int s = 0; s < P; ++s) {
              double work = 0;  // member i's queries against member s's keys, in chunk pairs
              for (const KeptChunk& qc : q) {
                for (const KeptChunk& kc : t.member_chunks[s]) {
                  work += kc.id < qc.id ? 1.0 : kc.id == qc.id ? 0.5 : 0.0;
                }
              }
              EXPECT_EQ(work, 2.0) << what << ": member " << i << " against " << s;
            }
          }
        }
      }
    }
  }
  // r = 16 keeps one row per 16-token shard: the second halves keep nothing.
  DilatedAttentionConfig sparse;
  sparse.segment_lengths = {64};
  sparse.dilation_rates = {16};
  sparse.causal = true;
  const DilationPlan plan = DilationPlan::build(sparse, 64, 1);
  for (const ShardTask& t : plan_shard_tasks(plan, 16, 4, 1, false, 1, true)) {
    EXPECT_TRUE(t.home_chunks.empty());
    EXPECT_EQ(t.my_chunks().size(), 1u);
  }
}

// GQA: query head h reads k/v head h / group; a task's k/v heads are the distinct ones, with
// the index that expands them back to its query heads.
TEST(ShardGeometry, KvHeadsOfQueryHeads) {
  const KvHeads same = kv_heads_of({0, 4, 1}, 1);  // no GQA: one k/v head per query head
  EXPECT_EQ(same.heads, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_TRUE(same.identity());
  const KvHeads dense = kv_heads_of({0, 4, 1}, 2);  // all heads (r = 1), H_kv = 2
  EXPECT_EQ(dense.heads, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(dense.expand, (std::vector<int64_t>{0, 0, 1, 1}));
  EXPECT_FALSE(dense.identity());
  EXPECT_EQ(dense.range.start, 0);
  EXPECT_EQ(dense.range.count(), 2);
  const KvHeads strided = kv_heads_of({1, 4, 2}, 2);  // all mode r = 2, offset 1: heads 1, 3
  EXPECT_EQ(strided.heads, (std::vector<int64_t>{0, 1}));
  EXPECT_TRUE(strided.identity());
  const KvHeads partition = kv_heads_of({2, 4, 1}, 4);  // heads 2, 3 of H = 4, H_kv = 1
  EXPECT_EQ(partition.heads, (std::vector<int64_t>{0}));
  EXPECT_EQ(partition.expand, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(partition.range.count(), 1);
  const KvHeads irregular = kv_heads_of({0, 7, 3}, 2);  // heads 0, 3, 6 of H = 8, H_kv = 4
  EXPECT_EQ(irregular.heads, (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(irregular.range.count(), 0);  // not a strided range

  DilatedAttentionConfig config;
  config.segment_lengths = {64};
  config.dilation_rates = {1};
  const DilationPlan plan = DilationPlan::build(config, 64, 4);
  const auto tasks = plan_shard_tasks(plan, 16, 4, /*rank=*/0, /*zigzag=*/false, /*kv_group=*/4);
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].kv.heads, (std::vector<int64_t>{0}));
  EXPECT_EQ(tasks[0].kv.expand, (std::vector<int64_t>{0, 0, 0, 0}));
}

}  // namespace
}  // namespace ra
