// FlatParameters: the trainer's weights, fp32 master weights and gradients packed into one
// contiguous buffer per weight-decay group, so that the tail of a training step (up-cast,
// all-reduce, clip, AdamW, rounding back into the model) is a few large kernels per group instead
// of several small ones per parameter (a host-bound ~10% of a LongNet-base step on H100).
// Each parameter's data and .grad() are views into its group's buffers; autograd accumulates
// into the gradient views in place (as DDP's gradient_as_bucket_view), which is checked after
// every backward. fp32 parameters are the master views themselves.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "runtime/checkpoint.h"

namespace ra {

class FlatParameters {
 public:
  // Weight decay applies to matrices (dim >= 2) only: group 0 holds those, group 1 the biases
  // and LayerNorm gains. Both groups always exist (possibly empty).
  static constexpr size_t kDecay = 0, kNoDecay = 1, kNumGroups = 2;

  FlatParameters() = default;
  // Packs `params` (in this order) into the groups' buffers, on the parameters' device. The
  // fp32 master buffers take the parameters' current values; with compute_dtype other than
  // float the parameters become views of a buffer in compute_dtype holding the rounded master
  // (their old storage is released), otherwise views of the master buffer itself.
  FlatParameters(const torch::OrderedDict<std::string, at::Tensor>& params,
                 at::ScalarType compute_dtype);

  // The flat fp32 master weights of a group: what the optimizer updates. Its .grad() is the flat
  // fp32 gradient (after collect_grads()).
  const at::Tensor& master(size_t group) const { return groups_[group].master; }
  // The flat buffer backward accumulates the group's gradients into (compute dtype; the master
  // gradient itself in fp32 runs).
  const at::Tensor& grad_buffer(size_t group) const { return groups_[group].grads; }
  // The flat buffer in compute dtype the model's weights of a group are views of (the master
  // buffer itself in fp32 runs).
  const at::Tensor& param_buffer(size_t group) const { return groups_[group].params; }
  // Per parameter, in constructor order: the parameter, its master view, its gradient view.
  const std::vector<at::Tensor>& params() const { return params_; }
  const std::vector<at::Tensor>& master_views() const { return master_views_; }
  const std::vector<at::Tensor>& grad_views() const { return grad_views_; }
  // The master views by parameter name (what checkpoints store).
  const NamedWeights& named_master() const { return named_master_; }

  // Before backward: zeroes the gradient buffers and points every parameter's .grad() at its
  // view, so parameters that get no gradient keep zeros.
  void zero_grad();
  // After backward: checks that every gradient still aliases its buffer (throws naming the
  // parameter otherwise: the update would silently miss it), then up-casts the gradient buffers
  // into the fp32 master gradients (one copy per group; nothing to do in fp32 runs).
  void collect_grads();
  // The alias check alone (GradientReducer up-casts slice by slice during backward).
  void check_grads_alias() const;
  // Up-casts elements [begin, end) of a group's gradient buffer into its fp32 master gradient
  // (nothing to do in fp32 runs) and returns that slice of the master gradient.
  at::Tensor collect_grad_slice(size_t group, int64_t begin, int64_t end);

  // Where parameter i (constructor order) lives: its group and its elements [offset, offset +
  // numel) of that group's buffers.
  struct Slot {
    size_t group;
    int64_t offset, numel;
  };
  const std::vector<Slot>& slots() const { return slots_; }
  // Sums the fp32 master gradients over the ranks: one all-reduce per group.
  void all_reduce_grads(Communicator& comm);
  // The global L2 norm of the fp32 master gradients (a 0-dim fp32 tensor on their device, no
  // host sync); when max_norm > 0, scales them by min(1, max_norm / (norm + 1e-6)) as
  // torch::nn::utils::clip_grad_norm_ does, with one mul_ per group.
  at::Tensor clip_grad_norm_(double max_norm);
  // Rounds the fp32 master weights into the model's weights: one copy per group (nothing to do
  // in fp32 runs, where they share memory).
  void copy_master_to_params();

  bool shares_master() const { return shares_master_; }  // fp32 runs

 private:
  struct Group {
    at::Tensor master;  // [n] fp32; master.grad() = the fp32 gradient
    at::Tensor params;  // [n] compute dtype (= master when shared)
    at::Tensor grads;   // [n] compute dtype (= master.grad() when shared)
  };
  Group groups_[kNumGroups];
  std::vector<std::string> names_;
  std::vector<Slot> slots_;
  std::vector<at::Tensor> params_, master_views_, grad_views_;
  NamedWeights named_master_;
  bool shares_master_ = true;
};

}  // namespace ra
