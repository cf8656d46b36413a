// The block-call planner against the per-pair causal rule: expanding the planned calls to a
// [query row, key row] matrix must give exactly the pairs the chunk rule attends, each once,
// for zigzag hops (P = 2, 3, 4), plain contiguous layouts and dilated chunks (rates that do not
// divide the chunk, head offsets, chunks keeping nothing); and the zigzag hops take ONE call.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attention/ring/block_call_plan.h"
#include "attention/ring/shard_geometry.h"

namespace ra {
namespace {

int64_t total(const std::vector<KeptChunk>& chunks) {
  int64_t n = 0;
  for (const KeptChunk& c : chunks) n += c.count;
  return n;
}

// Times each packed (query row, key row) pair is attended by the calls.
std::vector<std::vector<int>> covered_by(const std::vector<BlockCall>& calls, int64_t nq,
                                         int64_t nk) {
  std::vector<std::vector<int>> hits(nq, std::vector<int>(nk, 0));
  for (const BlockCall& c : calls) {
    EXPECT_GT(c.q_count, 0);
    EXPECT_GT(c.kv_count, 0);
    EXPECT_LE(c.q_start + c.q_count, nq);
    EXPECT_LE(c.kv_start + c.kv_count, nk);
    if (c.mask == BlockMask::kCausalDiagonal) {
      EXPECT_EQ(c.q_count, c.kv_count);
    }
    for (int64_t i = 0; i < c.q_count; ++i) {
      for (int64_t j = 0; j < c.kv_count; ++j) {
        if (c.mask == BlockMask::kNone || j <= i) ++hits[c.q_start + i][c.kv_start + j];
      }
    }
  }
  return hits;
}

// The chunk rule pair by pair: earlier key chunk fully, same chunk lower-triangular.
std::vector<std::vector<int>> wanted(const std::vector<KeptChunk>& q_chunks,
                                     const std::vector<KeptChunk>& kv_chunks, bool causal) {
  std::vector<std::vector<int>> want(total(q_chunks), std::vector<int>(total(kv_chunks), 0));
  int64_t qa = 0;
  for (const KeptChunk& q : q_chunks) {
    int64_t kb = 0;
    for (const KeptChunk& k : kv_chunks) {
      for (int64_t i = 0; i < q.count; ++i) {
        for (int64_t j = 0; j < k.count; ++j) {
          want[qa + i][kb + j] = !causal || k.id < q.id || (k.id == q.id && j <= i);
        }
      }
      kb += k.count;
    }
    qa += q.count;
  }
  return want;
}

// Checks the plan of every (rank, member) pair of every spanning task; returns the calls of
// each hop of `rank` (index = member) of the first spanning task.
std::vector<size_t> check_all_pairs(const DilationPlan& plan, int64_t shard, int world, bool zigzag,
                                    bool causal, int probe_rank = 0) {
  std::vector<size_t> calls_per_member;
  for (int rank = 0; rank < world; ++rank) {
    for (const ShardTask& task : plan_shard_tasks(plan, shard, world, rank, zigzag)) {
      if (task.local) continue;
      for (int m = 0; m < task.group_size; ++m) {
        const auto& q = task.my_chunks();
        const auto& kv = task.member_chunks[m];
        const auto calls = plan_block_calls(q, kv, causal);
        EXPECT_EQ(covered_by(calls, total(q), total(kv)), wanted(q, kv, causal))
            << "rank " << rank << " member " << m << " branch " << task.branch << " offset "
            << task.offset;
        if (rank == probe_rank && calls_per_member.size() < static_cast<size_t>(task.group_size))
          calls_per_member.push_back(calls.size());
      }
    }
  }
  return calls_per_member;
}

DilationPlan dense_plan(int64_t seq, int64_t heads, bool causal) {
  DilatedAttentionConfig config;
  config.segment_lengths = {seq};
  config.dilation_rates = {1};
  config.causal = causal;
  return DilationPlan::build(config, seq, heads);
}

TEST(BlockCallPlan, ZigzagHopsTakeOneCallEach) {
  for (int world : {2, 3, 4}) {
    const int64_t seq = 16 * world;
    const DilationPlan plan = dense_plan(seq, 2, true);
    for (int rank = 0; rank < world; ++rank) {
      const auto calls = check_all_pairs(plan, seq / world, world, /*zigzag=*/true,
                                         /*causal=*/true, rank);
      ASSERT_EQ(calls.size(), static_cast<size_t>(world));
      for (int m = 0; m < world; ++m) EXPECT_EQ(calls[m], 1u) << "P=" << world << " r=" << rank;
    }
  }
}

TEST(BlockCallPlan, ZigzagDiagonalIsOneCausalCallOverBothChunks) {
  const DilationPlan plan = dense_plan(64, 2, true);
  const ShardTask task = plan_shard_tasks(plan, 16, 4, /*rank=*/1, /*zigzag=*/true)[0];
  const auto calls = plan_block_calls(task.my_chunks(), task.my_chunks(), true);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].mask, BlockMask::kCausalDiagonal);
  EXPECT_EQ(calls[0].q_count, 16);
  EXPECT_EQ(calls[0].kv_count, 16);
  // kv of an earlier rank: both query chunks x its first chunk; of a later rank: the second
  // query chunk x both of its chunks.
  const auto earlier = plan_block_calls(task.my_chunks(), task.member_chunks[0], true);
  ASSERT_EQ(earlier.size(), 1u);
  EXPECT_EQ(earlier[0].q_count, 16);
  EXPECT_EQ(earlier[0].kv_count, 8);
  const auto later = plan_block_calls(task.my_chunks(), task.member_chunks[2], true);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].q_start, 8);
  EXPECT_EQ(later[0].q_count, 8);
  EXPECT_EQ(later[0].kv_count, 16);
}

TEST(BlockCallPlan, NonCausalIsOneCall) {
  const DilationPlan plan = dense_plan(48, 2, false);
  for (bool zigzag : {false, true}) {
    const auto calls = check_all_pairs(plan, 16, 3, zigzag, /*causal=*/false);
    for (size_t n : calls) EXPECT_EQ(n, 1u);
  }
}

TEST(BlockCallPlan, ContiguousLayoutIsOneCallOrNone) {
  const DilationPlan plan = dense_plan(64, 2, true);
  for (int rank = 0; rank < 4; ++rank) {
    const auto calls = check_all_pairs(plan, 16, 4, /*zigzag=*/false, /*causal=*/true, rank);
    for (int m = 0; m < 4; ++m) EXPECT_EQ(calls[m], m <= rank ? 1u : 0u);
  }
}

TEST(BlockCallPlan, DilatedChunksMatchThePairRule) {
  // Rates that do and do not divide the chunk, head offsets (head mod r), segments spanning 2
  // and 4 ranks, chunks keeping nothing (r > chunk).
  DilatedAttentionConfig config;
  config.segment_lengths = {16, 32, 64, 64};
  config.dilation_rates = {1, 3, 5, 20};
  for (HeadMode mode : {HeadMode::kAll, HeadMode::kPartition}) {
    config.head_mode = mode;
    for (bool causal : {false, true}) {
      config.causal = causal;
      const DilationPlan plan = DilationPlan::build(config, 64, 8);
      for (bool zigzag : {false, true}) check_all_pairs(plan, 16, 4, zigzag, causal);
    }
  }
}

TEST(BlockCallPlan, DiagonalRunsStopWhereIdsDoNotIncrease) {
  // Same chunks on both sides but in decreasing id order: the packed causal mask would be
  // wrong over both, so each diagonal pair is its own call and the earlier chunk a full one.
  const std::vector<KeptChunk> chunks = {{5, 0, 3}, {2, 3, 4}};
  const auto calls = plan_block_calls(chunks, chunks, true);
  EXPECT_EQ(calls.size(), 3u);
  EXPECT_EQ(covered_by(calls, 7, 7), wanted(chunks, chunks, true));
  // Empty chunks take no rows and do not break a run.
  const std::vector<KeptChunk> gappy = {{0, 0, 2}, {1, 2, 0}, {2, 2, 3}};
  const auto gappy_calls = plan_block_calls(gappy, gappy, true);
  ASSERT_EQ(gappy_calls.size(), 1u);
  EXPECT_EQ(gappy_calls[0].q_count, 5);
  EXPECT_EQ(covered_by(gappy_calls, 5, 5), wanted(gappy, gappy, true));
}

}  // namespace
}  // namespace ra
