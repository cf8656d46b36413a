// accumulate_ / sum_into_: gradients of a lower precision than their fp32 accumulator (a fused
// kernel's fp16/bf16 output) added into it, the sequence-parallel backward's glue.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace ra {

// dst and src: the same shape, any strides. On CUDA, 4-D fp32 dst with a dense last dim take
// one vectorized pass that reads src in its own dtype (cuda/row_accumulate.h); ATen's mixed-dtype
// add_ (a scalar loop) everywhere else.
void accumulate_(const at::Tensor& dst, const at::Tensor& src);

// dst = the sum of srcs (at least one, each of dst's shape, one dtype), each element rounded
// once to dst's dtype on CUDA (one pass for up to 8 sources), added one by one elsewhere.
void sum_into_(const at::Tensor& dst, const std::vector<at::Tensor>& srcs);

}  // namespace ra
