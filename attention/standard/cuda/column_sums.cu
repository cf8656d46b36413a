// One thread per 8 columns (16 bytes of a row), one block per slice of rows: each block walks
// rows blockIdx.x, + gridDim.x, ..., kRowsInFlight of them per step with all their loads issued
// before the adds, and writes its 8 fp32 sums per thread once.
#include "attention/standard/cuda/column_sums.h"

#include "attention/standard/cuda/row_kernel_launch.cuh"
#include "attention/standard/cuda/vector_io.cuh"
#include "runtime/cuda_check.h"

namespace ra::cuda {
namespace {

constexpr int kRowsInFlight = 4;

template <typename T>
__global__ void column_sums_kernel(const T* __restrict__ x, int64_t rows, int cols,
                                   float* __restrict__ partial) {
  const int column = threadIdx.x * 8;
  if (column >= cols) return;
  float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t step = gridDim.x;
  for (int64_t row = blockIdx.x; row < rows; row += kRowsInFlight * step) {
    uint4 raw[kRowsInFlight];
#pragma unroll
    for (int i = 0; i < kRowsInFlight; ++i) {
      const int64_t r = row + i * step;
      raw[i] = r < rows ? *reinterpret_cast<const uint4*>(x + r * cols + column)
                        : make_uint4(0, 0, 0, 0);  // zero bits: +0 in fp16 and bf16
    }
#pragma unroll
    for (int i = 0; i < kRowsInFlight; ++i) {
      float v[8];
      unpack8<T>(raw[i], v);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum[e] += v[e];
    }
  }
  float* out = partial + int64_t(blockIdx.x) * cols + column;
#pragma unroll
  for (int e = 0; e < 8; ++e) out[e] = sum[e];
}

}  // namespace

int column_sums_blocks(int64_t rows, int cols, int device) {
  RA_CHECK(cols > 0 && cols % 8 == 0 && cols <= kColumnSumsMaxCols, "column_sums: cols = ", cols,
           ": need a multiple of 8 up to ", kColumnSumsMaxCols);
  // One full wave, at most one block per kRowsInFlight rows, so no block idles.
  return resident_blocks(column_sums_kernel<__nv_bfloat16>, threads_for(cols),
                         (rows + kRowsInFlight - 1) / kRowsInFlight, device);
}

void launch_column_sums(const void* x, int64_t rows, int cols, ScalarKind kind, float* partial,
                        int blocks, cudaStream_t stream) {
  RA_CHECK(cols > 0 && cols % 8 == 0 && cols <= kColumnSumsMaxCols, "column_sums: cols = ", cols,
           ": need a multiple of 8 up to ", kColumnSumsMaxCols);
  RA_CHECK(aligned16(x), "column_sums: x must be 16-byte aligned");
  RA_CHECK(blocks > 0, "column_sums: blocks = ", blocks);
  const int threads = threads_for(cols);
  if (kind == ScalarKind::kHalf) {
    column_sums_kernel<__half>
        <<<blocks, threads, 0, stream>>>(static_cast<const __half*>(x), rows, cols, partial);
  } else if (kind == ScalarKind::kBFloat16) {
    column_sums_kernel<__nv_bfloat16>
        <<<blocks, threads, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), rows, cols, partial);
  } else {
    RA_THROW("column_sums: x must be fp16 or bf16");
  }
  RA_CUDA_CHECK_LAUNCH();
}

}  // namespace ra::cuda
