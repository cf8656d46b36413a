// LongNetLM: blocks, MAGNETO init, per-block checkpointing and the chunked LM loss.
#include "runtime/model.h"

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>

#include <cmath>

#include "attention/standard/layer_norm_op.h"
#include "attention/standard/token_linear.h"
#include "runtime/block_checkpoint.h"
#include "runtime/error.h"
#include "runtime/validation.h"

namespace ra {

void validate(const ModelConfig& c) {
  RA_CHECK(c.vocab_size > 0, "vocab_size = ", c.vocab_size, ": must be positive");
  RA_CHECK(c.num_layers > 0, "--layers = ", c.num_layers, ": must be positive");
  RA_CHECK(c.embed_dim > 0, "--embed-dim = ", c.embed_dim, ": must be positive");
  RA_CHECK(c.num_heads > 0 && c.embed_dim % c.num_heads == 0, "--heads = ", c.num_heads,
           ": must be positive and divide --embed-dim = ", c.embed_dim);
  RA_CHECK((c.embed_dim / c.num_heads) % 2 == 0,
           "--embed-dim / --heads = ", c.embed_dim / c.num_heads,
           ": the head dim must be even (rotary embedding)");
  RA_CHECK(c.ffn_dim > 0, "--ffn-dim = ", c.ffn_dim, ": must be positive");
  RA_CHECK(c.ffn_chunk_tokens >= 0, "ffn_chunk_tokens = ", c.ffn_chunk_tokens,
           ": must be >= 0 (0 = no chunking)");
  RA_CHECK(c.loss_chunk_tokens > 0, "loss_chunk_tokens = ", c.loss_chunk_tokens,
           ": must be positive");
  RA_CHECK(c.checkpoint_layers >= -1 && c.checkpoint_layers <= c.num_layers,
           "--checkpoint-layers = ", c.checkpoint_layers, ": allowed: -1 (all) or 0..",
           c.num_layers, " (--layers)");
  const int64_t checkpointed = !c.checkpointing          ? 0
                               : c.checkpoint_layers < 0 ? c.num_layers
                                                         : c.checkpoint_layers;
  RA_CHECK(c.recompute_ffn_layers >= 0 && c.recompute_ffn_layers <= c.num_layers - checkpointed,
           "--recompute-ffn-layers = ", c.recompute_ffn_layers, ": allowed: 0..",
           c.num_layers - checkpointed, " (the blocks that are not checkpointed)");
  validate(c.attention);
}

double magneto_decoder_gamma(int64_t num_layers) {
  return std::sqrt(std::log(2.0 * double(num_layers)));
}

namespace {

torch::nn::LayerNorm make_norm(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

}  // namespace

DecoderBlockImpl::DecoderBlockImpl(const ModelConfig& c, bool checkpointed,
                                   std::shared_ptr<DilatedAttentionBase> attention,
                                   std::shared_ptr<const PositionEncoding> position_encoding,
                                   bool recompute_ffn)
    : ffn_chunk_tokens_(checkpointed ? c.ffn_chunk_tokens : 0),
      recompute_ffn_(recompute_ffn),
      recompute_chunk_tokens_(c.ffn_chunk_tokens),
      fused_norms_(c.fused_norms),
      layer_norm_eps_(c.layer_norm_eps) {
  const double gamma = magneto_decoder_gamma(c.num_layers);
  MultiheadConfig mh;
  mh.embed_dim = c.embed_dim;
  mh.num_heads = c.num_heads;
  mh.sub_ln = true;
  mh.layer_norm_eps = c.layer_norm_eps;
  mh.gamma_init = gamma;
  mh.attention = c.attention;
  mh.fused_norms = c.fused_norms;
  attn_ln = register_module("attn_ln", make_norm(c.embed_dim, c.layer_norm_eps));
  attn = register_module("attn", MultiheadDilatedAttention(mh, std::move(attention)));
  attn->set_position_encoding(std::move(position_encoding));
  ffn_ln = register_module("ffn_ln", make_norm(c.embed_dim, c.layer_norm_eps));
  fc1 = register_module("fc1", torch::nn::Linear(c.embed_dim, c.ffn_dim));
  ffn_sub_ln = register_module("ffn_sub_ln", make_norm(c.ffn_dim, c.layer_norm_eps));
  fc2 = register_module("fc2", torch::nn::Linear(c.ffn_dim, c.embed_dim));
  torch::NoGradGuard no_grad;
  for (auto* linear : {&fc1, &fc2}) {
    torch::nn::init::xavier_normal_((*linear)->weight, gamma);
    (*linear)->bias.zero_();
  }
}

at::Tensor DecoderBlockImpl::norm(torch::nn::LayerNorm ln, const at::Tensor& x) const {
  return fused_norms_ ? fast_layer_norm(x, ln->weight, ln->bias, layer_norm_eps_) : ln->forward(x);
}

at::Tensor DecoderBlockImpl::ffn(const at::Tensor& h) { return ffn_of_normed(norm(ffn_ln, h)); }

at::Tensor DecoderBlockImpl::ffn_of_normed(const at::Tensor& x) {
  at::Tensor g;  // sub_ln(gelu(fc1(x))), [B, S, ffn_dim]
  if (fused_norms_) {
    // fc1's bias goes into the GELU + LayerNorm op, whose backward also returns its gradient
    // (no separate reduction over [S, ffn_dim]).
    g = gelu_layer_norm(token_matmul(fc1, x), fc1->bias, ffn_sub_ln->weight, ffn_sub_ln->bias,
                        layer_norm_eps_, /*fused=*/true);
  } else {
    g = gelu_layer_norm(token_linear(fc1, x), at::Tensor(), ffn_sub_ln->weight, ffn_sub_ln->bias,
                        layer_norm_eps_, /*fused=*/false);
  }
  return token_linear(fc2, g);
}

std::vector<at::Tensor> DecoderBlockImpl::ffn_parameters() {
  std::vector<at::Tensor> params;
  for (torch::nn::Module* m : std::initializer_list<torch::nn::Module*>{
           ffn_ln.get(), fc1.get(), ffn_sub_ln.get(), fc2.get()}) {
    for (const auto& p : m->parameters()) params.push_back(p);
  }
  return params;
}

ResidualStream DecoderBlockImpl::ffn_recomputed_in_backward(const at::Tensor& h) {
  const int64_t tokens = h.size(1);
  const int64_t chunk = recompute_chunk_tokens_ > 0 ? recompute_chunk_tokens_ : tokens;
  at::Tensor delta = at::empty_like(h);
  {
    at::NoGradGuard no_grad;  // one chunk's [chunk, ffn_dim] activations at a time, none kept
    for (int64_t start = 0; start < tokens; start += chunk) {
      const int64_t length = std::min(chunk, tokens - start);
      delta.narrow(1, start, length).copy_(ffn(h.narrow(1, start, length)));
    }
  }
  // Value h (the sum with delta is the block's output); gradient that of h + ffn(h), the FFN
  // run again chunk by chunk with a graph in backward.
  auto run_ffn = [this](const at::Tensor& in) { return ffn(in); };
  return {add_recomputed_in_backward(run_ffn, h, ffn_parameters(), chunk), delta};
}

ResidualStream DecoderBlockImpl::forward_stream(const ResidualStream& in, int64_t first_position) {
  // Each residual add is one op with the LayerNorm that reads its sum: the sum and its norm in
  // one pass, and in backward the sum's two gradients added by the LayerNorm kernel.
  at::Tensor x, x_normed;
  if (in.delta.defined()) {
    ResidualNorm r = add_layer_norm(in.base, in.delta, attn_ln->weight, attn_ln->bias,
                                    layer_norm_eps_, fused_norms_);
    x = std::move(r.sum), x_normed = std::move(r.normed);
  } else {
    x = in.base, x_normed = norm(attn_ln, x);
  }
  const at::Tensor attended = attn->forward(x_normed, first_position);
  if (recompute_ffn_ && is_training() && at::GradMode::is_enabled()) {
    return ffn_recomputed_in_backward(x + attended);
  }
  ResidualNorm h =
      add_layer_norm(x, attended, ffn_ln->weight, ffn_ln->bias, layer_norm_eps_, fused_norms_);
  return {std::move(h.sum), ffn_of_normed(h.normed)};
}

at::Tensor DecoderBlockImpl::forward(const at::Tensor& x, int64_t first_position) {
  const int64_t tokens = x.size(1), chunk = ffn_chunk_tokens_;
  const bool recompute = inside_recompute() && at::GradMode::is_enabled();
  const bool forward_of_checkpoint = !at::GradMode::is_enabled();
  if (!is_training() || chunk <= 0 || tokens <= chunk || !(recompute || forward_of_checkpoint)) {
    return forward_stream({x, at::Tensor()}, first_position).sum();
  }
  at::Tensor h = x + attn->forward(norm(attn_ln, x), first_position);
  const std::vector<at::Tensor> params = ffn_parameters();
  // In the recompute of a checkpointed block (with grad): the FFN is deferred to its own
  // backward, chunk by chunk (add_recomputed_in_backward), so the recompute holds one chunk's
  // [chunk, ffn_dim] activations at a time without running the FFN forward a third time.
  if (recompute) {
    auto run_ffn = [this](const at::Tensor& in) { return ffn(in); };
    return add_recomputed_in_backward(run_ffn, h, params, chunk);
  }
  // The block's forward without grad (checkpointed): h is ours, so each chunk's FFN output is
  // added into it in place and freed at once.
  for (int64_t start = 0; start < tokens; start += chunk) {
    at::Tensor piece = h.narrow(1, start, std::min(chunk, tokens - start));
    piece.add_(ffn(piece));
  }
  return h;
}

LongNetLMImpl::LongNetLMImpl(ModelConfig config, const AttentionMaker& make_attention)
    : config_(std::move(config)) {
  validate(config_);
  const int64_t E = config_.embed_dim;
  auto rope = std::make_shared<RotaryEmbedding>(E / config_.num_heads, config_.rope_base);
  embed = register_module("embed", torch::nn::Embedding(config_.vocab_size, E));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    block_list_.push_back(DecoderBlock(config_, block_checkpointed(size_t(i)), make_attention(),
                                       rope, block_recomputes_ffn(size_t(i))));
    blocks->push_back(block_list_.back());
  }
  final_ln = register_module("final_ln", make_norm(E, config_.layer_norm_eps));
  lm_head = register_module(
      "lm_head", torch::nn::Linear(torch::nn::LinearOptions(E, config_.vocab_size).bias(false)));
  torch::NoGradGuard no_grad;
  torch::nn::init::normal_(embed->weight, 0.0, std::pow(double(E), -0.5));
  torch::nn::init::normal_(lm_head->weight, 0.0, std::pow(double(E), -0.5));
}

at::Tensor LongNetLMImpl::hidden_states(const at::Tensor& tokens, int64_t first_position) {
  RA_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong,
           "tokens must be [batch, seq_len] int64, got ", tokens.sizes(), " ", tokens.dtype());
  ResidualStream x{embed->forward(tokens), at::Tensor()};  // [B, S, E]
  CheckpointStorage storage;
  storage.dtype = config_.checkpoint_dtype;
  // One offloader per forward pass: it lives as long as this pass's autograd graph.
  if (config_.checkpointing && config_.offload_checkpoints && is_training())
    storage.offloader = std::make_shared<CheckpointOffloader>();
  for (size_t i = 0; i < block_list_.size(); ++i) {
    DecoderBlock& block = block_list_[i];
    watch_stage_input(x, i);
    if (block_checkpointed(i) && is_training()) {
      auto fn = [block, first_position](const at::Tensor& in) mutable {
        return block->forward(in, first_position);
      };
      x = {checkpoint_block(fn, x.sum(), block->parameters(), storage), at::Tensor()};
    } else {
      x = block->forward_stream(x, first_position);
    }
  }
  watch_stage_input(x, block_list_.size());  // the final LayerNorm and the LM head
  if (x.delta.defined()) {
    return add_layer_norm(x.base, x.delta, final_ln->weight, final_ln->bias, config_.layer_norm_eps,
                          config_.fused_norms)
        .normed;
  }
  if (!config_.fused_norms) return final_ln->forward(x.base);
  return fast_layer_norm(x.base, final_ln->weight, final_ln->bias, config_.layer_norm_eps);
}

void LongNetLMImpl::watch_stage_input(const ResidualStream& input, size_t stage) const {
  if (!stage_hook_ || !is_training() || !at::GradMode::is_enabled()) return;
  // The gradient of either addend is the stage input's; the hook runs when backward is about to
  // enter the op that made it, i.e. right after the stage's last op (delta: the previous block's
  // fc2, reached before base's LayerNorm).
  // (A block whose FFN is recomputed passes its FFN output without a graph: then base.)
  const at::Tensor& t =
      input.delta.defined() && input.delta.requires_grad() ? input.delta : input.base;
  if (!t.requires_grad()) return;
  t.register_hook([hook = stage_hook_, stage](const at::Tensor&) { hook(stage); });
}

std::vector<std::vector<at::Tensor>> LongNetLMImpl::backward_stage_parameters() {
  std::vector<std::vector<at::Tensor>> stages;
  for (auto& block : block_list_) stages.push_back(block->parameters());
  std::vector<at::Tensor> head = final_ln->parameters();
  for (const auto& p : lm_head->parameters()) head.push_back(p);
  stages.push_back(std::move(head));
  return stages;
}

bool LongNetLMImpl::block_checkpointed(size_t index) const {
  return config_.checkpointing &&
         (config_.checkpoint_layers < 0 || int64_t(index) < config_.checkpoint_layers);
}

bool LongNetLMImpl::block_recomputes_ffn(size_t index) const {
  if (block_checkpointed(index)) return false;
  int64_t first = 0;  // the first block that is not checkpointed
  while (first < config_.num_layers && block_checkpointed(size_t(first))) ++first;
  return int64_t(index) < first + config_.recompute_ffn_layers;
}

at::Tensor LongNetLMImpl::loss_sum(const at::Tensor& hidden, const at::Tensor& targets,
                                   const at::Tensor& host_targets) {
  RA_CHECK(hidden.dim() == 3 && targets.dim() == 2 && hidden.size(0) == targets.size(0) &&
               hidden.size(1) == targets.size(1),
           "loss_sum: hidden [B, S, E] and targets [B, S] disagree: ", hidden.sizes(), " vs ",
           targets.sizes());
  RA_CHECK(!host_targets.defined() ||
               (host_targets.sizes() == targets.sizes() && host_targets.device().is_cpu()),
           "loss_sum: host_targets must be a CPU copy of targets ", targets.sizes(), ", got ",
           host_targets.sizes(), " on ", host_targets.device());
  // [B, S] on the host: whether each position is scored.
  const at::Tensor scored = (host_targets.defined() ? host_targets : targets.to(at::kCPU)) >= 0;
  const int64_t S = hidden.size(1), chunk = config_.loss_chunk_tokens;
  // The loss is at least fp32 (bf16 logits are upcast), float64 stays float64 (tests).
  const auto loss_dtype = at::promote_types(hidden.scalar_type(), at::kFloat);
  at::Tensor total = at::zeros({}, hidden.options().dtype(loss_dtype));
  for (int64_t start = 0; start < S; start += chunk) {
    const int64_t len = std::min(chunk, S - start);
    at::Tensor chunk_targets = targets.narrow(1, start, len).reshape({-1});  // [B * len]
    if (!scored.narrow(1, start, len).any().item<bool>()) continue;
    auto chunk_loss = [this, chunk_targets, loss_dtype](const at::Tensor& h) {
      at::Tensor logits = lm_head->forward(h).reshape({chunk_targets.size(0), -1}).to(loss_dtype);
      return torch::nn::functional::cross_entropy(
          logits, chunk_targets,
          torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1).reduction(torch::kSum));
    };
    at::Tensor h = hidden.narrow(1, start, len);  // [B, len, E]
    total = total + (config_.checkpointing && is_training()
                         ? checkpoint_block(chunk_loss, h, lm_head->parameters())
                         : chunk_loss(h));
  }
  // A shard with nothing to score still needs a backward pass through the whole model:
  // sequence-parallel attention runs collectives in backward that every rank must join.
  if (!total.requires_grad() && hidden.requires_grad()) total = total + hidden.sum() * 0;
  return total;
}

int64_t LongNetLMImpl::matmul_parameter_count() {
  int64_t n = lm_head->weight.numel();
  for (auto& block : block_list_) {
    for (const auto& p : block->parameters()) {
      if (p.dim() == 2) n += p.numel();
    }
  }
  return n;
}

}  // namespace ra
