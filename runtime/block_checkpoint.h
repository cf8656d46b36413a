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

// True while the calling thread runs the recompute of a checkpoint_block (its fn, in backward).
bool inside_recompute();

// For the residual tail h + fn(h) of a block, where only the graph matters (inside that block's
// recompute, inside_recompute()), or where fn(h) is added as a value without a graph (a block
// whose FFN keeps no activations): returns h without running fn, and its backward runs
// fn token chunk by chunk (`chunk` tokens along dim 1) with a graph and backpropagates through
// each, so the gradients are those of h + fn(h). fn then runs forward twice per step (the
// block's forward, then here) instead of three times (forward, recompute, and the recompute of
// a nested checkpoint_block), holding one chunk's activations at a time, and no [h]-sized
// placeholder or concatenation is built. The value lacks fn(h) by design: only use it where
// nothing reads it but autograd. fn must map each chunk independently ([B, n, ...] -> same).
at::Tensor add_recomputed_in_backward(const BlockFunction& fn, const at::Tensor& h,
                                      const std::vector<at::Tensor>& params, int64_t chunk);

// round(input) with the straight-through gradient: the forward of a block that checkpoint_block
// with `dtype` storage computes, without checkpointing (a reference for tests).
at::Tensor round_through(const at::Tensor& input, at::ScalarType dtype);

}  // namespace ra
