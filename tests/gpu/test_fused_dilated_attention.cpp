// The fused GPU path of DilatedAttention (cuDNN and flash, strided-view and gathered layouts,
// whole and chunked backward) against the float64 dense masked reference (S = 1K, 2K) and
// against the exact fp32 reference backend on the GPU (S = 8K, 64K): out, lse, dq, dk, dv on
// fresh random inputs, with the allocator's free memory filled with NaN before every call, so
// an unwritten element fails.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <sstream>

#include "attention/standard/dilated_attention.h"
#include "attention/standard/fused_dilated_attention.h"
#include "runtime/error.h"
#include "tests/support/dense_reference.h"

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
