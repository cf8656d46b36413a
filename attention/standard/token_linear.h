// token_linear / token_linears: Linear layers applied to every token of x [..., in] as 2-D GEMMs
// with the bias in the GEMM's epilogue (at::addmm). at::linear on 3-D inputs runs mm and then a
// broadcasting bias add_, a separate pass over the whole output: at 256K tokens per GPU those
// adds took 13% of a LongNet-base training step on H100 (ring_train --profile-step).
// Their backward is one autograd node for all the layers that read x (token_linears: the q, k, v
// projections): the input gradient accumulates inside the GEMMs (dX = dY_0 W_0, then dX +=
// dY_i W_i with beta 1) instead of autograd adding the layers' [tokens, in] gradients of x in
// separate passes (24 such adds were ~1% of a 1M-token LongNet-base step on 4 x H100).
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <vector>

namespace ra {

constexpr size_t kMaxTokenLinears = 3;  // q, k and v projections of one input

// x: [..., in] -> [..., out]; same values as layer->forward(x).
at::Tensor token_linear(const torch::nn::Linear& layer, const at::Tensor& x);

// The layers (1 to kMaxTokenLinears, same in) applied to the same x: {layer_i->forward(x)}.
std::vector<at::Tensor> token_linears(const std::vector<torch::nn::Linear>& layers,
                                      const at::Tensor& x);

// x: [..., in] -> x W^T [..., out], the layer's bias left out (for an op that adds it itself and
// returns its gradient, e.g. gelu_layer_norm).
inline at::Tensor token_matmul(const torch::nn::Linear& layer, const at::Tensor& x) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = layer->weight.size(0);
  return at::mm(x.reshape({-1, x.size(-1)}), layer->weight.t()).view(sizes);
}

}  // namespace ra
