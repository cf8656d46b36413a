// LongNetLM: the LongNet-style decoder-only language model ring_train trains.
// token embedding -> N x DecoderBlock -> final LayerNorm -> LM head (no bias), where a block is
//   x + MultiheadDilatedAttention(LN(x))   (sub-LN, RoPE at the global token index)
//   x + fc2(LN(gelu(fc1(LN(x)))))          (MAGNETO FFN with its sub-LN)
// Everything except attention is token-local, so a rank holding tokens [first, first + S/P)
// computes exactly its slice of what one device would (attention decides the rest).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <optional>

#include "attention/attention.h"
#include "attention/standard/multihead_dilated_attention.h"
#include "runtime/config.h"
#include "runtime/rotary_embedding.h"

namespace ra {

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t num_layers = 0;
  int64_t embed_dim = 0;
  int64_t num_heads = 0;
  int64_t ffn_dim = 0;
  DilatedAttentionConfig attention;
  double rope_base = 10000.0;
  double layer_norm_eps = 1e-5;
  bool checkpointing = false;  // recompute each block (and the loss chunks) in backward
  // With checkpointing, how many blocks (the first ones) are checkpointed; the others keep
  // their activations (faster: no recompute; more memory). -1 = all.
  int64_t checkpoint_layers = -1;
  int64_t loss_chunk_tokens = 4096;  // LM head + cross-entropy on this many tokens at a time
  // In a checkpointed block, the FFN runs on this many tokens at a time and the recompute
  // defers each chunk to its own backward, so it never holds the [S/P, ffn_dim] activations of
  // the whole shard (they dominate memory past 1M tokens per rank). 0 = one piece.
  int64_t ffn_chunk_tokens = 65536;
  // The first N blocks that are not checkpointed keep their attention's activations but not
  // their FFN's: its output is computed without a graph and its backward recomputes it chunk by
  // chunk (add_recomputed_in_backward), about 9 x E x 2 bytes less per token and block (bf16)
  // for one FFN forward more. Finer than checkpointing a whole block.
  int64_t recompute_ffn_layers = 0;
  // With checkpointing, the dtype each block keeps its saved input in; nullopt = the residual
  // stream's own dtype. bf16 halves the dominant memory of long sequences (the residual stream
  // is fp32: fp32 master weights); each block then runs on its bf16-rounded input (see
  // CheckpointStorage).
  std::optional<at::ScalarType> checkpoint_dtype;
  // With checkpointing, keep the saved block inputs in host memory between forward and
  // backward (pinned, copied on a side stream; a plain copy on CPU). See CheckpointOffloader.
  bool offload_checkpoints = false;
  // Every LayerNorm as ringattn's one-pass op (attention/standard/layer_norm_op.h), the FFN's
  // GELU folded into its sub-LN: one kernel each way on CUDA fp16/bf16; the same math (to
  // rounding) as torch::nn::LayerNorm and at::gelu. false = those.
  bool fused_norms = true;
};

void validate(const ModelConfig& config);

// MAGNETO's init gain for a decoder-only model of N layers: gamma = sqrt(log(2N)) (Wang et al.
// 2022, "Foundation Transformers", arXiv:2210.06423, Sec. 2.2; TorchScale's Decoder scales
// v_proj, out_proj, fc1 and fc2 by it when subln is on).
double magneto_decoder_gamma(int64_t num_layers);

// The residual stream between blocks as its last two addends, x = base + delta (delta undefined:
// x = base), so that the sum and the LayerNorm that reads it run as one op (add_layer_norm).
struct ResidualStream {
  at::Tensor base, delta;  // [B, S, E]
  at::Tensor sum() const { return delta.defined() ? base + delta : base; }
};

// Creates the attention of one layer (e.g. make_attention(name, spec) with the communicator).
using AttentionMaker = std::function<std::shared_ptr<DilatedAttentionBase>()>;

class DecoderBlockImpl : public torch::nn::Module {
 public:
  // checkpointed: the model runs this block under checkpoint_block in training (its FFN is then
  // chunked, see ModelConfig::ffn_chunk_tokens).
  // recompute_ffn: in training, forward_stream keeps no FFN activations (see
  // ModelConfig::recompute_ffn_layers).
  DecoderBlockImpl(const ModelConfig& config, bool checkpointed,
                   std::shared_ptr<DilatedAttentionBase> attention,
                   std::shared_ptr<const PositionEncoding> position_encoding,
                   bool recompute_ffn = false);
  // x: [B, S, E] -> [B, S, E]; token 0 of x is global token first_position.
  at::Tensor forward(const at::Tensor& x, int64_t first_position);
  // The same on x = in.base + in.delta, returned as {h, ffn(h)} (their sum is the output): the
  // model passes the stream from block to block this way when the block is not checkpointed.
  ResidualStream forward_stream(const ResidualStream& in, int64_t first_position);
  // h: [B, S, E] -> fc2(sub_ln(gelu(fc1(ln(h))))), token-local.
  at::Tensor ffn(const at::Tensor& h);
  // The same from x = ln(h).
  at::Tensor ffn_of_normed(const at::Tensor& x);

  torch::nn::LayerNorm attn_ln{nullptr}, ffn_ln{nullptr}, ffn_sub_ln{nullptr};
  MultiheadDilatedAttention attn{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  at::Tensor norm(torch::nn::LayerNorm ln, const at::Tensor& x) const;  // ln(x)
  std::vector<at::Tensor> ffn_parameters();
  // h + ffn(h) as {h, ffn(h)}: the FFN's output without a graph, its gradient from a recompute.
  ResidualStream ffn_recomputed_in_backward(const at::Tensor& h);

  int64_t ffn_chunk_tokens_ = 0;  // > 0: chunked FFN in training (checkpointed blocks only)
  bool recompute_ffn_ = false;
  int64_t recompute_chunk_tokens_ = 0;  // the FFN's chunk when recompute_ffn_ (0: one piece)
  bool fused_norms_ = false;
  double layer_norm_eps_ = 1e-5;
};
TORCH_MODULE(DecoderBlock);

class LongNetLMImpl : public torch::nn::Module {
 public:
  LongNetLMImpl(ModelConfig config, const AttentionMaker& make_attention);

  // tokens: [B, S] int64 -> final hidden states [B, S, E] (after the final LayerNorm).
  at::Tensor hidden_states(const at::Tensor& tokens, int64_t first_position);
  // Sum of cross-entropy over the positions with target >= 0 (targets [B, S] int64, -1 =
  // ignored), computed chunk by chunk so [B, S, V] logits never exist at once. Returns a
  // 0-dim tensor, float32 (float64 for a float64 model). Chunks with nothing to score are
  // skipped; which ones is read from `host_targets` (a CPU copy of targets, e.g. the batch the
  // trainer moved to the device) or from targets themselves when they are on the CPU, else from
  // one copy of them to the host: never a device sync per chunk.
  at::Tensor loss_sum(const at::Tensor& hidden, const at::Tensor& targets,
                      const at::Tensor& host_targets = at::Tensor());
  // hidden: [..., E] -> logits [..., V].
  at::Tensor logits(const at::Tensor& hidden) { return lm_head->forward(hidden); }

  const ModelConfig& config() const { return config_; }
  // Parameters that do matmul work per token (blocks + LM head), for the 6*N*T FLOP count.
  int64_t matmul_parameter_count();

  // Backward stages: stage i < num_layers is block i, stage num_layers the final LayerNorm and
  // the LM head (the embedding has none: backward reaches it last). Once set, every training
  // forward with grad arranges for `hook(stage)` to run when backward reaches the stage's input,
  // by which time the gradients of the stage's parameters are final (the autograd engine runs
  // gradient accumulation first); on the autograd thread, stages in decreasing order. For
  // reducing gradients during backward (GradientReducer). An empty hook removes it.
  using BackwardStageHook = std::function<void(size_t stage)>;
  void set_backward_stage_hook(BackwardStageHook hook) { stage_hook_ = std::move(hook); }
  // The parameters of each stage, in stage order.
  std::vector<std::vector<at::Tensor>> backward_stage_parameters();

  torch::nn::Embedding embed{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm final_ln{nullptr};
  torch::nn::Linear lm_head{nullptr};

 private:
  ModelConfig config_;
  std::vector<DecoderBlock> block_list_;
  bool block_checkpointed(size_t index) const;    // in training, with config_.checkpointing
  bool block_recomputes_ffn(size_t index) const;  // config_.recompute_ffn_layers
  // Registers stage_hook_(stage) on the gradient of `input`, the stage's input (see above).
  void watch_stage_input(const ResidualStream& input, size_t stage) const;
  BackwardStageHook stage_hook_;
};
TORCH_MODULE(LongNetLM);

}  // namespace ra
