// accumulate_ / sum_into_ / sum_pieces_into_: gradients of a lower precision than their sum (a
// fused kernel's fp16/bf16 output) summed in fp32 and rounded once, the sequence-parallel
// backward's glue.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace ra {

// dst and src: the same shape, any strides. On CUDA, 4-D fp32 dst with a dense last dim take
// one vectorized pass that reads src in its own dtype (cuda/row_accumulate.h); ATen's mixed-dtype
// add_ (a scalar loop) everywhere else.
void accumulate_(const at::Tensor& dst, const at::Tensor& src);

// dst = (accumulate ? dst : 0) + the sum of srcs (at least one, each of dst's shape, one dtype),
// summed in the compute dtype (block_compute_dtype) and rounded once to dst's dtype; one pass
// on CUDA (up to 8 sources into a dst of their dtype). accumulate needs a compute-dtype dst.
void sum_into_(const at::Tensor& dst, const std::vector<at::Tensor>& srcs, bool accumulate = false);

// One block's gradient rows of a larger [A0, A1, n, D] gradient: its rows [start, start + count)
// with count = rows.size(2).
struct RowPiece {
  int64_t start = 0;
  at::Tensor rows;  // [A0, A1, count, D]
};

// dst [A0, A1, n, D] = (accumulate ? dst : 0) + per row the sum of the pieces that cover it
// (pieces may overlap; rows none covers are zero-filled, or kept when accumulating), rounded
// once to dst's dtype (sum_into_ per run of rows with the same covering pieces, summed in
// the pieces' order).
void sum_pieces_into_(const at::Tensor& dst, const std::vector<RowPiece>& pieces,
                      bool accumulate = false);

}  // namespace ra
