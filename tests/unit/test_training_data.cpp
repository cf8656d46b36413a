// Training data: the key-value task puts pairs on the first shard and queries on the last, is
// a pure function of (seed, step), and its shards agree with the unsharded sequence; the token
// file dataset reads exactly its shard (+1 target), rejects bad files with --data errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>

#include "runtime/error.h"
#include "runtime/synthetic_tasks.h"
#include "runtime/token_dataset.h"

namespace ra {
namespace {

ShardLayout layout(int rank, int world, int64_t seq_len = 64, int64_t batch = 3) {
  return {batch, seq_len, rank, world};
}

TEST(KeyValueTask, QueriesOnLastShardPairsOnFirstAndTargetsMatchTheMap) {
  KeyValueRetrievalTask whole(4, 5, layout(0, 1), 11);
  Batch b = whole.batch(3);
  ASSERT_EQ(b.tokens.sizes(), (std::vector<int64_t>{3, 64}));
  for (int64_t row = 0; row < 3; ++row) {
    auto tok = b.tokens[row], tgt = b.targets[row];
    std::map<int64_t, int64_t> value_of;  // key -> value token, from the pair tokens
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t t = tok[i].item<int64_t>() - KeyValueRetrievalTask::kFillerTokens;
      ASSERT_TRUE(t >= 0 && t < 20);
      value_of[t / 5] = whole.value_token(t % 5);
    }
    ASSERT_EQ(value_of.size(), 4u);  // every key once
    for (int64_t i = 4; i < 60; ++i) {
      EXPECT_LT(tok[i].item<int64_t>(), KeyValueRetrievalTask::kFillerTokens);
      EXPECT_EQ(tgt[i].item<int64_t>(), -1);
    }
    for (int64_t i = 60; i < 64; ++i) {
      const int64_t key = tok[i].item<int64_t>() - whole.query_token(0);
      ASSERT_TRUE(key >= 0 && key < 4);
      EXPECT_EQ(tgt[i].item<int64_t>(), value_of[key]);
    }
  }
  EXPECT_TRUE(torch::equal(whole.batch(3).tokens, b.tokens));  // a function of the step
  EXPECT_FALSE(torch::equal(whole.batch(4).tokens, b.tokens));
}

TEST(KeyValueTask, ShardsAgreeWithTheWholeSequenceOutsideFiller) {
  KeyValueRetrievalTask whole(4, 5, layout(0, 1), 11);
  Batch all = whole.batch(2);
  for (int rank = 0; rank < 4; ++rank) {
    Batch shard = KeyValueRetrievalTask(4, 5, layout(rank, 4), 11).batch(2);
    auto expected_targets = all.targets.narrow(1, rank * 16, 16);
    EXPECT_TRUE(torch::equal(shard.targets, expected_targets)) << rank;
    auto structural = expected_targets >= 0;  // queries
    EXPECT_TRUE(torch::equal(shard.tokens.index({structural}),
                             all.tokens.narrow(1, rank * 16, 16).index({structural})));
  }
  EXPECT_TRUE(
      torch::equal(KeyValueRetrievalTask(4, 5, layout(0, 4), 11).batch(2).tokens.narrow(1, 0, 4),
                   all.tokens.narrow(1, 0, 4)));  // the pairs
}

TEST(KeyValueTask, BadSpecsNameTheFlag) {
  EXPECT_THROW(make_synthetic_task("synthetic:nope", layout(0, 1), 0), Error);
  try {
    make_synthetic_task("synthetic:kv:40", layout(0, 1), 0);  // 80 tokens > 64
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("--seq-len"), std::string::npos) << e.message();
  }
}

std::string temp_path(const char* name) { return (std::string(::testing::TempDir()) + name); }

TEST(TokenFile, ShardsReadTheirSliceAndShiftedTargets) {
  for (uint32_t bytes : {2u, 4u}) {
    std::vector<uint32_t> tokens(8 * 64 + 1);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t((i * 7919) % 1000);
    const std::string path = temp_path("ra_tokens.bin");
    write_token_file(path, tokens, bytes, 1000);
    TokenFileDataset whole(path, layout(0, 1, 64, 2), 5);
    EXPECT_EQ(whole.num_sequences(), 8);
    Batch all = whole.batch(3);
    for (int64_t row = 0; row < 2; ++row) {
      const int64_t start = whole.sequence_index(3, row) * 64;
      for (int64_t i = 0; i < 64; ++i) {
        EXPECT_EQ(all.tokens[row][i].item<int64_t>(), tokens[start + i]);
        EXPECT_EQ(all.targets[row][i].item<int64_t>(), tokens[start + i + 1]);
      }
    }
    for (int rank = 0; rank < 4; ++rank) {
      Batch shard = TokenFileDataset(path, layout(rank, 4, 64, 2), 5).batch(3);
      EXPECT_TRUE(torch::equal(shard.tokens, all.tokens.narrow(1, rank * 16, 16)));
      EXPECT_TRUE(torch::equal(shard.targets, all.targets.narrow(1, rank * 16, 16)));
    }
    // One epoch visits every sequence once.
    std::set<int64_t> seen;
    for (int64_t step = 1; step <= 4; ++step)
      for (int64_t row = 0; row < 2; ++row) seen.insert(whole.sequence_index(step, row));
    EXPECT_EQ(seen.size(), 8u);
    std::remove(path.c_str());
  }
}

TEST(TokenFile, BadFilesAreRejectedNamingData) {
  const std::string path = temp_path("ra_bad_tokens.bin");
  {
    std::ofstream out(path, std::ios::binary);
    out << "not a token file at all, just text that is long enough";
  }
  try {
    TokenFileDataset(path, layout(0, 1), 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("--data"), std::string::npos);
    EXPECT_NE(e.message().find("RATOKEN1"), std::string::npos);
  }
  write_token_file(path, std::vector<uint32_t>(30, 1), 2, 10);  // fewer than S + 1 = 65 tokens
  EXPECT_THROW(TokenFileDataset(path, layout(0, 1), 0), Error);
  EXPECT_THROW(TokenFileDataset(temp_path("ra_missing.bin"), layout(0, 1), 0), Error);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace ra
