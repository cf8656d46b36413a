// TokenLinearsFunction: up to three Linear layers of one input as one autograd node (see
// token_linear.h for why).
#include "attention/standard/token_linear.h"

#include <torch/autograd.h>

#include "runtime/error.h"
#if RA_TORCH_HAS_CUDA
#include "attention/standard/column_sums_cuda.h"
#endif

namespace ra {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// dY's column sums (a bias gradient): the column-sum kernel on CUDA where it applies (ATen's
// reduction is slower at [256K, 768]), else ATen's sum.
at::Tensor bias_grad(const at::Tensor& dy) {
#if RA_TORCH_HAS_CUDA
  if (column_sums_kernel_applies(dy)) return column_sums_cuda(dy);
#endif
  return dy.sum(0);
}

using Param = c10::optional<at::Tensor>;
at::Tensor tensor(const Param& p) { return p.has_value() ? *p : at::Tensor(); }
Param param(const at::Tensor& t) { return t.defined() ? Param(t) : Param(); }

class TokenLinearsFunction : public torch::autograd::Function<TokenLinearsFunction> {
 public:
  // x: [N, in] contiguous; w_i: [out_i, in]; b_i: [out_i] or none; layers past the count none
  // (optional: autograd records an empty optional as a non-tensor input, an undefined tensor it
  // cannot). Returns {y_i = x W_i^T + b_i, [N, out_i]}.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const Param& w0,
                               const Param& b0, const Param& w1, const Param& b1, const Param& w2,
                               const Param& b2) {
    const at::Tensor weights[kMaxTokenLinears] = {tensor(w0), tensor(w1), tensor(w2)};
    const at::Tensor biases[kMaxTokenLinears] = {tensor(b0), tensor(b1), tensor(b2)};
    variable_list outputs;
    for (size_t i = 0; i < kMaxTokenLinears && weights[i].defined(); ++i) {
      outputs.push_back(biases[i].defined() ? at::addmm(biases[i], x, weights[i].t())
                                            : at::mm(x, weights[i].t()));
    }
    ctx->set_materialize_grads(false);  // an unused output: no zero GEMMs in backward
    ctx->save_for_backward({x, weights[0], weights[1], weights[2]});
    // Autograd numbers only the tensor inputs: x is edge 0, then each present weight and bias in
    // argument order (-1: absent), for needs_input_grad.
    std::vector<int64_t> edges;
    int64_t next_edge = 1;
    for (size_t i = 0; i < kMaxTokenLinears; ++i) {
      edges.push_back(weights[i].defined() ? next_edge++ : -1);
      edges.push_back(biases[i].defined() ? next_edge++ : -1);
    }
    ctx->saved_data["edges"] = edges;
    return outputs;
  }

  // The input gradient accumulates in the GEMMs (addmm_ with beta 1); outputs that received no
  // gradient (undefined) contribute nothing.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const std::vector<int64_t> edges = ctx->saved_data["edges"].toIntVector();
    auto needs = [&](int64_t edge) { return edge >= 0 && ctx->needs_input_grad(size_t(edge)); };
    variable_list result(1 + 2 * kMaxTokenLinears);  // dx, then dw_i, db_i
    at::Tensor& dx = result[0];
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined()) continue;
      const at::Tensor dy = grads[i].contiguous();
      const at::Tensor& w = saved[1 + i];
      if (ctx->needs_input_grad(0)) {
        if (dx.defined()) {
          dx.addmm_(dy, w);
        } else {
          dx = at::mm(dy, w);
        }
      }
      if (needs(edges[2 * i])) result[1 + 2 * i] = at::mm(dy.t(), x);
      if (needs(edges[2 * i + 1])) result[2 + 2 * i] = bias_grad(dy);
    }
    return result;
  }
};

// The node's inputs and the [..., out_i] views of its outputs.
std::vector<at::Tensor> apply_linears(const std::vector<torch::nn::Linear>& layers,
                                      const at::Tensor& x) {
  RA_CHECK(!layers.empty() && layers.size() <= kMaxTokenLinears, "token_linears: ", layers.size(),
           " layers: 1 to ", kMaxTokenLinears);
  Param params[2 * kMaxTokenLinears];
  for (size_t i = 0; i < layers.size(); ++i) {
    RA_CHECK(layers[i]->weight.size(1) == x.size(-1), "token_linears: layer ", i, " takes ",
             layers[i]->weight.size(1), " features, x has ", x.size(-1));
    params[2 * i] = param(layers[i]->weight), params[2 * i + 1] = param(layers[i]->bias);
  }
  const at::Tensor x2d = x.reshape({-1, x.size(-1)}).contiguous();
  variable_list outputs = TokenLinearsFunction::apply(x2d, params[0], params[1], params[2],
                                                      params[3], params[4], params[5]);
  std::vector<int64_t> sizes = x.sizes().vec();
  for (at::Tensor& y : outputs) {
    sizes.back() = y.size(1);
    y = y.view(sizes);
  }
  return outputs;
}

}  // namespace

at::Tensor token_linear(const torch::nn::Linear& layer, const at::Tensor& x) {
  if (x.dim() < 2) return at::linear(x, layer->weight, layer->bias);
  return apply_linears({layer}, x)[0];
}

std::vector<at::Tensor> token_linears(const std::vector<torch::nn::Linear>& layers,
                                      const at::Tensor& x) {
  if (x.dim() < 2) {
    std::vector<at::Tensor> outputs;
    for (const auto& layer : layers) outputs.push_back(at::linear(x, layer->weight, layer->bias));
    return outputs;
  }
  return apply_linears(layers, x);
}

}  // namespace ra
