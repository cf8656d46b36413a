// Every rule of the shared validation layer: each bad value raises ra::Error whose message
// names the argument and the value.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "runtime/error.h"
#include "runtime/validation.h"

namespace ra {
namespace {

// Runs `fn`, expects ra::Error, and checks the message holds every fragment.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<const char*> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected ra::Error";
  } catch (const Error& e) {
    for (const char* f : fragments) {
      EXPECT_NE(e.message().find(f), std::string::npos) << "'" << f << "' not in: " << e.message();
    }
    EXPECT_NE(std::string(e.what()).find(".cpp:"), std::string::npos) << "no file:line";
  }
}

DilatedAttentionConfig valid_config() {
  DilatedAttentionConfig c;
  c.segment_lengths = {16, 32};
  c.dilation_rates = {1, 2};
  return c;
}

TEST(Validation, ValidConfigPasses) { EXPECT_NO_THROW(validate(valid_config())); }

TEST(Validation, EmptyLists) {
  auto c = valid_config();
  c.segment_lengths.clear();
  expect_error([&] { validate(c); }, {"segment_lengths", "empty"});
  c = valid_config();
  c.dilation_rates.clear();
  expect_error([&] { validate(c); }, {"dilation_rates", "empty"});
}

TEST(Validation, MismatchedLengths) {
  auto c = valid_config();
  c.dilation_rates = {1, 2, 4};
  expect_error([&] { validate(c); }, {"segment_lengths has 2", "dilation_rates has 3"});
}

TEST(Validation, NonPositiveValues) {
  auto c = valid_config();
  c.segment_lengths[1] = 0;
  expect_error([&] { validate(c); }, {"segment_lengths[1] = 0", "positive"});
  c = valid_config();
  c.dilation_rates[0] = -2;
  expect_error([&] { validate(c); }, {"dilation_rates[0] = -2", "positive"});
}

TEST(Validation, DropoutRange) {
  for (double p : {-0.1, 1.0, 1.5}) {
    auto c = valid_config();
    c.dropout = p;
    expect_error([&] { validate(c); }, {"dropout", "[0, 1)"});
  }
}

TEST(Validation, SoftmaxScale) {
  for (double s : {0.0, -1.0, std::numeric_limits<double>::infinity()}) {
    auto c = valid_config();
    c.softmax_scale = s;
    expect_error([&] { validate(c); }, {"softmax_scale"});
  }
}

TEST(Validation, SequenceLengthMultipleOfClippedSegments) {
  auto c = valid_config();
  EXPECT_NO_THROW(validate_sequence_length(c, 64));
  EXPECT_NO_THROW(validate_sequence_length(c, 16));  // 32 clips to 16
  expect_error([&] { validate_sequence_length(c, 48); }, {"S = 48", "segment_lengths[1] = 32"});
  expect_error([&] { validate_sequence_length(c, 0); }, {"sequence length = 0"});
}

TEST(Validation, Sharding) {
  auto c = valid_config();
  EXPECT_NO_THROW(validate_sharding(c, 64, 4));
  expect_error([&] { validate_sharding(c, 64, 3); }, {"S = 64", "P = 3"});
  c.segment_lengths = {24};
  c.dilation_rates = {1};
  // S = 96, P = 2: shard 48, segment 24 divides it; P = 3: shard 32, 24 neither divides nor
  // is a multiple.
  EXPECT_NO_THROW(validate_sharding(c, 96, 2));
  expect_error([&] { validate_sharding(c, 96, 3); }, {"segment_lengths[0] = 24", "32"});
}

TEST(Validation, FastPathHeadDim) {
  EXPECT_NO_THROW(validate_fast_path_head_dim(64));
  EXPECT_NO_THROW(validate_fast_path_head_dim(256));
  expect_error([] { validate_fast_path_head_dim(60); }, {"head_dim = 60", "multiple of 8"});
  expect_error([] { validate_fast_path_head_dim(512); }, {"head_dim = 512", "256"});
}

TEST(Validation, Multihead) {
  MultiheadConfig m;
  m.embed_dim = 64;
  m.num_heads = 4;
  m.attention = valid_config();
  EXPECT_NO_THROW(validate(m));
  m.num_heads = 5;
  expect_error([&] { validate(m); }, {"embed_dim = 64", "num_heads = 5"});
  m.num_heads = 0;
  expect_error([&] { validate(m); }, {"num_heads = 0"});
  m.num_heads = 4;
  m.layer_norm_eps = 0;
  expect_error([&] { validate(m); }, {"layer_norm_eps"});
  m.layer_norm_eps = 1e-5;
  m.gamma_init = -1;
  expect_error([&] { validate(m); }, {"gamma_init = -1"});
  m.gamma_init = 1;
  m.attention.dropout = 2;
  expect_error([&] { validate(m); }, {"dropout = 2"});
}

TEST(Validation, RingAndSparse) {
  RingConfig r;
  EXPECT_NO_THROW(validate(r));
  r.timeout_seconds = 0;
  expect_error([&] { validate(r); }, {"timeout_seconds = 0"});
  r = RingConfig{};
  r.exchange_ctas = -1;
  expect_error([&] { validate(r); }, {"exchange_ctas = -1", "0 (NCCL's choice) to 64"});
  r.exchange_ctas = 65;
  expect_error([&] { validate(r); }, {"exchange_ctas = 65"});
  r.exchange_ctas = 0;
  EXPECT_NO_THROW(validate(r));
  SparseConfig s;
  EXPECT_NO_THROW(validate(s));
  s.block_size = 48;
  expect_error([&] { validate(s); }, {"block_size = 48", "64 or 128"});
  s = SparseConfig{};
  s.sparsity = 1.0;
  expect_error([&] { validate(s); }, {"sparsity = 1"});
  s = SparseConfig{};
  s.window = 0;
  expect_error([&] { validate(s); }, {"window = 0"});
  s = SparseConfig{};
  s.global_tokens = -1;
  expect_error([&] { validate(s); }, {"global_tokens = -1"});
}

TEST(Validation, Inputs) {
  auto c = valid_config();
  auto t = [](std::vector<int64_t> shape, torch::ScalarType d = torch::kFloat) {
    return torch::randn(shape, torch::TensorOptions().dtype(d));
  };
  auto q = t({1, 32, 4, 8});
  EXPECT_NO_THROW(validate_attention_inputs(c, q, q, q));
  expect_error(
      [&] {
        validate_attention_inputs(c, t({32, 4, 8}), q, q);
      },
      {"q has shape", "4 dims"});
  expect_error(
      [&] {
        validate_attention_inputs(c, q, q, t({1, 32, 4, 8}, torch::kDouble));
      },
      {"v has dtype", "one dtype"});
  expect_error(
      [&] {
        validate_attention_inputs(c, q, t({1, 16, 4, 8}), t({1, 16, 4, 8}));
      },
      {"k has shape", "seq_len"});
  expect_error(
      [&] {
        validate_attention_inputs(c, q, q, t({1, 32, 4, 4}));
      },
      {"k has shape", "v has"});
  expect_error(
      [&] {
        validate_attention_inputs(c, q, t({1, 32, 3, 8}), t({1, 32, 3, 8}));
      },
      {"3 heads", "GQA"});
  expect_error(
      [&] {
        validate_attention_inputs(c, torch::ones({1, 32, 4, 8}, torch::kLong), q, q);
      },
      {"q has dtype"});
  expect_error(
      [&] {
        validate_attention_inputs(c, t({1, 48, 4, 8}), t({1, 48, 4, 8}), t({1, 48, 4, 8}));
      },
      {"S = 48"});
  auto bad = q.clone();
  bad[0][3][1][2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NO_THROW(validate_attention_inputs(c, q, bad, q));  // checking is off by default
  c.check_finite = true;
  expect_error([&] { validate_attention_inputs(c, q, bad, q); }, {"k contains NaN"});
}

}  // namespace
}  // namespace ra
