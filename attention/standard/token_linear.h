// token_linear: a Linear layer applied to every token of x [..., in] as ONE GEMM with the bias in
// its epilogue (at::addmm on the 2-D view). at::linear on 3-D inputs runs mm and then a
// broadcasting bias add_, a separate pass over the whole output: at 256K tokens per GPU those
// adds took 13% of a LongNet-base training step on H100 (ring_train --profile-step).
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

namespace ra {

// x: [..., in] -> [..., out]; same values as layer->forward(x).
inline at::Tensor token_linear(const torch::nn::Linear& layer, const at::Tensor& x) {
  const at::Tensor& bias = layer->bias;
  if (!bias.defined() || x.dim() < 2) return at::linear(x, layer->weight, bias);
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = layer->weight.size(0);
  return at::addmm(bias, x.reshape({-1, x.size(-1)}), layer->weight.t()).view(sizes);
}

// x: [..., in] -> x W^T [..., out], the layer's bias left out (for an op that adds it itself and
// returns its gradient, e.g. gelu_layer_norm).
inline at::Tensor token_matmul(const torch::nn::Linear& layer, const at::Tensor& x) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = layer->weight.size(0);
  return at::mm(x.reshape({-1, x.size(-1)}), layer->weight.t()).view(sizes);
}

}  // namespace ra
