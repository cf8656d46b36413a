// Bucketed gradient all-reduce (see gradient_sync.h).
#include "runtime/gradient_sync.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

namespace ra {
namespace {

void reduce_bucket(const std::vector<at::Tensor>& grads, Communicator& comm) {
  if (grads.empty()) return;
  std::vector<at::Tensor> flat;
  for (const auto& g : grads) flat.push_back(g.reshape({-1}));
  at::Tensor bucket = at::cat(flat);  // [sum of numels], one dtype
  comm.all_reduce_sum(bucket);
  int64_t offset = 0;
  for (const auto& g : grads) {
    g.copy_(bucket.narrow(0, offset, g.numel()).view_as(g));
    offset += g.numel();
  }
}

}  // namespace

void all_reduce_gradients(const std::vector<at::Tensor>& params, Communicator& comm,
                          int64_t bucket_bytes) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    grads.push_back(p.grad());
  }
  if (comm.size() == 1) return;
  std::vector<at::Tensor> bucket;
  int64_t bytes = 0;
  for (const auto& g : grads) {
    const bool other_dtype = !bucket.empty() && bucket.front().scalar_type() != g.scalar_type();
    if (other_dtype || (bytes > 0 && bytes + int64_t(g.nbytes()) > bucket_bytes)) {
      reduce_bucket(bucket, comm);
      bucket.clear(), bytes = 0;
    }
    bucket.push_back(g);
    bytes += int64_t(g.nbytes());
  }
  reduce_bucket(bucket, comm);
}

std::vector<double> sum_over_ranks(const std::vector<double>& values, Communicator& comm,
                                   const c10::Device& device) {
  at::Tensor t = at::tensor(values, at::kDouble).to(device);  // [n]
  if (comm.size() > 1) comm.all_reduce_sum(t);
  t = t.to(at::kCPU);
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

}  // namespace ra
