// The sequence-parallel path's per-block glue kernels (attention/standard/cuda/row_accumulate.h)
// against float64: the online LSE merge of a block's output into fp32 accumulators, the merge of
// several blocks written once (fp32 or the blocks' dtype), and the sum of block gradients into a
// fp32 gradient (or, written once, into one of the blocks' dtype), for fp16, bf16 and fp32
// blocks, strided views (the ring's packed and permuted slices), head dims that leave lanes idle,
// more planes than one grid row holds, and rows where one or both sides attended nothing. Each
// case checks that the kernel ran (the try_ call took it), so a silent fallback to the torch ops
// cannot pass. Skips without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <string>

#include "attention/standard/accumulate.h"
#include "attention/standard/lse_merge.h"
#include "attention/standard/row_accumulate_cuda.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct RowCase {
  int64_t a0, a1, a2, d;
};

std::string describe(const RowCase& c, at::ScalarType dtype) {
  return std::string(c10::toString(dtype)) + " [" + std::to_string(c.a0) + ", " +
         std::to_string(c.a1) + ", " + std::to_string(c.a2) + ", " + std::to_string(c.d) + "]";
}

const RowCase kCases[] = {
    {1, 16, 1037, 128}, {2, 3, 515, 64}, {1, 5, 77, 72}, {700, 101, 3, 8}, {1, 2, 33, 256}};

// [a0, a1, a2, d] as a strided view: rows of a [a0, a2, a1 + 1, d] tensor, dims 1 and 2 swapped
// (the ring's [B, h, n, D] views of [B, n, H, D] tensors), one extra head that is not in the view.
at::Tensor strided_rows(const RowCase& c, const at::TensorOptions& options) {
  return torch::randn({c.a0, c.a2, c.a1 + 1, c.d}, options).narrow(2, 1, c.a1).transpose(1, 2);
}

// lse [a0, a1, a2] with about a quarter of the rows -inf.
// `count` fresh strided GPU sources of `dtype`, and their sum on the CPU in `sum_dtype`.
std::pair<std::vector<at::Tensor>, at::Tensor> random_sources(const RowCase& c,
                                                              at::ScalarType dtype, int count,
                                                              at::ScalarType sum_dtype) {
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  std::vector<at::Tensor> srcs;
  at::Tensor sum = torch::zeros({c.a0, c.a1, c.a2, c.d}, sum_dtype);
  for (int i = 0; i < count; ++i) {
    srcs.push_back(strided_rows(c, cuda.dtype(dtype)));
    sum += srcs.back().cpu().to(sum_dtype);
  }
  return {srcs, sum};
}

at::Tensor random_lse(const RowCase& c, const at::TensorOptions& options) {
  at::Tensor lse = torch::randn({c.a0, c.a1, c.a2}, options.dtype(at::kDouble)) * 3.0;
  lse.masked_fill_(torch::rand(lse.sizes(), lse.options()) < 0.25, -kInf);
  return lse.to(options.device()).to(at::kFloat);
}

TEST(GpuRowAccumulate, MergeBlockMatchesFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(29);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (const RowCase& c : kCases) {
      SCOPED_TRACE(describe(c, dtype));
      at::Tensor acc_out = strided_rows(c, cuda.dtype(at::kFloat));
      at::Tensor acc_lse = random_lse(c, cuda);
      const at::Tensor out = strided_rows(c, cuda.dtype(dtype));
      const at::Tensor lse = random_lse(c, cuda);
      // float64 of exactly what the kernel reads.
      const at::Tensor a = acc_out.cpu().to(at::kDouble), al = acc_lse.cpu().to(at::kDouble);
      const at::Tensor o = out.cpu().to(at::kDouble), l = lse.cpu().to(at::kDouble);
      const at::Tensor merged = at::logaddexp(al, l);
      const at::Tensor w = at::exp(l - merged).nan_to_num_(0.0).unsqueeze(-1);
      const at::Tensor want_out = a + w * (o - a);

      ASSERT_TRUE(try_merge_block_cuda(acc_out, acc_lse, out, lse)) << "the kernel did not run";
      const at::Tensor got_out = acc_out.cpu().to(at::kDouble);
      const at::Tensor got_lse = acc_lse.cpu().to(at::kDouble);
      ASSERT_FALSE(torch::isnan(got_out).any().item<bool>());
      EXPECT_LT(testing::relative_error(got_out, want_out), 1e-6);
      const at::Tensor finite = torch::isfinite(merged);
      EXPECT_TRUE(torch::equal(torch::isfinite(got_lse), finite));
      EXPECT_LT((got_lse - merged).masked_fill(~finite, 0.0).abs().max().item<double>(), 1e-5);
      // Rows neither side attended keep their accumulator bit for bit.
      const at::Tensor none = (~finite).unsqueeze(-1).expand_as(a);
      EXPECT_TRUE(torch::equal(got_out.masked_select(none), a.masked_select(none)));
    }
  }
}

// Several blocks merged in turn from (0, -inf) give the float64 merge of all of them, through the
// public merge_by_lse_ (which takes the kernel for these views).
TEST(GpuRowAccumulate, BlocksMergedInTurnMatchFloat64Merge) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(31);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const RowCase c{1, 4, 300, 128};
  at::Tensor acc_out = torch::zeros({c.a0, c.a1, c.a2, c.d}, cuda.dtype(at::kFloat));
  at::Tensor acc_lse = torch::full({c.a0, c.a1, c.a2}, -kInf, cuda.dtype(at::kFloat));
  std::vector<at::Tensor> outs, lses;
  for (int i = 0; i < 4; ++i) {
    const at::Tensor out = strided_rows(c, cuda.dtype(at::kBFloat16));
    const at::Tensor lse = random_lse(c, cuda);
    merge_by_lse_(acc_out, acc_lse, out, lse);
    outs.push_back(out.cpu().to(at::kDouble));
    lses.push_back(lse.cpu().to(at::kDouble));
  }
  const MergedAttention want = merge_by_lse(outs, lses);
  EXPECT_LT(testing::relative_error(acc_out.cpu().to(at::kDouble), want.out), 1e-6);
  const at::Tensor finite = torch::isfinite(want.lse);
  EXPECT_TRUE(torch::equal(torch::isfinite(acc_lse.cpu()), finite));
}

// All blocks merged at once (the write-once forward): 1, 3 and 8 sources with about a quarter of
// each one's rows -inf (rows no source attended: 0 and -inf), against the float64 merge; written
// into fp32, and into the blocks' dtype as exactly that fp32 result rounded once.
TEST(GpuRowAccumulate, MergeRowsMatchesFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(53);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (const RowCase& c : kCases) {
      for (int count : {1, 3, 8}) {
        SCOPED_TRACE(describe(c, dtype) + " sources=" + std::to_string(count));
        std::vector<at::Tensor> outs, lses, outs64, lses64;
        for (int i = 0; i < count; ++i) {
          outs.push_back(strided_rows(c, cuda.dtype(dtype)));
          lses.push_back(random_lse(c, cuda));
          outs64.push_back(outs.back().cpu().to(at::kDouble));
          lses64.push_back(lses.back().cpu().to(at::kDouble));
        }
        const MergedAttention want = merge_by_lse(outs64, lses64);
        at::Tensor out = strided_rows(c, cuda.dtype(at::kFloat)).fill_(std::nanf(""));
        at::Tensor lse = random_lse(c, cuda).fill_(std::nanf(""));
        ASSERT_TRUE(try_merge_rows_cuda(out, lse, outs, lses)) << "the kernel did not run";
        const at::Tensor got = out.cpu().to(at::kDouble), got_lse = lse.cpu().to(at::kDouble);
        ASSERT_FALSE(torch::isnan(got).any().item<bool>());
        EXPECT_LT(testing::relative_error(got, want.out), 1e-6);
        EXPECT_TRUE(torch::equal(torch::isfinite(got_lse), torch::isfinite(want.lse)));
        EXPECT_LT((got_lse - want.lse).nan_to_num(0.0).abs().max().item<double>(), 1e-5);
        if (dtype == at::kFloat) continue;
        at::Tensor low = strided_rows(c, cuda.dtype(dtype));
        ASSERT_TRUE(try_merge_rows_cuda(low, lse, outs, lses)) << "the kernel did not run";
        EXPECT_TRUE(torch::equal(low.cpu(), out.cpu().to(dtype)));
      }
    }
  }
  const RowCase c{1, 2, 64, 64};
  at::Tensor out = strided_rows(c, cuda.dtype(at::kBFloat16)), lse = random_lse(c, cuda);
  const std::vector<at::Tensor> nine(9, out), nine_lse(9, lse);
  EXPECT_FALSE(try_merge_rows_cuda(out, lse, nine, nine_lse));              // more than 8 sources
  EXPECT_FALSE(try_merge_rows_cuda(out, lse, {out.to(at::kHalf)}, {lse}));  // another dtype
}

TEST(GpuRowAccumulate, AccumulateMatchesFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(37);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (const RowCase& c : kCases) {
      SCOPED_TRACE(describe(c, dtype));
      at::Tensor dst = strided_rows(c, cuda.dtype(at::kFloat));
      const at::Tensor src = strided_rows(c, cuda.dtype(dtype));
      // One fp32 rounding of the exact sum: what dst + float(src) gives.
      const at::Tensor want =
          (dst.cpu().to(at::kDouble) + src.cpu().to(at::kDouble)).to(at::kFloat);
      ASSERT_TRUE(try_sum_rows_cuda(dst, {src}, /*accumulate=*/true)) << "the kernel did not run";
      EXPECT_TRUE(torch::equal(dst.cpu(), want));
    }
  }
}

// dst = the sum of 1, 3, 8 and 11 sources (two launches past 8), without reading dst: within one
// fp32 rounding of the float64 sum per element (the kernel sums in fp32 registers).
TEST(GpuRowAccumulate, SumOfSourcesMatchesFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(41);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
    for (int count : {1, 3, 8, 11}) {
      const RowCase c{2, 3, 515, 64};
      SCOPED_TRACE(describe(c, dtype) + " sources=" + std::to_string(count));
      at::Tensor dst = strided_rows(c, cuda.dtype(at::kFloat));
      dst.fill_(std::numeric_limits<float>::quiet_NaN());  // must not be read
      const auto [srcs, want] = random_sources(c, dtype, count, at::kDouble);
      ASSERT_TRUE(try_sum_rows_cuda(dst, srcs, /*accumulate=*/false)) << "the kernel did not run";
      const at::Tensor got = dst.cpu().to(at::kDouble);
      ASSERT_FALSE(torch::isnan(got).any().item<bool>());
      EXPECT_LT(testing::relative_error(got, want), 1e-6);
    }
  }
}

// A destination of the sources' own dtype (the layer's bf16/fp16 gradients written once): the
// fp32 sum, in source order, rounded once - bit for bit the CPU's fp32 sum of the same values
// rounded. Declined (nothing touched) when asked to accumulate into it, for sources of another
// dtype, and past 8 sources, where the public sum_into_ sums into fp32 first and still rounds once.
TEST(GpuRowAccumulate, SumIntoTheSourcesDtypeRoundsOnce) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(47);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (const RowCase& c : kCases) {
      for (int count : {1, 3, 8}) {
        SCOPED_TRACE(describe(c, dtype) + " sources=" + std::to_string(count));
        at::Tensor dst = strided_rows(c, cuda.dtype(dtype));
        const auto [srcs, sum] = random_sources(c, dtype, count, at::kFloat);
        ASSERT_TRUE(try_sum_rows_cuda(dst, srcs, /*accumulate=*/false)) << "the kernel did not run";
        EXPECT_TRUE(torch::equal(dst.cpu(), sum.to(dtype)));
      }
    }
  }
  const RowCase c{1, 3, 100, 64};
  at::Tensor dst = torch::zeros({c.a0, c.a1, c.a2, c.d}, cuda.dtype(at::kBFloat16));
  const at::Tensor one = torch::ones_like(dst);
  EXPECT_FALSE(try_sum_rows_cuda(dst, {one}, /*accumulate=*/true));
  EXPECT_FALSE(try_sum_rows_cuda(dst, {one.to(at::kHalf)}, false));
  EXPECT_FALSE(try_sum_rows_cuda(dst, std::vector<at::Tensor>(9, one), false));
  EXPECT_EQ(dst.abs().sum().item<float>(), 0.f);
  std::vector<at::Tensor> srcs;
  at::Tensor sum = torch::zeros(dst.sizes(), torch::kFloat);
  for (int i = 0; i < 11; ++i) {
    srcs.push_back(torch::randn(dst.sizes(), cuda.dtype(at::kBFloat16)));
    sum += srcs.back().cpu().to(at::kFloat);
  }
  sum_into_(dst, srcs);
  EXPECT_TRUE(torch::equal(dst.cpu(), sum.to(at::kBFloat16)));
}

// Stacked K/V gradients [2, B, h, n, D] (the allgather exchange's sum): taken as [2 B, h, n, D]
// where the first two dims merge without a copy, declined where they do not.
TEST(GpuRowAccumulate, SumTakesStackedKvGradients) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(43);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  at::Tensor dst = torch::full({2, 3, 4, 129, 64}, std::nanf(""), cuda.dtype(at::kFloat));
  std::vector<at::Tensor> srcs;
  at::Tensor want = torch::zeros(dst.sizes(), torch::kDouble);
  for (int i = 0; i < 4; ++i) {
    srcs.push_back(torch::randn(dst.sizes(), cuda.dtype(at::kBFloat16)));
    want += srcs.back().cpu().to(at::kDouble);
  }
  ASSERT_TRUE(try_sum_rows_cuda(dst, srcs, /*accumulate=*/false)) << "the kernel did not run";
  EXPECT_LT(testing::relative_error(dst.cpu().to(at::kDouble), want), 1e-6);
  const at::Tensor swapped =
      torch::zeros({3, 2, 4, 129, 64}, cuda.dtype(at::kFloat)).transpose(0, 1);
  EXPECT_FALSE(try_sum_rows_cuda(swapped, {torch::ones_like(swapped)}, false));
  EXPECT_EQ(swapped.abs().sum().item<float>(), 0.f);
}

// What the kernels do not take is left to the torch ops: they say so and touch nothing.
TEST(GpuRowAccumulate, DeclinesWhatItDoesNotTake) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const at::Tensor acc = torch::zeros({1, 2, 8, 12}, cuda.dtype(at::kFloat));  // D % 8 != 0
  const at::Tensor lse = torch::zeros({1, 2, 8}, cuda.dtype(at::kFloat));
  EXPECT_FALSE(try_merge_block_cuda(acc, lse, torch::ones_like(acc), lse));
  EXPECT_FALSE(try_sum_rows_cuda(acc, {torch::ones_like(acc)}, true));
  EXPECT_EQ(acc.abs().sum().item<float>(), 0.f);
  const at::Tensor acc64 = torch::zeros({1, 2, 8, 16}, cuda.dtype(at::kDouble));  // not fp32
  EXPECT_FALSE(try_sum_rows_cuda(acc64, {torch::ones_like(acc64)}, true));
  const at::Tensor unaligned =
      torch::zeros({1, 2, 8, 17}, cuda.dtype(at::kFloat)).narrow(3, 1, 16);  // 4-byte offset
  EXPECT_FALSE(try_sum_rows_cuda(unaligned, {torch::ones_like(unaligned)}, true));
  const at::Tensor on_cpu = torch::zeros({1, 2, 8, 16});
  EXPECT_FALSE(try_sum_rows_cuda(on_cpu, {torch::ones_like(on_cpu)}, true));
  const at::Tensor dst = torch::zeros({1, 2, 8, 16}, cuda.dtype(at::kFloat));
  EXPECT_FALSE(try_sum_rows_cuda(dst, {}, false));  // no sources
  EXPECT_FALSE(try_sum_rows_cuda(                   // sources of two dtypes
      dst, {torch::ones_like(dst), torch::ones_like(dst).to(at::kBFloat16)}, false));
}

}  // namespace
}  // namespace ra
