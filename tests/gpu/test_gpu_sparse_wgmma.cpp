// The Hopper (wgmma) forward of the block-sparse kernels, block_sparse_forward_sm90.cu, through
// the raw per-call launch: against the float64 dense masked reference and against the mma.sync
// kernel (RA_SPARSE_FORWARD=mma), every pattern, causal and not, fp16/bf16, D 128, block 128,
// GQA, strided inputs, every variant (64- and 128-key steps, overlapped, warp-specialized),
// ring-style layouts (kv_len != q_len, empty query blocks, diagonal_col). out and lse are
// NaN-poisoned before every call. The DenseBlock smoke test prints the first wrong (row, col) and a
// map of wrong 16x8 fragments to debug layouts. Skips without a compute capability 9.0 GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attention/sparse/cuda/block_sparse_cuda.h"
#include "attention/sparse/cuda/block_sparse_kernels.h"
#include "attention/sparse/sparse_patterns.h"
#include "runtime/error.h"
#include "tests/gpu/sparse_wgmma_test_support.h"
#include "tests/support/dense_reference.h"
#include "tests/support/sparse_cases.h"
#include "tests/support/sparse_token_mask.h"

namespace ra {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

using testing::kNaN;
using testing::mismatch_report;
using testing::random_on_gpu;

// Every wgmma forward variant, by its RA_SPARSE_FORWARD value ("wgmma" is kWgmma64; the default
// is wgmma_ws_pingpong).
constexpr const char* kWgmmaVariants[] = {"wgmma", "wgmma128", "wgmma_overlap", "wgmma_ws",
                                          "wgmma_ws_pingpong"};

cuda::SparseForwardKernel choice_for_d128_b128() {
  cuda::BlockSparseShape shape;
  shape.head_dim = 128;
  shape.block_size = 128;
  return cuda::block_sparse_forward_choice(shape);
}

// One forward launch (kernel chosen by `env`, RA_SPARSE_FORWARD) into NaN-filled out/lse.
AttentionResult forward(const char* env, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const SparseDeviceLayout& layout, double scale) {
  testing::ScopedEnv kernel("RA_SPARSE_FORWARD", env);
  at::Tensor out = at::full(q.sizes(), kNaN, q.options());
  at::Tensor lse = at::full({q.size(0), q.size(1), q.size(2)}, kNaN, q.options().dtype(at::kFloat));
  block_sparse_forward_cuda(q, k, v, layout, scale, out, lse);
  torch::cuda::synchronize();
  return {out, lse};
}

// The float64 reference for a [q_len, kv_len] token mask (true = attended), on the GPU.
testing::DenseResult reference(const at::Tensor& mask, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, double scale) {
  return testing::dense_attention_with_counts(mask.to(q.device(), at::kDouble).unsqueeze(0),
                                              q.to(at::kDouble), k.to(at::kDouble),
                                              v.to(at::kDouble), scale);
}

// ||a - b|| / ||b|| over the rows where b is finite (an lse of -inf must be -inf in a too).
double lse_error(const at::Tensor& got, const at::Tensor& want) {
  at::Tensor g = got.to(at::kDouble).cpu(), w = want.to(at::kDouble).cpu();
  at::Tensor finite = at::isfinite(w);
  if (!at::equal(at::isneginf(g), at::isneginf(w)) || at::isnan(g).any().item<bool>()) return kInf;
  return testing::relative_error(g.masked_select(finite), w.masked_select(finite));
}

// One (query block, key block) or 2 x 2 dense layouts, one head: the smallest cases, to debug
// the descriptor and fragment layouts when everything else fails.
TEST(GpuSparseWgmma, DenseBlockSmoke) {
  SKIP_WITHOUT_SM90("the wgmma forward");
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", nullptr);
    ASSERT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmmaWsPingpong);
  }
  torch::manual_seed(5);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (int64_t blocks : {1, 2}) {
      for (bool causal : {false, true}) {
        for (const char* env : kWgmmaVariants) {
          const int64_t S = 128 * blocks;
          SCOPED_TRACE(std::string(env) + (dtype == at::kHalf ? " fp16" : " bf16") +
                       " S=" + std::to_string(S) + (causal ? " causal" : ""));
          std::vector<std::vector<int64_t>> rows(blocks);
          for (int64_t i = 0; i < blocks; ++i) {
            for (int64_t j = 0; j < blocks; ++j) rows[i].push_back(j);
          }
          SparseDeviceLayout layout =
              upload_layout(BlockLayout::from_rows(rows, 128, causal), at::Device(at::kCUDA));
          at::Tensor q = random_on_gpu({1, S, 1, 128}, dtype),
                     k = random_on_gpu({1, S, 1, 128}, dtype),
                     v = random_on_gpu({1, S, 1, 128}, dtype);
          const double scale = 1.0 / std::sqrt(128.0);
          AttentionResult got = forward(env, q, k, v, layout, scale);
          at::Tensor mask = at::ones({S, S}, at::kBool);
          if (causal) mask = mask.tril();
          testing::DenseResult want = reference(mask, q, k, v, scale);
          const double tol = testing::tolerance_for(dtype);
          const double err = testing::relative_error(got.out, want.out);
          EXPECT_LT(err, tol) << mismatch_report(got.out, want.out, 4 * tol);
          EXPECT_LT(lse_error(got.lse, want.lse), 1e-4);
        }
      }
    }
  }
}

TEST(GpuSparseWgmma, ChoiceFollowsEnvironment) {
  SKIP_WITHOUT_SM90("the wgmma forward");
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", nullptr);
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmmaWsPingpong);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", "wgmma");
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmma64);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", "mma");
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kMma);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", "wgmma128");
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmma128);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", "wgmma_overlap");
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmmaOverlap);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", "wgmma_ws");
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmmaWs);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", "wgmma_ws_pingpong");
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmmaWsPingpong);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", "");  // empty: the default
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmmaWsPingpong);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_FORWARD", "wgmma_pingpong");  // not a name: an error
    EXPECT_THROW(choice_for_d128_b128(), Error);
  }
  cuda::BlockSparseShape d64;
  d64.head_dim = 64;
  d64.block_size = 128;
  EXPECT_EQ(cuda::block_sparse_forward_choice(d64), cuda::SparseForwardKernel::kMma);
}

// Every pattern, causal and not, bf16 (q/k/v strided views of one packed tensor) and fp16
// (contiguous), GQA 4/2: every wgmma variant against the float64 reference, and against the
// mma.sync kernel on the same inputs.
TEST(GpuSparseWgmma, MatchesDenseReferenceAndMmaKernel) {
  SKIP_WITHOUT_SM90("the wgmma forward");
  torch::manual_seed(41);
  constexpr int64_t B = 2, S = 1024, H = 4, Hkv = 2, D = 128, b = 128;
  const double scale = 1.0 / std::sqrt(double(D));
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (const auto& c : testing::sparse_pattern_cases(S, b)) {
      for (bool causal : {false, true}) {
        SCOPED_TRACE(c.name + (causal ? " causal" : "") + (dtype == at::kHalf ? " fp16" : " bf16"));
        const auto [q, k, v] = testing::random_qkv(B, S, H, Hkv, D, dtype);
        DilatedAttentionConfig attention = testing::sparse_test_attention(S, causal);
        SparseDeviceLayout layout =
            upload_layout(build_block_layout(c.sparse, attention, S), at::Device(at::kCUDA));
        testing::DenseResult want =
            reference(testing::sparse_token_mask(c.sparse, attention, S), q, k, v, scale);
        const double tol = testing::tolerance_for(dtype);
        AttentionResult mma = forward("mma", q, k, v, layout, scale);
        for (const char* env : kWgmmaVariants) {
          SCOPED_TRACE(env);
          AttentionResult got = forward(env, q, k, v, layout, scale);
          const double err = testing::relative_error(got.out, want.out);
          EXPECT_LT(err, tol) << mismatch_report(got.out, want.out, 4 * tol);
          EXPECT_LT(lse_error(got.lse, want.lse), 1e-4);
          EXPECT_LT(testing::relative_error(got.out, mma.out), tol);
          EXPECT_LT(lse_error(got.lse, mma.lse), 1e-4);
        }
      }
    }
  }
}

// The ring form's launches: nq = 3 query blocks against nk = 4 buffered key blocks in any order,
// an empty query block (out 0, lse -inf), and causal diagonals in other key blocks (diagonal_col)
// or none (-1); against the float64 reference and the mma.sync kernel.
TEST(GpuSparseWgmma, RingStyleLayouts) {
  SKIP_WITHOUT_SM90("the wgmma forward");
  torch::manual_seed(43);
  constexpr int64_t B = 2, H = 2, Hkv = 1, D = 128, b = 128, nq = 3, nk = 4;
  const std::vector<std::vector<int64_t>> rows = {{2, 0, 3}, {}, {1, 3}};
  const std::vector<int64_t> diagonal = {2, -1, 1};
  const double scale = 0.07;
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(std::string(causal ? "causal" : "") + (dtype == at::kHalf ? " fp16" : " bf16"));
      const testing::RingStyleLayout ring =
          testing::ring_style_layout(rows, diagonal, nk, b, causal);
      const SparseDeviceLayout& layout = ring.layout;

      at::Tensor q = random_on_gpu({B, nq * b, H, D}, dtype),
                 k = random_on_gpu({B, nk * b, Hkv, D}, dtype),
                 v = random_on_gpu({B, nk * b, Hkv, D}, dtype);
      testing::DenseResult want = reference(ring.mask, q, k, v, scale);
      const double tol = testing::tolerance_for(dtype);
      AttentionResult mma = forward("mma", q, k, v, layout, scale);
      for (const char* env : kWgmmaVariants) {
        SCOPED_TRACE(env);
        AttentionResult got = forward(env, q, k, v, layout, scale);
        EXPECT_LT(testing::relative_error(got.out, want.out), tol)
            << mismatch_report(got.out, want.out, 4 * tol);
        EXPECT_LT(lse_error(got.lse, want.lse), 1e-4);
        EXPECT_LT(testing::relative_error(got.out, mma.out), tol);
        EXPECT_LT(lse_error(got.lse, mma.lse), 1e-4);
        // The empty query block: exactly 0 and -inf.
        EXPECT_TRUE(got.out.narrow(1, b, b).eq(0).all().item<bool>());
        EXPECT_TRUE(at::isneginf(got.lse.narrow(1, b, b)).all().item<bool>());
      }
    }
  }
}

}  // namespace
}  // namespace ra
