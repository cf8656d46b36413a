// accumulate_: dst += src where src may be of a lower precision than dst (a fused kernel's
// fp16/bf16 gradient added into an fp32 accumulator, the sequence-parallel backward's glue).
#pragma once

#include <ATen/core/Tensor.h>

namespace ra {

// dst and src: the same shape, any strides. On CUDA, 4-D fp32 dst with a dense last dim take
// one vectorized pass that reads src in its own dtype (cuda/row_accumulate.h); ATen's mixed-dtype
// add_ (a scalar loop) everywhere else.
void accumulate_(const at::Tensor& dst, const at::Tensor& src);

}  // namespace ra
