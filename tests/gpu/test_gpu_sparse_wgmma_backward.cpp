// The Hopper (wgmma) backward of the block-sparse kernels, block_sparse_backward_sm90.cu, through
// the raw per-call launch (wgmma dQ and dK/dV with and without overlap, wgmma dK/dV beside the
// mma.sync dQ, and dK/dV with the fused dQ): dq/dk/dv against the float64 dense masked reference
// and against the mma.sync kernels (RA_SPARSE_BACKWARD=mma) on the same out/lse, every pattern,
// causal and not, fp16/bf16, D 128, block 128, GQA, strided inputs and gradients, ring-style
// layouts (kv_len != q_len, an empty query block, an unattended key block, diagonal_col). dq/dk/dv
// are NaN-poisoned before every call. The DenseBlock smoke test prints the first wrong (row, col)
// and a map of wrong 16x8 fragments to debug layouts. Skips without a compute capability 9.0 GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <string>
#include <utility>
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

using testing::kNaN;
using testing::mismatch_report;
using testing::random_on_gpu;

cuda::SparseBackwardKernel choice_for(int64_t head_dim, int64_t block_size) {
  cuda::BlockSparseShape shape;
  shape.head_dim = static_cast<int>(head_dim);
  shape.block_size = static_cast<int>(block_size);
  return cuda::block_sparse_backward_choice(shape);
}

struct Grads {
  at::Tensor dq, dk, dv;
};

// A NaN-filled tensor with t's sizes and strides (t may be a view into a packed tensor: the
// gradients must have the strides of q/k/v).
at::Tensor poisoned_like(const at::Tensor& t) {
  return at::empty_strided(t.sizes(), t.strides(), t.options()).fill_(kNaN);
}

// The default forward's out and lse for q/k/v (what the backward gets in training).
AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const SparseDeviceLayout& layout, double scale) {
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  block_sparse_forward_cuda(q, k, v, layout, scale, out, lse);
  return {out, lse};
}

// One backward launch (kernels chosen by `env`, RA_SPARSE_BACKWARD) into NaN-filled
// gradients with the strides of q/k/v; dout has out's strides.
Grads backward(const char* env, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               const AttentionResult& fwd, const at::Tensor& dout, const SparseDeviceLayout& layout,
               double scale) {
  testing::ScopedEnv kernel("RA_SPARSE_BACKWARD", env);
  Grads g{poisoned_like(q), poisoned_like(k), poisoned_like(v)};
  block_sparse_backward_cuda(q, k, v, fwd.out, dout, fwd.lse, layout, scale, g.dq, g.dk, g.dv);
  torch::cuda::synchronize();
  return g;
}

// Gradients of the float64 reference for a [q_len, kv_len] token mask (true = attended), on the
// GPU.
Grads reference_grads(const at::Tensor& mask, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& dout, double scale) {
  auto leaf = [](const at::Tensor& t) { return t.detach().to(at::kDouble).requires_grad_(); };
  at::Tensor qd = leaf(q), kd = leaf(k), vd = leaf(v);
  testing::DenseResult want = testing::dense_attention_with_counts(
      mask.to(q.device(), at::kDouble).unsqueeze(0), qd, kd, vd, scale);
  auto g = torch::autograd::grad({want.out}, {qd, kd, vd}, {dout.to(at::kDouble)});
  return {g[0], g[1], g[2]};
}

// Each gradient of `got` against `want` at tol, with the mismatch report on failure.
void expect_close(const Grads& got, const Grads& want, double tol, const char* against) {
  SCOPED_TRACE(against);
  const std::pair<const char*, std::pair<at::Tensor, at::Tensor>> all[] = {
      {"dq", {got.dq, want.dq}}, {"dk", {got.dk, want.dk}}, {"dv", {got.dv, want.dv}}};
  for (const auto& [name, pair] : all) {
    EXPECT_LT(testing::relative_error(pair.first, pair.second), tol)
        << name << ": " << mismatch_report(pair.first, pair.second, 4 * tol);
  }
}

// The wgmma backwards every test checks (RA_SPARSE_BACKWARD): "wgmma" (the default: dQ and dK/dV
// on wgmma, elementwise work beside the wgmmas), "wgmma_sync" (the same without the overlap),
// "wgmma_dkdv" (dQ on mma.sync) and "wgmma_fused" (dQ inside the dK/dV kernel, fp32 atomics into
// a workspace). The baseline is "mma" (both on mma.sync).
const char* const kWgmmaEnvs[] = {"wgmma", "wgmma_sync", "wgmma_dkdv", "wgmma_fused"};

// Every wgmma backward (kWgmmaEnvs), on the default forward's out and lse, against the float64
// reference for `mask` and against the mma.sync backward on the same inputs; `also` runs extra
// checks on each result.
void expect_wgmma_backwards_match(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& dout, const SparseDeviceLayout& layout,
                                  const at::Tensor& mask, double scale,
                                  const std::function<void(const Grads&)>& also = {}) {
  AttentionResult fwd = forward(q, k, v, layout, scale);
  Grads want = reference_grads(mask, q, k, v, dout, scale);
  const double tol = testing::tolerance_for(q.scalar_type());
  Grads mma = backward("mma", q, k, v, fwd, dout, layout, scale);
  for (const char* env : kWgmmaEnvs) {
    SCOPED_TRACE(env);
    Grads got = backward(env, q, k, v, fwd, dout, layout, scale);
    expect_close(got, want, tol, "reference");
    expect_close(got, mma, tol, "mma.sync backward");
    if (also) also(got);
  }
}

// One (query block, key block) or 2 x 2 dense layouts, one head: the smallest cases, to debug
// the descriptor and fragment layouts when everything else fails.
TEST(GpuSparseWgmmaBackward, DenseBlockSmoke) {
  SKIP_WITHOUT_SM90("the wgmma backward");
  {
    testing::ScopedEnv env("RA_SPARSE_BACKWARD", nullptr);
    ASSERT_EQ(choice_for(128, 128), cuda::SparseBackwardKernel::kWgmmaFusedDq);
  }
  torch::manual_seed(7);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (int64_t blocks : {1, 2}) {
      for (bool causal : {false, true}) {
        const int64_t S = 128 * blocks;
        SCOPED_TRACE(std::string(dtype == at::kHalf ? "fp16" : "bf16") + " S=" + std::to_string(S) +
                     (causal ? " causal" : ""));
        std::vector<std::vector<int64_t>> rows(blocks);
        for (int64_t i = 0; i < blocks; ++i) {
          for (int64_t j = 0; j < blocks; ++j) rows[i].push_back(j);
        }
        SparseDeviceLayout layout =
            upload_layout(BlockLayout::from_rows(rows, 128, causal), at::Device(at::kCUDA));
        at::Tensor q = random_on_gpu({1, S, 1, 128}, dtype),
                   k = random_on_gpu({1, S, 1, 128}, dtype),
                   v = random_on_gpu({1, S, 1, 128}, dtype),
                   dout = random_on_gpu({1, S, 1, 128}, dtype);
        const double scale = 1.0 / std::sqrt(128.0);
        AttentionResult fwd = forward(q, k, v, layout, scale);
        at::Tensor mask = at::ones({S, S}, at::kBool);
        if (causal) mask = mask.tril();
        Grads want = reference_grads(mask, q, k, v, dout, scale);
        const double tol = testing::tolerance_for(dtype);
        for (const char* env : kWgmmaEnvs) {
          SCOPED_TRACE(env);
          expect_close(backward(env, q, k, v, fwd, dout, layout, scale), want, tol, "reference");
        }
      }
    }
  }
}

TEST(GpuSparseWgmmaBackward, ChoiceFollowsEnvironment) {
  SKIP_WITHOUT_SM90("the wgmma backward");
  {
    testing::ScopedEnv env("RA_SPARSE_BACKWARD", nullptr);
    EXPECT_EQ(choice_for(128, 128), cuda::SparseBackwardKernel::kWgmmaFusedDq);
    EXPECT_EQ(choice_for(64, 128), cuda::SparseBackwardKernel::kMma);
    EXPECT_EQ(choice_for(128, 64), cuda::SparseBackwardKernel::kMma);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_BACKWARD", "wgmma");
    EXPECT_EQ(choice_for(128, 128), cuda::SparseBackwardKernel::kWgmma);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_BACKWARD", "wgmma_sync");
    EXPECT_EQ(choice_for(128, 128), cuda::SparseBackwardKernel::kWgmmaSync);
    EXPECT_EQ(choice_for(64, 128), cuda::SparseBackwardKernel::kMma);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_BACKWARD", "wgmma_dkdv");
    EXPECT_EQ(choice_for(128, 128), cuda::SparseBackwardKernel::kWgmmaDkdv);
    EXPECT_EQ(choice_for(64, 128), cuda::SparseBackwardKernel::kMma);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_BACKWARD", "wgmma_fused");
    EXPECT_EQ(choice_for(128, 128), cuda::SparseBackwardKernel::kWgmmaFusedDq);
    EXPECT_EQ(choice_for(64, 128), cuda::SparseBackwardKernel::kMma);
    EXPECT_EQ(choice_for(128, 64), cuda::SparseBackwardKernel::kMma);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_BACKWARD", "mma");
    EXPECT_EQ(choice_for(128, 128), cuda::SparseBackwardKernel::kMma);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_BACKWARD", "");  // empty: the default
    EXPECT_EQ(choice_for(128, 128), cuda::SparseBackwardKernel::kWgmmaFusedDq);
  }
  {
    testing::ScopedEnv env("RA_SPARSE_BACKWARD", "deterministic");  // not a name: an error
    EXPECT_THROW(choice_for(64, 128), Error);
  }
}

// Every pattern, causal and not, bf16 (q/k/v and their gradients strided views of one packed
// tensor) and fp16 (contiguous), GQA 4/2: the wgmma backward against the float64 reference and
// against the mma.sync kernels on the same inputs, out and lse.
TEST(GpuSparseWgmmaBackward, MatchesDenseReferenceAndMmaKernel) {
  SKIP_WITHOUT_SM90("the wgmma backward");
  torch::manual_seed(47);
  constexpr int64_t B = 2, S = 1024, H = 4, Hkv = 2, D = 128, b = 128;
  const double scale = 1.0 / std::sqrt(double(D));
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (const auto& c : testing::sparse_pattern_cases(S, b)) {
      for (bool causal : {false, true}) {
        SCOPED_TRACE(c.name + (causal ? " causal" : "") + (dtype == at::kHalf ? " fp16" : " bf16"));
        const auto [q, k, v] = testing::random_qkv(B, S, H, Hkv, D, dtype);
        at::Tensor dout = random_on_gpu({B, S, H, D}, dtype);
        DilatedAttentionConfig attention = testing::sparse_test_attention(S, causal);
        SparseDeviceLayout layout =
            upload_layout(build_block_layout(c.sparse, attention, S), at::Device(at::kCUDA));
        expect_wgmma_backwards_match(q, k, v, dout, layout,
                                     testing::sparse_token_mask(c.sparse, attention, S), scale);
      }
    }
  }
}

// The ring form's launches: nq = 3 query blocks against nk = 5 buffered key blocks in any order,
// an empty query block (dq 0), a key block no query block attends (dk, dv 0), and causal
// diagonals in other key blocks (diagonal_col) or none (-1).
TEST(GpuSparseWgmmaBackward, RingStyleLayouts) {
  SKIP_WITHOUT_SM90("the wgmma backward");
  torch::manual_seed(53);
  constexpr int64_t B = 2, H = 2, Hkv = 1, D = 128, b = 128, nq = 3, nk = 5;
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
                 v = random_on_gpu({B, nk * b, Hkv, D}, dtype),
                 dout = random_on_gpu({B, nq * b, H, D}, dtype);
      expect_wgmma_backwards_match(q, k, v, dout, layout, ring.mask, scale, [&](const Grads& got) {
        // The empty query block and the unattended key block: exactly 0.
        EXPECT_TRUE(got.dq.narrow(1, b, b).eq(0).all().item<bool>());
        EXPECT_TRUE(got.dk.narrow(1, 4 * b, b).eq(0).all().item<bool>());
        EXPECT_TRUE(got.dv.narrow(1, 4 * b, b).eq(0).all().item<bool>());
      });
    }
  }
}

}  // namespace
}  // namespace ra
