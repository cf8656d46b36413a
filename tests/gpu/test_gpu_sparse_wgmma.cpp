// The Hopper (wgmma) forward of the block-sparse kernels, block_sparse_forward_sm90.cu, through
// the raw per-call launch: against the float64 dense masked reference and against the mma.sync
// kernel (RA_SPARSE_FORWARD=mma), every pattern, causal and not, fp16/bf16, D 128, block 128,
// GQA, strided inputs, both key-tile variants, ring-style layouts (kv_len != q_len, empty query
// blocks, diagonal_col). out and lse are NaN-poisoned before every call. The DenseBlock smoke
// test prints the first wrong (row, col) and a map of wrong 16x8 fragments to debug layouts.
// Skips without a compute capability 9.0 GPU.
#include <ATen/cuda/CUDAContext.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "attention/sparse/cuda/block_sparse_cuda.h"
#include "attention/sparse/cuda/block_sparse_kernels.h"
#include "attention/sparse/sparse_patterns.h"
#include "tests/support/dense_reference.h"
#include "tests/support/sparse_cases.h"
#include "tests/support/sparse_token_mask.h"

namespace ra {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

#define SKIP_WITHOUT_SM90()                                                                \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";                      \
  if (at::cuda::getCurrentDeviceProperties()->major != 9 ||                                \
      at::cuda::getCurrentDeviceProperties()->minor != 0) {                                \
    GTEST_SKIP() << "the wgmma forward needs compute capability 9.0 (H100/H200), this is " \
                 << at::cuda::getCurrentDeviceProperties()->major << "."                   \
                 << at::cuda::getCurrentDeviceProperties()->minor;                         \
  }

// Sets RA_SPARSE_FORWARD (the forward kernel choice) for one scope; unset when value is null.
class ScopedForwardKernel {
 public:
  explicit ScopedForwardKernel(const char* value) {
    if (const char* old = std::getenv("RA_SPARSE_FORWARD")) old_ = old, had_ = true;
    if (value != nullptr) {
      setenv("RA_SPARSE_FORWARD", value, 1);
    } else {
      unsetenv("RA_SPARSE_FORWARD");
    }
  }
  ~ScopedForwardKernel() {
    if (had_) {
      setenv("RA_SPARSE_FORWARD", old_.c_str(), 1);
    } else {
      unsetenv("RA_SPARSE_FORWARD");
    }
  }

 private:
  std::string old_;
  bool had_ = false;
};

cuda::SparseForwardKernel choice_for_d128_b128() {
  cuda::BlockSparseShape shape;
  shape.head_dim = 128;
  shape.block_size = 128;
  return cuda::block_sparse_forward_choice(shape);
}

// One forward launch (kernel chosen by `env`, see ScopedForwardKernel) into NaN-filled out/lse.
AttentionResult forward(const char* env, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const SparseDeviceLayout& layout, double scale) {
  ScopedForwardKernel kernel(env);
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

// "row r col c: got x want y" for the first element off by more than tol * max|want| (rows are
// tokens of batch 0, head 0), and a map of the 16-row x 8-column fragments holding such elements
// ('X'), which shows fragment-layout and descriptor mistakes at a glance.
std::string mismatch_report(const at::Tensor& got, const at::Tensor& want, double tol) {
  at::Tensor g = got.select(0, 0).select(1, 0).to(at::kDouble).cpu();  // [S, D]
  at::Tensor w = want.select(0, 0).select(1, 0).to(at::kDouble).cpu();
  const double limit = tol * w.abs().max().item<double>();
  at::Tensor bad = (g - w).abs().gt(limit).logical_or(at::isnan(g));
  std::ostringstream os;
  at::Tensor where = bad.nonzero();
  if (where.size(0) == 0) return "no element off by more than " + std::to_string(limit);
  const int64_t r = where[0][0].item<int64_t>(), c = where[0][1].item<int64_t>();
  os << where.size(0) << " of " << bad.numel() << " elements wrong; first: row " << r << " col "
     << c << ": got " << g[r][c].item<double>() << " want " << w[r][c].item<double>()
     << "\nwrong fragments (rows of 16 tokens x columns of 8 dims):\n";
  at::Tensor frag = bad.reshape({g.size(0) / 16, 16, g.size(1) / 8, 8}).any(3).any(1);
  for (int64_t i = 0; i < frag.size(0); ++i) {
    os << "  rows " << 16 * i << "-" << 16 * i + 15 << "\t";
    for (int64_t j = 0; j < frag.size(1); ++j) os << (frag[i][j].item<bool>() ? 'X' : '.');
    os << "\n";
  }
  return os.str();
}

at::Tensor random(at::IntArrayRef shape, at::ScalarType dtype) {
  return torch::randn(shape, torch::TensorOptions().dtype(dtype).device(torch::kCUDA));
}

// One (query block, key block) or 2 x 2 dense layouts, one head: the smallest cases, to debug
// the descriptor and fragment layouts when everything else fails.
TEST(GpuSparseWgmma, DenseBlockSmoke) {
  SKIP_WITHOUT_SM90();
  {
    ScopedForwardKernel env(nullptr);
    ASSERT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmma64);
  }
  torch::manual_seed(5);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (int64_t blocks : {1, 2}) {
      for (bool causal : {false, true}) {
        for (const char* env : {"wgmma", "wgmma128"}) {
          const int64_t S = 128 * blocks;
          SCOPED_TRACE(std::string(env) + (dtype == at::kHalf ? " fp16" : " bf16") +
                       " S=" + std::to_string(S) + (causal ? " causal" : ""));
          std::vector<std::vector<int64_t>> rows(blocks);
          for (int64_t i = 0; i < blocks; ++i) {
            for (int64_t j = 0; j < blocks; ++j) rows[i].push_back(j);
          }
          SparseDeviceLayout layout =
              upload_layout(BlockLayout::from_rows(rows, 128, causal), at::Device(at::kCUDA));
          at::Tensor q = random({1, S, 1, 128}, dtype), k = random({1, S, 1, 128}, dtype),
                     v = random({1, S, 1, 128}, dtype);
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
  SKIP_WITHOUT_SM90();
  {
    ScopedForwardKernel env(nullptr);
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmma64);
  }
  {
    ScopedForwardKernel env("mma");
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kMma);
  }
  {
    ScopedForwardKernel env("wgmma128");
    EXPECT_EQ(choice_for_d128_b128(), cuda::SparseForwardKernel::kWgmma128);
  }
  cuda::BlockSparseShape d64;
  d64.head_dim = 64;
  d64.block_size = 128;
  EXPECT_EQ(cuda::block_sparse_forward_choice(d64), cuda::SparseForwardKernel::kMma);
}

// Every pattern, causal and not, bf16 (q/k/v strided views of one packed tensor) and fp16
// (contiguous), GQA 4/2: both wgmma variants against the float64 reference, and against the
// mma.sync kernel on the same inputs.
TEST(GpuSparseWgmma, MatchesDenseReferenceAndMmaKernel) {
  SKIP_WITHOUT_SM90();
  torch::manual_seed(41);
  constexpr int64_t B = 2, S = 1024, H = 4, Hkv = 2, D = 128, b = 128;
  const double scale = 1.0 / std::sqrt(double(D));
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (const auto& c : testing::sparse_pattern_cases(S, b)) {
      for (bool causal : {false, true}) {
        SCOPED_TRACE(c.name + (causal ? " causal" : "") + (dtype == at::kHalf ? " fp16" : " bf16"));
        at::Tensor q, k, v;
        if (dtype == at::kBFloat16) {
          at::Tensor qkv = random({B, S, H + 2 * Hkv, D}, dtype);
          q = qkv.narrow(2, 0, H), k = qkv.narrow(2, H, Hkv), v = qkv.narrow(2, H + Hkv, Hkv);
        } else {
          q = random({B, S, H, D}, dtype), k = random({B, S, Hkv, D}, dtype);
          v = random({B, S, Hkv, D}, dtype);
        }
        DilatedAttentionConfig attention = testing::sparse_test_attention(S, causal);
        SparseDeviceLayout layout =
            upload_layout(build_block_layout(c.sparse, attention, S), at::Device(at::kCUDA));
        testing::DenseResult want =
            reference(testing::sparse_token_mask(c.sparse, attention, S), q, k, v, scale);
        const double tol = testing::tolerance_for(dtype);
        AttentionResult mma = forward("mma", q, k, v, layout, scale);
        for (const char* env : {"wgmma", "wgmma128"}) {
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
// or none (-1).
TEST(GpuSparseWgmma, RingStyleLayouts) {
  SKIP_WITHOUT_SM90();
  torch::manual_seed(43);
  constexpr int64_t B = 2, H = 2, Hkv = 1, D = 128, b = 128, nq = 3, nk = 4;
  const std::vector<std::vector<int64_t>> rows = {{2, 0, 3}, {}, {1, 3}};
  const std::vector<int64_t> diagonal = {2, -1, 1};
  const double scale = 0.07;
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(std::string(causal ? "causal" : "") + (dtype == at::kHalf ? " fp16" : " bf16"));
      // CSR, CSC and the [nq*b, nk*b] token mask of this layout.
      std::vector<int> row_offsets = {0}, col_indices, col_offsets(nk + 1, 0), row_indices;
      at::Tensor mask = at::zeros({nq * b, nk * b}, at::kBool);
      at::Tensor tri = at::ones({b, b}, at::kBool).tril();
      for (int64_t i = 0; i < nq; ++i) {
        for (int64_t j : rows[i]) {
          col_indices.push_back(static_cast<int>(j));
          ++col_offsets[j + 1];
          const bool on_diagonal = causal && diagonal[i] == j;
          mask.narrow(0, i * b, b)
              .narrow(1, j * b, b)
              .copy_(on_diagonal ? tri : at::ones_like(tri));
        }
        row_offsets.push_back(static_cast<int>(col_indices.size()));
      }
      for (int64_t j = 0; j < nk; ++j) {
        col_offsets[j + 1] += col_offsets[j];
        for (int64_t i = 0; i < nq; ++i) {
          for (int64_t jj : rows[i]) {
            if (jj == j) row_indices.push_back(static_cast<int>(i));
          }
        }
      }
      auto dev = [](const std::vector<int>& x) {
        return at::tensor(x, at::kInt).to(at::Device(at::kCUDA));
      };
      SparseDeviceLayout layout;
      layout.row_offsets = dev(row_offsets);
      layout.col_indices = dev(col_indices);
      layout.col_offsets = dev(col_offsets);
      layout.row_indices = dev(row_indices);
      layout.diagonal_col = dev(std::vector<int>(diagonal.begin(), diagonal.end()));
      layout.causal = causal;
      layout.block_size = b;

      at::Tensor q = random({B, nq * b, H, D}, dtype), k = random({B, nk * b, Hkv, D}, dtype),
                 v = random({B, nk * b, Hkv, D}, dtype);
      testing::DenseResult want = reference(mask, q, k, v, scale);
      const double tol = testing::tolerance_for(dtype);
      for (const char* env : {"wgmma", "wgmma128"}) {
        SCOPED_TRACE(env);
        AttentionResult got = forward(env, q, k, v, layout, scale);
        EXPECT_LT(testing::relative_error(got.out, want.out), tol)
            << mismatch_report(got.out, want.out, 4 * tol);
        EXPECT_LT(lse_error(got.lse, want.lse), 1e-4);
        // The empty query block: exactly 0 and -inf.
        EXPECT_TRUE(got.out.narrow(1, b, b).eq(0).all().item<bool>());
        EXPECT_TRUE(at::isneginf(got.lse.narrow(1, b, b)).all().item<bool>());
      }
    }
  }
}

}  // namespace
}  // namespace ra
