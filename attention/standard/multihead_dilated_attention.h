// MultiheadDilatedAttention: the LongNet/MAGNETO attention layer around any attention variant.
// x [B, S, E] -> q, k, v projections -> (optional per-head q/k LayerNorm) -> dilated attention
// -> (optional sub-LN) -> out_proj. MAGNETO init: xavier normal, gain gamma_init on v and out,
// 1 on q and k, zero biases. An optional PositionEncoding (RoPE) is applied to q and k after
// the projections, at the global token index the caller passes.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <memory>

#include "attention/attention.h"
#include "attention/position_encoding.h"
#include "runtime/config.h"

namespace ra {

class MultiheadDilatedAttentionImpl : public torch::nn::Module {
 public:
  // `attention` computes the per-head attention (e.g. make_attention("standard", ...)); its
  // config should be config.attention. Validates config.
  MultiheadDilatedAttentionImpl(MultiheadConfig config,
                                std::shared_ptr<DilatedAttentionBase> attention);
  // Builds the "standard" variant from config.attention.
  explicit MultiheadDilatedAttentionImpl(MultiheadConfig config);

  // query, key, value: [B, S, E] -> [B, S, E]. first_position: global index of token 0 (used
  // only by the position encoding; a rank's shard starts at rank * S/P).
  at::Tensor forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                     int64_t first_position = 0);
  // Self-attention: x [B, S, E] -> [B, S, E].
  at::Tensor forward(const at::Tensor& x, int64_t first_position = 0) {
    return forward(x, x, x, first_position);
  }

  // Applied to q and k (after q/k norm) in every forward; null (the default) means none.
  void set_position_encoding(std::shared_ptr<const PositionEncoding> encoding) {
    position_encoding_ = std::move(encoding);
  }

  void reset_parameters();  // MAGNETO init
  const MultiheadConfig& config() const { return config_; }
  DilatedAttentionBase& attention() { return *attention_; }

  // Registered submodules; the unused ones (by fused_qkv / sub_ln / qk_norm) are null.
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, qkv_proj{nullptr};
  torch::nn::Linear out_proj{nullptr};
  torch::nn::LayerNorm sub_ln{nullptr}, q_norm{nullptr}, k_norm{nullptr};

 private:
  // ln(x), through the one-pass kernels where config_.fused_norms and they apply.
  at::Tensor norm(torch::nn::LayerNorm ln, const at::Tensor& x) const;

  MultiheadConfig config_;
  std::shared_ptr<DilatedAttentionBase> attention_;
  std::shared_ptr<const PositionEncoding> position_encoding_;
};

TORCH_MODULE(MultiheadDilatedAttention);

}  // namespace ra
