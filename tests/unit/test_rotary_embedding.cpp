// RotaryEmbedding: a shard encoded at its global offset equals the same slice of the whole
// sequence encoded at once (what sequence parallelism relies on), norms are preserved, and
// q.k after encoding depends only on the distance between positions (the point of RoPE). Also
// checks that MultiheadDilatedAttention applies the hook at the offset it is given, and that
// encoding q and k together gives what each alone does.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/standard/multihead_dilated_attention.h"
#include "runtime/rotary_embedding.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

TEST(RotaryEmbedding, ShardAtGlobalOffsetEqualsSliceOfWholeSequence) {
  RotaryEmbedding rope(16);
  auto x = torch::randn({2, 64, 3, 16}, torch::kDouble);
  auto whole = rope.rotate(x, 0);
  for (int64_t first : {0, 16, 48}) {
    auto shard = rope.rotate(x.narrow(1, first, 16), first);
    EXPECT_LT(testing::relative_error(shard, whole.narrow(1, first, 16)), 1e-14) << first;
  }
  EXPECT_GT(testing::relative_error(rope.rotate(x.narrow(1, 16, 16), 0), whole.narrow(1, 16, 16)),
            1e-2);  // the offset matters
}

TEST(RotaryEmbedding, PreservesNormsAndScoresDependOnDistanceOnly) {
  RotaryEmbedding rope(8);
  auto q = torch::randn({1, 1, 1, 8}, torch::kDouble),
       k = torch::randn({1, 1, 1, 8}, torch::kDouble);
  EXPECT_NEAR(rope.rotate(q, 12345).norm().item<double>(), q.norm().item<double>(), 1e-12);
  auto score = [&](int64_t m, int64_t n) {
    return (rope.encode_query(q, m) * rope.encode_key(k, n)).sum().item<double>();
  };
  EXPECT_NEAR(score(10, 3), score(1000007, 1000000), 1e-9);  // large positions: float64 angles
  EXPECT_GT(std::abs(score(10, 3) - score(10, 4)), 1e-6);
}

TEST(RotaryEmbedding, QueryAndKeyTogetherEqualEachAlone) {
  RotaryEmbedding rope(16);
  const auto q = torch::randn({2, 24, 3, 16}, torch::kDouble),
             k = torch::randn({2, 24, 3, 16}, torch::kDouble);
  const auto [q_rot, k_rot] = rope.encode_query_key(q, k, 77);
  EXPECT_TRUE(q_rot.equal(rope.encode_query(q, 77)));
  EXPECT_TRUE(k_rot.equal(rope.encode_key(k, 77)));
}

TEST(RotaryEmbedding, MultiheadAppliesItAtTheGivenOffset) {
  MultiheadConfig c;
  c.embed_dim = 32;
  c.num_heads = 4;
  c.attention.segment_lengths = {16};
  c.attention.dilation_rates = {1};
  c.attention.causal = true;
  MultiheadDilatedAttention plain(c), roped(c);
  roped->to(torch::kDouble), plain->to(torch::kDouble);
  {
    torch::NoGradGuard no_grad;
    auto src = plain->parameters();
    auto dst = roped->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  roped->set_position_encoding(std::make_shared<RotaryEmbedding>(8));
  auto x = torch::randn({1, 32, 32}, torch::kDouble);
  EXPECT_GT(testing::relative_error(roped->forward(x), plain->forward(x)), 1e-3);
  // Segments are local (16 tokens), so the second half encoded at offset 16 equals the second
  // half of the whole-sequence output.
  auto whole = roped->forward(x, 0);
  auto half = roped->forward(x.narrow(1, 16, 16), 16);
  EXPECT_LT(testing::relative_error(half, whole.narrow(1, 16, 16)), 1e-12);
}

}  // namespace
}  // namespace ra
