// The fused GPU path of DilatedAttention (cuDNN and flash, strided-view and gathered layouts,
// whole and chunked backward) against the float64 dense masked reference (S = 1K, 2K) and
// against the exact fp32 reference backend on the GPU (S = 8K, 64K): out, lse, dq, dk, dv on
// fresh random inputs, with the allocator's free memory filled with NaN before every call, so
// an unwritten element fails. Also the head-cover cases of the backward (gradients written, not
// added: gaps no group keeps, a group keeping nothing, empty branches) and its row kernels.
#include <ATen/cuda/CUDAContext.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "attention/standard/cuda/gather_kept_rows.h"
#include "attention/standard/cuda/partition_forward.h"
#include "attention/standard/cuda/write_kept_rows.h"
#include "attention/standard/dilated_attention.h"
#include "attention/standard/fused_dilated_attention.h"
#include "attention/standard/plan_kept_rows.h"
#include "runtime/error.h"
#include "tests/support/dense_reference.h"
#include "tests/support/scoped_env.h"

namespace ra {
namespace {

#define SKIP_WITHOUT_GPU()                                                        \
  if (!torch::cuda::is_available()) {                                             \
    GTEST_SKIP() << "no CUDA GPU on this machine: the fused-path tests need one"; \
  }

// Fills the caching allocator with NaN blocks and frees them, so the next allocations
// (outputs, gradients) start as NaN wherever a kernel fails to write.
void poison_free_gpu_memory(int64_t large_bytes) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  std::vector<torch::Tensor> blocks;
  blocks.push_back(torch::full({large_bytes / 4}, nan, f32));
  for (int i = 0; i < 16; ++i) blocks.push_back(torch::full({(64 << 10) << (i % 4)}, nan, f32));
  torch::cuda::synchronize();
}

struct Geometry {
  std::vector<int64_t> w, r;
  int64_t B, S, H, D;
};

std::string describe_case(const Geometry& g, torch::Dtype dtype, bool causal, HeadMode mode,
                          AttentionBackend backend, FusedInputLayout layout) {
  std::ostringstream os;
  os << "B" << g.B << " S" << g.S << " H" << g.H << " D" << g.D << " w=[";
  for (auto x : g.w) os << x << ",";
  os << "] r=[";
  for (auto x : g.r) os << x << ",";
  os << "] " << (dtype == torch::kBFloat16 ? "bf16" : "fp16") << (causal ? " causal" : " full")
     << " " << to_string(mode) << " " << to_string(backend)
     << (layout == FusedInputLayout::kGathered ? " gathered" : " strided");
  return os.str();
}

struct Reference {
  torch::Tensor out, lse, dq, dk, dv;
};

// Runs the fused path and compares with `want` (computed from the same rounded inputs).
void run_and_compare(const DilatedAttentionConfig& config, const Geometry& g, torch::Dtype dtype,
                     bool dense_float64) {
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  torch::Tensor q = torch::randn({g.B, g.S, g.H, g.D}, opts).requires_grad_();
  torch::Tensor k = torch::randn({g.B, g.S, g.H, g.D}, opts).requires_grad_();
  torch::Tensor v = torch::randn({g.B, g.S, g.H, g.D}, opts).requires_grad_();
  torch::Tensor grad_out = torch::randn({g.B, g.S, g.H, g.D}, opts);
  const int64_t bytes = g.B * g.S * g.H * g.D * 4;

  DilatedAttention attention(config);
  poison_free_gpu_memory(8 * bytes);
  AttentionResult got = attention.forward(q, k, v);
  poison_free_gpu_memory(8 * bytes);
  auto got_grads = torch::autograd::grad({got.out}, {q, k, v}, {grad_out});
  ASSERT_EQ(got.out.scalar_type(), dtype);
  ASSERT_EQ(got.lse.scalar_type(), torch::kFloat);

  Reference want;
  {
    const auto ref_dtype = dense_float64 ? torch::kDouble : torch::kFloat;
    torch::Tensor q2 = q.detach().to(ref_dtype).requires_grad_();
    torch::Tensor k2 = k.detach().to(ref_dtype).requires_grad_();
    torch::Tensor v2 = v.detach().to(ref_dtype).requires_grad_();
    if (dense_float64) {
      testing::DenseResult d = testing::dense_dilated_attention(config, q2, k2, v2);
      want.out = d.out;
      want.lse = d.lse;
    } else {
      DilatedAttentionConfig ref_config = config;
      ref_config.backend = AttentionBackend::kReference;
      AttentionResult r = DilatedAttention(ref_config).forward(q2, k2, v2);
      want.out = r.out;
      want.lse = r.lse;
    }
    auto grads = torch::autograd::grad({want.out}, {q2, k2, v2}, {grad_out.to(ref_dtype)});
    want.dq = grads[0];
    want.dk = grads[1];
    want.dv = grads[2];
  }

  const double tol = testing::tolerance_for(dtype);
  EXPECT_TRUE(torch::isfinite(got.out).all().item<bool>()) << "out has NaN/Inf";
  EXPECT_LT(testing::relative_error(got.out, want.out), tol) << "out";
  // lse: -inf exactly where no key is attended, close elsewhere, never NaN.
  torch::Tensor finite = torch::isfinite(want.lse);
  EXPECT_FALSE(torch::isnan(got.lse).any().item<bool>()) << "lse has NaN";
  EXPECT_TRUE(torch::equal(torch::isfinite(got.lse), finite)) << "lse -inf pattern";
  EXPECT_LT(testing::relative_error(got.lse.masked_select(finite), want.lse.masked_select(finite)),
            tol)
      << "lse";
  const torch::Tensor* wants[] = {&want.dq, &want.dk, &want.dv};
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(torch::isfinite(got_grads[i]).all().item<bool>()) << names[i] << " has NaN/Inf";
    EXPECT_LT(testing::relative_error(got_grads[i], *wants[i]), tol) << names[i];
  }
}

DilatedAttentionConfig make_config(const Geometry& g, bool causal, HeadMode mode,
                                   AttentionBackend backend) {
  DilatedAttentionConfig c;
  c.segment_lengths = g.w;
  c.dilation_rates = g.r;
  c.causal = causal;
  c.head_mode = mode;
  c.backend = backend;
  return c;
}

// Small sizes: the float64 dense reference. H is never a multiple of the branch count.
const std::vector<Geometry> kSmall = {
    {{256, 512, 1024}, {1, 2, 4}, 2, 1024, 5, 64},
    {{256, 512, 1024}, {1, 2, 4}, 1, 1024, 5, 128},
    // LongNet's branches scaled down 16x; rates 6 and 12 do not divide their segments.
    {{128, 256, 512, 1024, 2048}, {1, 2, 4, 6, 12}, 1, 2048, 12, 64},
};

using SmallParam = std::tuple<int, torch::Dtype, bool, HeadMode, AttentionBackend>;
class FusedVsDenseFloat64 : public ::testing::TestWithParam<SmallParam> {
 protected:
  void TearDown() override {
    set_fused_input_layout(FusedInputLayout::kAuto);
    set_fused_backward_chunk_bytes(0);
  }
};

TEST_P(FusedVsDenseFloat64, OutLseAndGradients) {
  SKIP_WITHOUT_GPU();
  const auto [index, dtype, causal, mode, backend] = GetParam();
  const Geometry& g = kSmall[index];
  // Both layouts for every (causal, mode) pair, across the grid.
  const FusedInputLayout layout = (causal != (mode == HeadMode::kPartition))
                                      ? FusedInputLayout::kGathered
                                      : FusedInputLayout::kStridedView;
  set_fused_input_layout(layout);
  // fp16 cases run the backward in chunks of a few segment rows (the path large S takes).
  if (dtype == torch::kHalf) set_fused_backward_chunk_bytes(64 << 10);
  SCOPED_TRACE(describe_case(g, dtype, causal, mode, backend, layout) +
               (dtype == torch::kHalf ? " chunked-backward" : ""));
  run_and_compare(make_config(g, causal, mode, backend), g, dtype, /*dense_float64=*/true);
}

INSTANTIATE_TEST_SUITE_P(
    Grid, FusedVsDenseFloat64,
    ::testing::Combine(::testing::Values(0, 1, 2),
                       ::testing::Values(torch::kBFloat16, torch::kHalf), ::testing::Bool(),
                       ::testing::Values(HeadMode::kAll, HeadMode::kPartition),
                       ::testing::Values(AttentionBackend::kCudnn, AttentionBackend::kFlash)));

// Long sequences: the exact fp32 reference backend on the GPU (segments stay small enough).
const std::vector<Geometry> kLong = {
    {{512, 2048, 8192}, {1, 2, 8}, 1, 8192, 6, 128},
    {{1024, 4096, 16384}, {1, 4, 16}, 1, 65536, 4, 64},
};

using LongParam = std::tuple<int, torch::Dtype, bool, HeadMode>;
class FusedVsReferenceLong : public ::testing::TestWithParam<LongParam> {};

TEST_P(FusedVsReferenceLong, OutLseAndGradients) {
  SKIP_WITHOUT_GPU();
  const auto [index, dtype, causal, mode] = GetParam();
  const Geometry& g = kLong[index];
  SCOPED_TRACE(
      describe_case(g, dtype, causal, mode, AttentionBackend::kAuto, FusedInputLayout::kAuto));
  run_and_compare(make_config(g, causal, mode, AttentionBackend::kAuto), g, dtype,
                  /*dense_float64=*/false);
}

INSTANTIATE_TEST_SUITE_P(
    Grid, FusedVsReferenceLong,
    ::testing::Combine(::testing::Values(0, 1), ::testing::Values(torch::kBFloat16, torch::kHalf),
                       ::testing::Bool(), ::testing::Values(HeadMode::kAll, HeadMode::kPartition)));

// The backward's head cover: the groups that hold every head once write dq/dk/dv (zeros in the
// rows they do not keep) and the rest add. Each case makes a different part of that count.
const std::vector<Geometry> kCover = {
    // Partition: branch 2 keeps nothing (offset 2 >= w' = 2), so its head gets only zeros;
    // 5 heads over 3 branches (2, 2, 1). All mode: branch 2's offset-1 group keeps one row per
    // segment, which runs on flash whatever the backend (cuDNN takes no one-row blocks).
    {{256, 512, 2}, {1, 2, 4}, 1, 1024, 5, 64},
    // All: no rate-1 branch; the cover is branch 1 (rate 2) and branch 0 adds after it.
    // Partition: 3 + 2 heads, offsets 0 and 1, rows between them kept by no branch.
    {{256, 512}, {4, 2}, 2, 1024, 5, 64},
    // Fewer heads than branches: partition leaves branch 2 without heads.
    {{256, 512, 1024}, {1, 2, 4}, 1, 1024, 2, 64},
    // One branch, rate 3 (not dividing 512): all mode writes its 3 groups and adds nothing;
    // partition is one group with scale 1.
    {{512}, {3}, 1, 1024, 4, 64},
    // Rates that divide no segment, 7 heads over 3 branches (3, 2, 2), head dim 128.
    {{256, 512, 1024}, {3, 5, 7}, 1, 1024, 7, 128},
};

using CoverParam = std::tuple<int, bool, HeadMode, AttentionBackend>;
class FusedHeadCoverVsDenseFloat64 : public ::testing::TestWithParam<CoverParam> {
 protected:
  void TearDown() override {
    set_fused_input_layout(FusedInputLayout::kAuto);
    set_fused_backward_chunk_bytes(0);
  }
};

TEST_P(FusedHeadCoverVsDenseFloat64, OutLseAndGradients) {
  SKIP_WITHOUT_GPU();
  const auto [index, causal, mode, backend] = GetParam();
  const Geometry& g = kCover[index];
  const FusedInputLayout layout =
      causal ? FusedInputLayout::kGathered : FusedInputLayout::kStridedView;
  set_fused_input_layout(layout);
  // Chunks of a few segment rows for the flash cases: chunk edges inside the cover's writes.
  if (backend == AttentionBackend::kFlash) set_fused_backward_chunk_bytes(32 << 10);
  SCOPED_TRACE(describe_case(g, torch::kBFloat16, causal, mode, backend, layout) +
               (backend == AttentionBackend::kFlash ? " chunked-backward" : ""));
  run_and_compare(make_config(g, causal, mode, backend), g, torch::kBFloat16,
                  /*dense_float64=*/true);
}

INSTANTIATE_TEST_SUITE_P(Grid, FusedHeadCoverVsDenseFloat64,
                         ::testing::Combine(::testing::Values(0, 1, 2, 3, 4), ::testing::Bool(),
                                            ::testing::Values(HeadMode::kAll, HeadMode::kPartition),
                                            ::testing::Values(AttentionBackend::kCudnn,
                                                              AttentionBackend::kFlash)));

// The row kernels the backward uses, against ATen ops on the same rows: the scaled gather
// (bitwise equal to `view * scale`) and the cover write (kept rows copied, the group's other
// rows zeroed, everything else untouched).
class FusedRowKernels : public ::testing::Test {
 protected:
  // [B, S, H, D] = [2, 96, 6, 64]; branch w' = 32, r = 3, offset 1, heads 1, 3, 5 (step 2);
  // segments 2 .. 4 of the 6.
  cuda::KeptRows rows() const {
    cuda::KeptRows r;
    r.batch = 2, r.seq_len = 96, r.num_heads = 6;
    r.segment = 32, r.rate = 3, r.offset = 1;
    r.head_start = 1, r.head_step = 2, r.head_count = 3;
    r.kept = (32 - 1 + 2) / 3;
    r.n_begin = 2, r.n_count = 3;
    return r;
  }
  // The rows of t [B, S, H, D] as a strided [n, h, L, D] view.
  static torch::Tensor view_of(const torch::Tensor& t, const cuda::KeptRows& r) {
    return t.view({r.total_n(), r.segment, t.size(2), t.size(3)})
        .narrow(0, r.n_begin, r.size_n())
        .slice(1, r.offset, r.offset + int64_t(r.kept - 1) * r.rate + 1, r.rate)
        .slice(2, r.head_start, r.head_start + int64_t(r.head_count - 1) * r.head_step + 1,
               r.head_step)
        .transpose(1, 2);
  }
  static cuda::TokenTensor token_tensor(const torch::Tensor& t) {
    return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
  }
  static cuda::RowTensor row_tensor(const torch::Tensor& t) {
    return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
  }
  static bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
    return torch::equal(torch::nan_to_num(a.to(torch::kFloat), 1e30),
                        torch::nan_to_num(b.to(torch::kFloat), 1e30));
  }
};

TEST_F(FusedRowKernels, ScaledGatherEqualsViewTimesScale) {
  SKIP_WITHOUT_GPU();
  const cuda::KeptRows r = rows();
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
    // Misaligned by one element: the one-element-per-thread path.
    for (bool misaligned : {false, true}) {
      const int64_t numel = 2 * 96 * 6 * 64;
      torch::Tensor src =
          torch::randn({numel + 1}, opts).narrow(0, misaligned ? 1 : 0, numel).view({2, 96, 6, 64});
      const torch::Tensor view = view_of(src, r);
      for (float scale : {5.f, 1.f / 3}) {
        // Into a contiguous [n, h, L, D] and into q's dense layout (empty_like of the view).
        for (bool dense_like_view : {false, true}) {
          torch::Tensor dst =
              dense_like_view ? torch::empty_like(view) : torch::empty(view.sizes(), opts);
          dst.fill_(std::numeric_limits<float>::quiet_NaN());
          cuda::launch_gather_kept_rows(
              r, token_tensor(src), row_tensor(dst), 64,
              dtype == torch::kHalf ? cuda::ScalarKind::kHalf : cuda::ScalarKind::kBFloat16, stream,
              scale);
          EXPECT_TRUE(same_bits(dst, view * double(scale)))
              << "scale " << scale << (dense_like_view ? " view layout" : " contiguous")
              << (misaligned ? " misaligned" : "");
        }
      }
    }
  }
}

TEST_F(FusedRowKernels, CoverWriteCopiesKeptRowsAndZerosTheRest) {
  SKIP_WITHOUT_GPU();
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // The fixture's group, and one whose segment (30) is not a multiple of the kernel's 4-token
  // runs, offset 0, rate 4, so runs cross segment (and batch) boundaries.
  cuda::KeptRows odd = rows();
  odd.seq_len = 90, odd.segment = 30, odd.rate = 4, odd.offset = 0;
  odd.kept = (30 + 3) / 4, odd.n_begin = 1, odd.n_count = 4;
  for (const cuda::KeptRows& r : {rows(), odd}) {
    SCOPED_TRACE("segment " + std::to_string(r.segment));
    const int64_t S = r.seq_len;
    // A part as the fused backward returns it: [n, h, L, D] in the view's dense layout.
    torch::Tensor part = torch::empty_like(view_of(torch::empty({2, S, 6, 64}, opts), r));
    part.copy_(torch::randn(part.sizes(), opts));
    // The group's heads in its segments: zeros (-inf for the lse) where no row is kept.
    auto group_rows = [&](const torch::Tensor& t) {  // t: [B, S, H, X]
      return t.view({r.total_n(), r.segment, t.size(2), t.size(3)})
          .narrow(0, r.n_begin, r.size_n())
          .slice(2, r.head_start, r.head_start + int64_t(r.head_count - 1) * r.head_step + 1,
                 r.head_step);
    };
    torch::Tensor got = torch::full({2, S, 6, 64}, nan, opts);
    cuda::launch_write_kept_rows(r, row_tensor(part), token_tensor(got), 64,
                                 cuda::ScalarKind::kBFloat16, stream);
    torch::Tensor want = torch::full({2, S, 6, 64}, nan, opts);
    group_rows(want).zero_();
    view_of(want, r).copy_(part);
    EXPECT_TRUE(same_bits(got, want));

    // Scaled (the partition mode's dV and output): the rows times the scale, rounded once, and
    // the lse rows with -inf where nothing is kept (the partition mode's merge).
    const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
    const torch::Tensor lse_src = torch::randn({r.size_n(), r.head_count, r.kept}, f32);
    torch::Tensor lse_got = torch::full({2, S, 6}, nan, f32);
    cuda::KeptLse lse;
    lse.src = lse_src.data_ptr<float>();
    lse.src_sn = lse_src.stride(0), lse.src_sh = lse_src.stride(1), lse.src_sl = lse_src.stride(2);
    lse.dst = lse_got.data_ptr<float>();
    lse.dst_sb = lse_got.stride(0), lse.dst_ss = lse_got.stride(1), lse.dst_sh = lse_got.stride(2);
    got.fill_(nan);
    cuda::launch_write_kept_rows(r, row_tensor(part), token_tensor(got), 64,
                                 cuda::ScalarKind::kBFloat16, stream, 0.2f, lse);
    view_of(want, r).copy_(part * 0.2);
    EXPECT_TRUE(same_bits(got, want));
    torch::Tensor lse_want = torch::full({2, S, 6, 1}, nan, f32);
    group_rows(lse_want).fill_(-inf);
    view_of(lse_want, r).copy_(lse_src.unsqueeze(-1));
    EXPECT_TRUE(same_bits(lse_got, lse_want.squeeze(-1)));

    // Three tensors in one launch (a group's dq, dk, dv; the last one scaled, as dV is).
    std::vector<torch::Tensor> parts, outs;
    std::array<cuda::KeptRowsWrite, 3> writes;
    for (int c = 0; c < 3; ++c) {
      parts.push_back(torch::empty_like(part).copy_(torch::randn(part.sizes(), opts)));
      outs.push_back(torch::full({2, S, 6, 64}, nan, opts));
      writes[c] = {row_tensor(parts[c]), token_tensor(outs[c]), c == 2 ? 0.2f : 1.f};
    }
    cuda::launch_write_kept_rows(r, writes.data(), 3, 64, cuda::ScalarKind::kBFloat16, stream);
    for (int c = 0; c < 3; ++c) {
      torch::Tensor expected = torch::full({2, S, 6, 64}, nan, opts);
      group_rows(expected).zero_();
      view_of(expected, r).copy_(c == 2 ? parts[c] * 0.2 : parts[c]);
      EXPECT_TRUE(same_bits(outs[c], expected)) << "tensor " << c << " of 3";
    }

    // A group that keeps nothing writes only zeros, and needs no source.
    cuda::KeptRows none = r;
    none.offset = r.segment, none.kept = 0;
    torch::Tensor zeros = torch::full({2, S, 6, 64}, nan, opts);
    cuda::launch_write_kept_rows(none, {}, token_tensor(zeros), 64, cuda::ScalarKind::kBFloat16,
                                 stream);
    want.fill_(nan);
    group_rows(want).zero_();
    EXPECT_TRUE(same_bits(zeros, want));
  }
}

// The partition forward in one pass: for groups that hold each head at most once (a partition
// plan's groups; one all-mode branch's groups, whose heads step by the rate; a plan missing a
// group), every kept row at its token and head, times the scale (rounded once), zeros and lse
// -inf everywhere else. The expectation scatters each group's rows to their tokens (the kernel
// gathers per token instead).
TEST_F(FusedRowKernels, PartitionForwardWritesEveryGroupsRowsInOnePass) {
  SKIP_WITHOUT_GPU();
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t B = 2, S = 64, H = 7;
  auto config = [](HeadMode mode) {
    DilatedAttentionConfig c;
    c.segment_lengths = {8, 16, 32};
    c.dilation_rates = {1, 2, 4};
    c.head_mode = mode;
    return c;
  };
  const DilationPlan partition = DilationPlan::build(config(HeadMode::kPartition), S, H);
  const DilationPlan all = DilationPlan::build(config(HeadMode::kAll), S, H);
  std::vector<GroupRows> one_branch;  // all mode, branch 2 (r 4): heads {0, 4}, {1, 5}, ...
  for (const GroupRows& g : plan_groups(all, B, S, H, /*partition=*/false)) {
    if (g.branch == 2) one_branch.push_back(g);
  }
  std::vector<GroupRows> missing = plan_groups(partition, B, S, H, /*partition=*/true);
  missing.erase(missing.begin() + 1);  // heads 3, 4 in no group
  const std::vector<std::pair<std::string, std::vector<GroupRows>>> cases = {
      {"partition", plan_groups(partition, B, S, H, /*partition=*/true)},
      {"one all-mode branch", one_branch},
      {"a group missing", missing}};
  for (const auto& [name, groups] : cases) {
    for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
      for (const int64_t D : {64, 128}) {
        for (const float scale : {1.f, 1.f / 3}) {
          SCOPED_TRACE(name + (dtype == torch::kHalf ? " fp16" : " bf16") + " D " +
                       std::to_string(D) + " scale " + std::to_string(scale));
          const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
          std::vector<torch::Tensor> keep;  // the sources, alive until the launch is done
          std::vector<cuda::PartitionGroup> pass;
          torch::Tensor want = torch::zeros({B, S, H, D}, torch::kFloat);
          torch::Tensor want_lse = torch::full({B, S, H}, -inf, torch::kFloat);
          for (const GroupRows& g : groups) {
            const cuda::KeptRows& r = g.rows;
            // [N, h, L, D] and [N, h, L] inside wider tensors: strides that are not dense.
            torch::Tensor rows =
                torch::randn({r.total_n(), r.head_count, r.kept + 1, D}, opts).narrow(2, 1, r.kept);
            torch::Tensor lse =
                torch::randn({r.total_n(), r.head_count, r.kept + 3}, f32).narrow(2, 2, r.kept);
            keep.push_back(rows);
            keep.push_back(lse);
            pass.push_back({r, rows.data_ptr(), rows.stride(0), rows.stride(1), rows.stride(2),
                            lse.data_ptr<float>(), lse.stride(0), lse.stride(1), lse.stride(2)});
            // The scaled rows as the kernel rounds them: in the input dtype, from fp32.
            const torch::Tensor host =
                (rows.to(torch::kFloat) * scale).to(dtype).cpu().to(torch::kFloat);
            const torch::Tensor host_lse = lse.cpu();
            const int64_t segments = S / r.segment;
            for (int64_t n = 0; n < r.total_n(); ++n) {
              for (int64_t j = 0; j < r.head_count; ++j) {
                for (int64_t l = 0; l < r.kept; ++l) {
                  const int64_t b = n / segments, head = r.head_start + j * r.head_step;
                  const int64_t s = (n % segments) * r.segment + r.offset + l * r.rate;
                  want[b][s][head] = host[n][j][l];
                  want_lse[b][s][head] = host_lse[n][j][l];
                }
              }
            }
          }
          const cuda::ScalarKind kind =
              dtype == torch::kHalf ? cuda::ScalarKind::kHalf : cuda::ScalarKind::kBFloat16;
          torch::Tensor out = torch::full({B, S, H, D}, nan, opts);
          torch::Tensor lse = torch::full({B, S, H}, nan, f32);
          cuda::launch_write_partition_forward(pass.data(), int(pass.size()), B, S, H, D, kind,
                                               scale, out.data_ptr(), lse.data_ptr<float>(),
                                               stream);
          EXPECT_TRUE(same_bits(out.cpu(), want));
          EXPECT_TRUE(same_bits(lse.cpu(), want_lse));
        }
      }
    }
  }
  // Refused, each for its own reason (the message says which): two groups holding one head, and
  // a missing output (there is no lse-only form).
  std::vector<GroupRows> groups = plan_groups(partition, B, S, H, /*partition=*/true);
  const auto bf16 = torch::TensorOptions(torch::kCUDA).dtype(torch::kBFloat16);
  const torch::Tensor lse_src = torch::zeros({S, H, S}, f32);
  const torch::Tensor out_src = torch::zeros({S, H, S, 64}, bf16);
  std::vector<cuda::PartitionGroup> twice(2);
  for (auto& g : twice) {
    g.rows = groups[0].rows;
    g.lse = lse_src.data_ptr<float>(), g.lse_sn = lse_src.stride(0);
    g.lse_sh = lse_src.stride(1), g.lse_sl = lse_src.stride(2);
    g.out = out_src.data_ptr(), g.out_sn = out_src.stride(0), g.out_sh = out_src.stride(1);
    g.out_sl = out_src.stride(2);
  }
  torch::Tensor out = torch::empty({B, S, H, 64}, bf16);
  torch::Tensor lse = torch::empty({B, S, H}, f32);
  auto expect_refused = [&](int count, void* out_ptr, const std::string& reason) {
    try {
      cuda::launch_write_partition_forward(twice.data(), count, B, S, H, 64,
                                           cuda::ScalarKind::kBFloat16, 1.f, out_ptr,
                                           lse.data_ptr<float>(), stream);
      ADD_FAILURE() << "not refused: " << reason;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
  };
  expect_refused(2, out.data_ptr(), "in an earlier group");
  expect_refused(1, nullptr, "no output or no lse");
}

// The merge's other kernels and the flat kernel's other piece widths (RA_MERGE_KERNEL and
// RA_MERGE_VEC select them for A/B runs; the loop kernel also serves more than 8 branches, the
// batched one more than 2^31 items, 16-byte pieces odd multiples of 8 head-dim elements) against
// the float64 reference too: every other case runs the flat kernel with its default width.
TEST(FusedPathBehaviour, MergeKernelsAndPieceWidthsMatchDense) {
  SKIP_WITHOUT_GPU();
  const std::pair<const char*, const char*> choices[] = {
      {"loop", "1"}, {"batched", "1"}, {"flat", "1"}, {"flat", "2"}};
  for (const auto& [kernel, vec] : choices) {
    testing::ScopedEnv kernel_env("RA_MERGE_KERNEL", kernel), vec_env("RA_MERGE_VEC", vec);
    const Geometry& g = kSmall[2];
    for (bool causal : {false, true}) {
      SCOPED_TRACE(describe_case(g, torch::kBFloat16, causal, HeadMode::kAll,
                                 AttentionBackend::kCudnn, FusedInputLayout::kStridedView) +
                   " merge " + kernel + " vec " + vec);
      run_and_compare(make_config(g, causal, HeadMode::kAll, AttentionBackend::kCudnn), g,
                      torch::kBFloat16, /*dense_float64=*/true);
    }
  }
}

// A kernel switch with a value it does not take is an error naming it, not the default kernel.
TEST(FusedPathBehaviour, UnknownKernelSwitchValuesThrow) {
  SKIP_WITHOUT_GPU();
  const Geometry& g = kSmall[2];
  const auto config = make_config(g, /*causal=*/false, HeadMode::kAll, AttentionBackend::kCudnn);
  const auto opts = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  const torch::Tensor q = torch::randn({g.B, g.S, g.H, g.D}, opts);
  for (const auto& [name, value] : {std::pair<const char*, const char*>{"RA_MERGE_KERNEL", "flatt"},
                                    {"RA_MERGE_VEC", "3"},
                                    {"RA_STACK_GROUPS", "yes"}}) {
    testing::ScopedEnv env(name, value);
    try {
      fused_dilated_attention(config, q, q, q);
      ADD_FAILURE() << name << "=" << value << " ran";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(name) + " = '" + value + "'"),
                std::string::npos)
          << e.what();
    }
  }
}

// All mode's one-head groups of a branch run as one stacked call by default (LongNet's rate-12
// branch: 2 calls); RA_STACK_GROUPS=0 runs them one by one. Both against float64, cuDNN and
// flash, strided views and gathered rows (the forced view throws if a kernel refuses it).
TEST(FusedPathBehaviour, StackedAndSingleGroupCallsMatchDense) {
  SKIP_WITHOUT_GPU();
  const Geometry& g = kSmall[2];
  for (const char* stack : {"1", "0"}) {
    testing::ScopedEnv env("RA_STACK_GROUPS", stack);
    for (auto backend : {AttentionBackend::kCudnn, AttentionBackend::kFlash}) {
      for (auto layout : {FusedInputLayout::kStridedView, FusedInputLayout::kGathered}) {
        set_fused_input_layout(layout);
        for (bool causal : {false, true}) {
          SCOPED_TRACE(describe_case(g, torch::kBFloat16, causal, HeadMode::kAll, backend, layout) +
                       " RA_STACK_GROUPS=" + stack);
          run_and_compare(make_config(g, causal, HeadMode::kAll, backend), g, torch::kBFloat16,
                          /*dense_float64=*/true);
        }
      }
    }
  }
  set_fused_input_layout(FusedInputLayout::kAuto);
}

// 17 groups, beyond the partition forward's one-pass kernel (16): the forward falls back to a
// launch per group writing its heads' output and lse rows (every other partition case runs the
// one-pass kernel), against the float64 reference.
TEST(FusedPathBehaviour, PartitionBeyondOnePassLimitsMatchesDense) {
  SKIP_WITHOUT_GPU();
  Geometry many{{}, {}, 1, 1024, 17, 64};
  for (int i = 0; i < 17; ++i) {
    many.w.push_back(int64_t(64) << (i % 4));
    many.r.push_back(1 + i % 3);
  }
  ASSERT_GT(plan_groups(DilationPlan::build(
                            make_config(many, true, HeadMode::kPartition, AttentionBackend::kCudnn),
                            many.S, many.H),
                        many.B, many.S, many.H, /*partition=*/true)
                .size(),
            size_t(cuda::kMaxPartitionGroups));
  for (bool causal : {false, true}) {
    SCOPED_TRACE(describe_case(many, torch::kBFloat16, causal, HeadMode::kPartition,
                               AttentionBackend::kCudnn, FusedInputLayout::kStridedView) +
                 " 17 groups");
    run_and_compare(make_config(many, causal, HeadMode::kPartition, AttentionBackend::kCudnn), many,
                    torch::kBFloat16, /*dense_float64=*/true);
  }
}

// GQA through the fused path, fp32 fallback, and the errors users can hit.
TEST(FusedPathBehaviour, GroupedQueryAttentionMatchesDense) {
  SKIP_WITHOUT_GPU();
  Geometry g{{128, 512}, {1, 4}, 1, 512, 6, 64};
  DilatedAttentionConfig config = make_config(g, true, HeadMode::kAll, AttentionBackend::kAuto);
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::Tensor q = torch::randn({1, 512, 6, 64}, opts).requires_grad_();
  torch::Tensor k = torch::randn({1, 512, 2, 64}, opts).requires_grad_();
  torch::Tensor v = torch::randn({1, 512, 2, 64}, opts).requires_grad_();
  AttentionResult got = DilatedAttention(config).forward(q, k, v);
  torch::Tensor q2 = q.detach().to(torch::kDouble).requires_grad_();
  torch::Tensor k2 = k.detach().to(torch::kDouble).requires_grad_();
  torch::Tensor v2 = v.detach().to(torch::kDouble).requires_grad_();
  testing::DenseResult want = testing::dense_dilated_attention(config, q2, k2, v2);
  torch::Tensor grad_out = torch::randn_like(q);
  auto gg = torch::autograd::grad({got.out}, {q, k, v}, {grad_out});
  auto wg = torch::autograd::grad({want.out}, {q2, k2, v2}, {grad_out.to(torch::kDouble)});
  EXPECT_LT(testing::relative_error(got.out, want.out), 1e-2);
  for (int i = 0; i < 3; ++i) EXPECT_LT(testing::relative_error(gg[i], wg[i]), 1e-2) << i;
}

TEST(FusedPathBehaviour, Float32OnGpuFallsBackToExactReference) {
  SKIP_WITHOUT_GPU();
  Geometry g{{64, 128}, {1, 2}, 1, 128, 3, 32};
  DilatedAttentionConfig config = make_config(g, false, HeadMode::kAll, AttentionBackend::kAuto);
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  torch::Tensor q = torch::randn({1, 128, 3, 32}, opts), k = torch::randn_like(q),
                v = torch::randn_like(q);
  AttentionResult got = DilatedAttention(config).forward(q, k, v);
  testing::DenseResult want = testing::dense_dilated_attention(config, q, k, v);
  EXPECT_LT(testing::relative_error(got.out, want.out), 1e-5);
}

TEST(FusedPathBehaviour, FusedBackendOnCpuInputsIsAClearError) {
  Geometry g{{64}, {1}, 1, 64, 2, 32};
  DilatedAttentionConfig config = make_config(g, false, HeadMode::kAll, AttentionBackend::kFlash);
  torch::Tensor q = torch::randn({1, 64, 2, 32}, torch::kBFloat16);
  EXPECT_THROW(DilatedAttention(config).forward(q, q, q), ra::Error);
}

}  // namespace
}  // namespace ra
