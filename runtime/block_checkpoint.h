// Gradient checkpointing for one block: run `fn` without keeping its activations, keep only
// the block input, and recompute the block in backward (LibTorch C++ has no checkpoint helper,
// so this is a custom autograd function). Bounds activation memory by one block's worth per
// step plus one input per block. `fn` must be deterministic (no dropout RNG): the recompute
// must give the forward's values. bf16 autocast state is restored for the recompute.
// The saved input can be kept in a lower precision and/or in host memory (CheckpointStorage).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "runtime/checkpoint_offload.h"

namespace ra {

using BlockFunction = std::function<at::Tensor(const at::Tensor&)>;

// How a checkpoint keeps the input it saves for the recompute.
struct CheckpointStorage {
  // Keep the input in this dtype (e.g. bf16 for an fp32 residual stream: half the bytes) and
  // up-cast it back for the recompute; nullopt or the input's own dtype = keep it as is.
  // fn then runs on the rounded input in forward too (see checkpoint_block).
  std::optional<at::ScalarType> dtype;
  // Non-null: keep the input in host memory until backward takes it (see CheckpointOffloader).
  std::shared_ptr<CheckpointOffloader> offloader;
};

// y = fn(input), differentiable w.r.t. input and `params` (the tensors fn reads besides its
// input, e.g. module->parameters(); a parameter fn reads but that is not listed gets no
// gradient). Collective communication inside fn is fine: every rank recomputes in the same
// order. With a storage dtype, y = fn(round(input)) where round = cast to that dtype and back,
// and the gradient w.r.t. input passes through the rounding unchanged (straight-through).
at::Tensor checkpoint_block(const BlockFunction& fn, const at::Tensor& input,
                            const std::vector<at::Tensor>& params,
                            const CheckpointStorage& storage = {});

// For a piece of a block that runs inside that block's recompute (checkpoint_block's backward),
// where only the graph matters: returns zeros of `output_sizes` without running fn, and its
// backward runs fn(input) with a graph and backpropagates through it. So the piece runs forward
// twice per step (the block's forward, then here) instead of three times (forward, recompute,
// and the recompute of a nested checkpoint_block), holding one piece's activations at a time.
// The value is wrong by design: only use it where nothing reads it but autograd.
at::Tensor recompute_in_backward(const BlockFunction& fn, const at::Tensor& input,
                                 const std::vector<at::Tensor>& params,
                                 at::IntArrayRef output_sizes);

// round(input) with the straight-through gradient: the forward of a block that checkpoint_block
// with `dtype` storage computes, without checkpointing (a reference for tests).
at::Tensor round_through(const at::Tensor& input, at::ScalarType dtype);

}  // namespace ra
