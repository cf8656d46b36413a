// MultiheadDilatedAttention: projections, norms and MAGNETO init around an attention variant.
#include "attention/standard/multihead_dilated_attention.h"

#include <torch/nn/init.h>

#include <sstream>
#include <tuple>

#include "attention/standard/dilated_attention.h"
#include "attention/standard/layer_norm_op.h"
#include "attention/standard/token_linear.h"
#include "runtime/error.h"
#include "runtime/validation.h"

namespace ra {
namespace {

torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

torch::nn::LayerNorm make_norm(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

void xavier(const at::Tensor& weight, double gain) {
  torch::nn::init::xavier_normal_(weight, gain);
}

}  // namespace

MultiheadDilatedAttentionImpl::MultiheadDilatedAttentionImpl(
    MultiheadConfig config, std::shared_ptr<DilatedAttentionBase> attention)
    : config_(std::move(config)), attention_(std::move(attention)) {
  validate(config_);
  RA_CHECK(attention_ != nullptr, "attention is null: pass a variant from make_attention");
  const int64_t E = config_.embed_dim, head_dim = E / config_.num_heads;
  if (config_.fused_qkv) {
    qkv_proj = register_module("qkv_proj", make_linear(E, 3 * E, config_.bias));
  } else {
    q_proj = register_module("q_proj", make_linear(E, E, config_.bias));
    k_proj = register_module("k_proj", make_linear(E, E, config_.bias));
    v_proj = register_module("v_proj", make_linear(E, E, config_.bias));
  }
  out_proj = register_module("out_proj", make_linear(E, E, config_.bias));
  if (config_.sub_ln) sub_ln = register_module("sub_ln", make_norm(E, config_.layer_norm_eps));
  if (config_.qk_norm) {
    q_norm = register_module("q_norm", make_norm(head_dim, config_.layer_norm_eps));
    k_norm = register_module("k_norm", make_norm(head_dim, config_.layer_norm_eps));
  }
  reset_parameters();
}

MultiheadDilatedAttentionImpl::MultiheadDilatedAttentionImpl(MultiheadConfig config)
    : MultiheadDilatedAttentionImpl(config, std::make_shared<DilatedAttention>(config.attention)) {}

void MultiheadDilatedAttentionImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const int64_t E = config_.embed_dim;
  const double gamma = config_.gamma_init;
  if (config_.fused_qkv) {
    // Each [E, E] slice is initialised as its own projection would be.
    xavier(qkv_proj->weight.narrow(0, 0, E), 1.0);
    xavier(qkv_proj->weight.narrow(0, E, E), 1.0);
    xavier(qkv_proj->weight.narrow(0, 2 * E, E), gamma);
  } else {
    xavier(q_proj->weight, 1.0);
    xavier(k_proj->weight, 1.0);
    xavier(v_proj->weight, gamma);
  }
  xavier(out_proj->weight, gamma);
  for (auto* linear : {&q_proj, &k_proj, &v_proj, &qkv_proj, &out_proj}) {
    if (!linear->is_empty() && (*linear)->bias.defined()) (*linear)->bias.zero_();
  }
}

at::Tensor MultiheadDilatedAttentionImpl::norm(torch::nn::LayerNorm ln, const at::Tensor& x) const {
  if (!config_.fused_norms) return ln->forward(x);
  return fast_layer_norm(x, ln->weight, ln->bias, config_.layer_norm_eps);
}

at::Tensor MultiheadDilatedAttentionImpl::forward(const at::Tensor& query, const at::Tensor& key,
                                                  const at::Tensor& value, int64_t first_position) {
  const int64_t E = config_.embed_dim, H = config_.num_heads, D = E / H;
  for (const auto& [name, t] : {std::pair{"query", &query}, {"key", &key}, {"value", &value}}) {
    std::ostringstream shape;
    shape << t->sizes();
    RA_CHECK(t->dim() == 3 && t->size(2) == E, name, " has shape ", shape.str(),
             ": expected [batch, seq_len, embed_dim = ", E, "]");
  }
  at::Tensor q, k, v;
  if (config_.fused_qkv) {
    RA_CHECK(query.is_same(key) && key.is_same(value),
             "fused_qkv is on but query, key and value are different tensors: fused_qkv is "
             "for self-attention only");
    auto qkv = token_linear(qkv_proj, query).chunk(3, -1);
    q = qkv[0], k = qkv[1], v = qkv[2];
  } else if (query.is_same(key) && key.is_same(value)) {
    // Self-attention: one backward node for the three projections of one input.
    auto qkv = token_linears({q_proj, k_proj, v_proj}, query);
    q = qkv[0], k = qkv[1], v = qkv[2];
  } else {
    q = token_linear(q_proj, query), k = token_linear(k_proj, key);
    v = token_linear(v_proj, value);
  }
  auto heads = [&](const at::Tensor& t) { return t.reshape({t.size(0), t.size(1), H, D}); };
  q = heads(q), k = heads(k), v = heads(v);  // [B, S, H, D]
  if (config_.qk_norm) q = norm(q_norm, q), k = norm(k_norm, k);
  if (position_encoding_) {
    std::tie(q, k) = position_encoding_->encode_query_key(q, k, first_position);
  }
  attention_->train(is_training());
  at::Tensor attn = attention_->forward(q, k, v).out;  // [B, S, H, D]
  attn = attn.reshape({attn.size(0), attn.size(1), E});
  if (config_.sub_ln) attn = norm(sub_ln, attn);
  return token_linear(out_proj, attn);
}

}  // namespace ra
