// validate_train_config: bad values are rejected with a message naming the flag, including the
// sharding rules (S divisible by P; segments dividing or spanning whole shards).
#include <gtest/gtest.h>

#include "runtime/error.h"
#include "runtime/train_config.h"

namespace ra {
namespace {

TrainConfig good() {
  TrainConfig c;
  c.seq_len = 1024;
  c.layers = 2;
  c.embed_dim = 64;
  c.heads = 4;
  c.attention.segment_lengths = {128, 1024};
  c.attention.dilation_rates = {1, 2};
  c.attention.causal = true;
  return c;
}

void expect_error_naming(const TrainConfig& c, int world, const std::string& flag) {
  try {
    validate_train_config(c, world);
    FAIL() << "no error for " << flag;
  } catch (const Error& e) {
    EXPECT_EQ(e.message().rfind(flag, 0), 0u) << e.message();
  }
}

TEST(TrainConfig, GoodConfigPassesAndBadValuesNameTheirFlag) {
  EXPECT_NO_THROW(validate_train_config(good(), 4));
  auto c = good();
  c.heads = 5;
  expect_error_naming(c, 1, "--heads");
  c = good(), c.steps = 0;
  expect_error_naming(c, 1, "--steps");
  c = good(), c.dtype = "fp8";
  expect_error_naming(c, 1, "--dtype");
  c = good(), c.attention_variant = "magic";
  expect_error_naming(c, 1, "--attention");
  c = good(), c.checkpointing = "sometimes";
  expect_error_naming(c, 1, "--checkpointing");
  c = good(), c.checkpoint_dtype = "fp16";
  expect_error_naming(c, 1, "--checkpoint-dtype");
  c = good(), c.offload_checkpoints = "maybe";
  expect_error_naming(c, 1, "--offload-checkpoints");
  c = good(), c.checkpoint_layers = c.layers + 1;
  expect_error_naming(c, 1, "--checkpoint-layers");
  c = good(), c.checkpoint_layers = -2;
  expect_error_naming(c, 1, "--checkpoint-layers");
  c = good(), c.checkpointing = "off", c.checkpoint_layers = 1;
  expect_error_naming(c, 1, "--checkpoint-layers");
  c = good(), c.recompute_ffn_layers = -1;
  expect_error_naming(c, 1, "--recompute-ffn-layers");
  c = good(), c.checkpointing = "on", c.checkpoint_layers = 1,
  c.recompute_ffn_layers = c.layers;  // one more than the blocks left
  expect_error_naming(c, 1, "--recompute-ffn-layers");
  c = good(), c.save_every = 5;
  expect_error_naming(c, 1, "--save-every");
  c = good(), c.resume = "auto";
  expect_error_naming(c, 1, "--resume");
  c = good(), c.data = "tokens.bin", c.attention.causal = false;
  expect_error_naming(c, 1, "--data");
  c = good(), c.attention.dilation_rates = {1};
  expect_error_naming(c, 1, "--segment-lengths");
}

TEST(TrainConfig, SequenceShardingRulesNameSeqLen) {
  expect_error_naming(good(), 3, "--seq-len");  // 1024 % 3 != 0
  auto c = good();
  c.attention.segment_lengths = {96, 1024};  // 1024 % 96 != 0
  expect_error_naming(c, 1, "--seq-len");
  c = good();
  c.attention.segment_lengths = {512, 1536};  // S ok, but 512 neither divides nor spans
  c.seq_len = 1536;                           // whole shards of 384 tokens
  EXPECT_NO_THROW(validate_train_config(c, 1));
  expect_error_naming(c, 4, "--seq-len");
}

TEST(TrainConfig, CheckpointingAutoTurnsOnForLongSequences) {
  auto c = good();
  EXPECT_FALSE(checkpointing_enabled(c));
  c.seq_len = kAutoCheckpointingSeqLen;
  EXPECT_TRUE(checkpointing_enabled(c));
  c.checkpointing = "off";
  EXPECT_FALSE(checkpointing_enabled(c));
}

TEST(TrainConfig, CheckpointLayersCountAndMemory) {
  auto c = good();
  c.checkpointing = "on";
  EXPECT_EQ(checkpointed_layers(c), c.layers);  // -1 = all
  const double all = checkpoint_bytes_per_rank(c, 1, "bfloat16");
  c.checkpoint_layers = 1;
  EXPECT_EQ(checkpointed_layers(c), 1);
  EXPECT_DOUBLE_EQ(checkpoint_bytes_per_rank(c, 1, "bfloat16"), all / double(c.layers));
  c.checkpointing = "auto";  // good() is short: auto resolves to off
  EXPECT_EQ(checkpointed_layers(c), 0);
}

TEST(TrainConfig, CheckpointDtypeAutoFollowsTheComputeDtype) {
  auto c = good();
  EXPECT_EQ(resolved_checkpoint_dtype(c, /*bf16_compute=*/true), "bfloat16");
  EXPECT_EQ(resolved_checkpoint_dtype(c, /*bf16_compute=*/false), "float32");
  c.checkpoint_dtype = "float32";
  EXPECT_EQ(resolved_checkpoint_dtype(c, true), "float32");
  c.checkpoint_dtype = "bfloat16";
  EXPECT_EQ(resolved_checkpoint_dtype(c, false), "bfloat16");
}

TEST(TrainConfig, CheckpointMemoryIsLayersTimesTokensPerRankTimesWidthTimesBytes) {
  TrainConfig c;  // LongNet-base at 8M tokens on 4 GPUs: 2M tokens per GPU
  c.seq_len = 8 << 20;
  const double gib = double(1ull << 30);
  EXPECT_DOUBLE_EQ(checkpoint_bytes_per_rank(c, 4, "float32") / gib, 72.0);
  EXPECT_DOUBLE_EQ(checkpoint_bytes_per_rank(c, 4, "bfloat16") / gib, 36.0);
  c.batch_size = 2;
  EXPECT_DOUBLE_EQ(checkpoint_bytes_per_rank(c, 8, "bfloat16") / gib, 36.0);
}

}  // namespace
}  // namespace ra
