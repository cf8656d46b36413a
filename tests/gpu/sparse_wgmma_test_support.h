// What the wgmma forward and backward GPU tests share: the compute-capability skip, a scoped
// kernel-choice environment variable, random CUDA inputs (q/k/v strided for bf16), the
// ring-style launch layouts, and the mismatch report that maps wrong elements onto 16 x 8
// fragments.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "attention/sparse/cuda/block_sparse_cuda.h"
#include "tests/support/scoped_env.h"

namespace ra::testing {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Skips the test unless the GPU is compute capability 9.0 (the sm_90a kernels); `what` names them.
#define SKIP_WITHOUT_SM90(what)                                                   \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";             \
  if (at::cuda::getCurrentDeviceProperties()->major != 9 ||                       \
      at::cuda::getCurrentDeviceProperties()->minor != 0) {                       \
    GTEST_SKIP() << what << " needs compute capability 9.0 (H100/H200), this is " \
                 << at::cuda::getCurrentDeviceProperties()->major << "."          \
                 << at::cuda::getCurrentDeviceProperties()->minor;                \
  }

inline at::Tensor random_on_gpu(at::IntArrayRef shape, at::ScalarType dtype) {
  return torch::randn(shape, torch::TensorOptions().dtype(dtype).device(torch::kCUDA));
}

struct RandomQkv {
  at::Tensor q, k, v;
};

// q [B, S, H, D], k and v [B, S, Hkv, D] on the GPU: for bf16 strided views of one packed
// [B, S, H + 2 Hkv, D] tensor (as a fused QKV projection gives), for other dtypes contiguous.
inline RandomQkv random_qkv(int64_t B, int64_t S, int64_t H, int64_t Hkv, int64_t D,
                            at::ScalarType dtype) {
  if (dtype == at::kBFloat16) {
    at::Tensor qkv = random_on_gpu({B, S, H + 2 * Hkv, D}, dtype);
    return {qkv.narrow(2, 0, H), qkv.narrow(2, H, Hkv), qkv.narrow(2, H + Hkv, Hkv)};
  }
  return {random_on_gpu({B, S, H, D}, dtype), random_on_gpu({B, S, Hkv, D}, dtype),
          random_on_gpu({B, S, Hkv, D}, dtype)};
}

// "row r col c: got x want y" for the first element off by more than tol * max|want| (rows are
// tokens of batch 0, head 0), and a map of the 16-row x 8-column fragments holding such elements
// ('X'), which shows fragment-layout and descriptor mistakes at a glance.
inline std::string mismatch_report(const at::Tensor& got, const at::Tensor& want, double tol) {
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

// A ring-form launch layout: nq = rows.size() query blocks against nk buffered key blocks of
// `block` tokens; rows[i] lists the key blocks query block i attends (any order, maybe none) and
// diagonal[i] the one masked token by token when causal (-1: none). mask is the [nq * block,
// nk * block] token mask (true = attended) the float64 reference takes.
struct RingStyleLayout {
  SparseDeviceLayout layout;
  at::Tensor mask;
};

inline RingStyleLayout ring_style_layout(const std::vector<std::vector<int64_t>>& rows,
                                         const std::vector<int64_t>& diagonal, int64_t nk,
                                         int64_t block, bool causal) {
  const int64_t nq = static_cast<int64_t>(rows.size());
  std::vector<int> row_offsets = {0}, col_indices, col_offsets(nk + 1, 0), row_indices;
  at::Tensor mask = at::zeros({nq * block, nk * block}, at::kBool);
  at::Tensor tri = at::ones({block, block}, at::kBool).tril();
  for (int64_t i = 0; i < nq; ++i) {
    for (int64_t j : rows[i]) {
      col_indices.push_back(static_cast<int>(j));
      ++col_offsets[j + 1];
      const bool on_diagonal = causal && diagonal[i] == j;
      mask.narrow(0, i * block, block)
          .narrow(1, j * block, block)
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
  RingStyleLayout result;
  result.layout.row_offsets = dev(row_offsets);
  result.layout.col_indices = dev(col_indices);
  result.layout.col_offsets = dev(col_offsets);
  result.layout.row_indices = dev(row_indices);
  result.layout.diagonal_col = dev(std::vector<int>(diagonal.begin(), diagonal.end()));
  result.layout.causal = causal;
  result.layout.block_size = block;
  result.mask = mask;
  return result;
}

}  // namespace ra::testing
