// Gradient checkpointing for one block: run `fn` without keeping its activations, keep only
// the block input, and recompute the block in backward (LibTorch C++ has no checkpoint helper,
// so this is a custom autograd function). Bounds activation memory by one block's worth per
// step plus one input per block. `fn` must be deterministic (no dropout RNG): the recompute
// must give the forward's values. bf16 autocast state is restored for the recompute.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace ra {

using BlockFunction = std::function<at::Tensor(const at::Tensor&)>;

// y = fn(input), differentiable w.r.t. input and `params` (the tensors fn reads besides its
// input, e.g. module->parameters(); a parameter fn reads but that is not listed gets no
// gradient). Collective communication inside fn is fine: every rank recomputes in the same
// order.
at::Tensor checkpoint_block(const BlockFunction& fn, const at::Tensor& input,
                            const std::vector<at::Tensor>& params);

}  // namespace ra
