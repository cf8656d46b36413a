// Flat parameter, master and gradient buffers (see flat_parameters.h).
#include "runtime/flat_parameters.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <cmath>

#include "runtime/error.h"

namespace ra {
namespace {

// Every view starts at a multiple of this many elements (256 B of fp32, 128 B of bf16), so
// kernels that read a weight see the alignment a tensor of its own would have (vectorised
// loads, cuBLAS). The gaps stay zero in every buffer: zero gradient, so AdamW keeps them zero.
constexpr int64_t kAlignElements = 64;

int64_t round_up(int64_t n) { return (n + kAlignElements - 1) / kAlignElements * kAlignElements; }

at::Tensor view_at(const at::Tensor& flat, int64_t offset, const at::Tensor& like) {
  return flat.narrow(0, offset, like.numel()).view(like.sizes());
}

}  // namespace

FlatParameters::FlatParameters(const torch::OrderedDict<std::string, at::Tensor>& params,
                               at::ScalarType compute_dtype)
    : shares_master_(compute_dtype == at::kFloat) {
  torch::NoGradGuard no_grad;
  std::vector<size_t> group_of;
  std::vector<int64_t> offset_of;
  int64_t numel[kNumGroups] = {0, 0};
  for (const auto& item : params) {
    const at::Tensor& p = item.value();
    RA_CHECK(p.device() == params.front().value().device(), "FlatParameters: parameter '",
             item.key(), "' is on ", p.device(), ", the others on ",
             params.front().value().device());
    const size_t g = p.dim() >= 2 ? kDecay : kNoDecay;
    group_of.push_back(g);
    offset_of.push_back(numel[g]);
    slots_.push_back({g, numel[g], p.numel()});
    numel[g] = round_up(numel[g] + p.numel());
  }
  const auto device = params.is_empty() ? at::Device(at::kCPU) : params.front().value().device();
  for (size_t g = 0; g < kNumGroups; ++g) {
    Group& group = groups_[g];
    group.master = at::zeros({numel[g]}, at::TensorOptions().dtype(at::kFloat).device(device));
    group.params = shares_master_ ? group.master : at::Tensor();
    group.grads = at::zeros({numel[g]}, at::TensorOptions().dtype(compute_dtype).device(device));
    group.master.mutable_grad() = shares_master_ ? group.grads : at::zeros_like(group.master);
  }
  size_t i = 0;
  for (const auto& item : params) {
    const at::Tensor& p = item.value();
    const at::Tensor master = view_at(groups_[group_of[i]].master, offset_of[i], p);
    master.copy_(p.detach());
    names_.push_back(item.key());
    master_views_.push_back(master);
    named_master_.insert(item.key(), master);
    ++i;
  }
  // The rounded weights exist only once all masters are filled; then the parameters move.
  for (Group& group : groups_) {
    if (!shares_master_) group.params = group.master.to(compute_dtype);
  }
  i = 0;
  for (const auto& item : params) {
    at::Tensor p = item.value();
    const Group& group = groups_[group_of[i]];
    p.set_data(view_at(group.params, offset_of[i], p));
    params_.push_back(p);
    grad_views_.push_back(view_at(group.grads, offset_of[i], p));
    ++i;
  }
}

void FlatParameters::zero_grad() {
  for (Group& group : groups_) group.grads.zero_();
  for (size_t i = 0; i < params_.size(); ++i) params_[i].mutable_grad() = grad_views_[i];
}

void FlatParameters::collect_grads() {
  check_grads_alias();
  if (shares_master_) return;
  torch::NoGradGuard no_grad;
  for (Group& group : groups_) group.master.mutable_grad().copy_(group.grads);
}

at::Tensor FlatParameters::collect_grad_slice(size_t group, int64_t begin, int64_t end) {
  Group& g = groups_[group];
  RA_CHECK(begin >= 0 && begin <= end && end <= g.master.numel(), "collect_grad_slice: [", begin,
           ", ", end, ") is outside group ", group, " of ", g.master.numel(), " elements");
  at::Tensor master_grad = g.master.mutable_grad().narrow(0, begin, end - begin);
  if (!shares_master_) {
    torch::NoGradGuard no_grad;
    master_grad.copy_(g.grads.narrow(0, begin, end - begin));
  }
  return master_grad;
}

void FlatParameters::check_grads_alias() const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& grad = params_[i].grad();
    RA_CHECK(grad.defined() && grad.data_ptr() == grad_views_[i].data_ptr(), "parameter '",
             names_[i],
             "': after backward its gradient no longer aliases the flat gradient buffer (this "
             "LibTorch replaced it instead of accumulating in place); the optimizer would miss "
             "it");
  }
}

void FlatParameters::all_reduce_grads(Communicator& comm) {
  if (comm.size() == 1) return;
  for (Group& group : groups_) {
    if (group.master.numel() > 0) comm.all_reduce_sum(group.master.mutable_grad());
  }
}

at::Tensor FlatParameters::clip_grad_norm_(double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const Group& group : groups_) norms.push_back(group.master.grad().norm());
  // The norm of the per-group norms is the norm of all gradients (as clip_grad_norm_ computes
  // it from per-parameter norms; only the summation order differs).
  at::Tensor total = at::stack(norms).norm();
  if (max_norm > 0 && std::isfinite(max_norm)) {
    // min(1, ...) on the device: multiplying by exactly 1 changes nothing, and no host sync.
    const at::Tensor coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    for (Group& group : groups_) group.master.mutable_grad().mul_(coef);
  }
  return total;
}

void FlatParameters::copy_master_to_params() {
  if (shares_master_) return;
  torch::NoGradGuard no_grad;
  for (Group& group : groups_) group.params.copy_(group.master);
}

}  // namespace ra
