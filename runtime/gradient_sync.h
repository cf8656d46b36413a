// Sums parameter gradients over the ranks of a sequence-parallel group. Each rank's loss is
// its local token sum divided by the global token count, so the sum of the ranks' gradients
// is exactly the gradient of the mean loss over the whole sequence. Gradients are flattened
// into buckets of about bucket_bytes so a few large all-reduces replace one per parameter.
// Also the small sums the trainer needs (token counts, logged loss), on the communicator's
// device (NCCL reduces only CUDA tensors).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include <c10/core/Device.h>

#include "comm/communicator.h"

namespace ra {

// For separate parameters (tests, other callers); the trainer's gradients live in flat buffers
// and are reduced as such (FlatParameters::all_reduce_grads).
// Every parameter ends with a defined gradient (zeros where backward produced none), the same
// on every rank. The order of `params` must be the same on every rank.
void all_reduce_gradients(const std::vector<at::Tensor>& params, Communicator& comm,
                          int64_t bucket_bytes = 32ll << 20);

// Element-wise sum over ranks of a few doubles, reduced as a float64 tensor on `device`.
std::vector<double> sum_over_ranks(const std::vector<double>& values, Communicator& comm,
                                   const c10::Device& device);

}  // namespace ra
