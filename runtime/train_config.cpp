// Validation and printing of TrainConfig (see train_config.h).
#include "runtime/train_config.h"

#include <sstream>

#include "attention/factory.h"
#include "runtime/error.h"
#include "runtime/validation.h"

namespace ra {
namespace {

std::string list(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

}  // namespace

bool checkpointing_enabled(const TrainConfig& c) {
  return c.checkpointing == "on" ||
         (c.checkpointing == "auto" && c.seq_len >= kAutoCheckpointingSeqLen);
}

int64_t checkpointed_layers(const TrainConfig& c) {
  if (!checkpointing_enabled(c)) return 0;
  return c.checkpoint_layers < 0 ? c.layers : std::min(c.checkpoint_layers, c.layers);
}

std::string resolved_checkpoint_dtype(const TrainConfig& c, bool bf16_compute) {
  if (c.checkpoint_dtype != "auto") return c.checkpoint_dtype;
  return bf16_compute ? "bfloat16" : "float32";
}

double checkpoint_bytes_per_rank(const TrainConfig& c, int world_size,
                                 const std::string& checkpoint_dtype) {
  const double bytes_per_value = checkpoint_dtype == "bfloat16" ? 2.0 : 4.0;
  const double tokens_per_rank = double(c.batch_size) * double(c.seq_len) / double(world_size);
  return double(checkpointed_layers(c)) * tokens_per_rank * double(c.embed_dim) * bytes_per_value;
}

int64_t resolved_ffn_dim(const TrainConfig& c) {
  return c.ffn_dim > 0 ? c.ffn_dim : 4 * c.embed_dim;
}

void validate_train_config(const TrainConfig& c, int world_size) {
  RA_CHECK(c.seq_len > 0, "--seq-len = ", c.seq_len, ": must be positive");
  RA_CHECK(c.batch_size > 0, "--batch-size = ", c.batch_size, ": must be positive");
  RA_CHECK(c.layers > 0, "--layers = ", c.layers, ": must be positive");
  RA_CHECK(c.embed_dim > 0, "--embed-dim = ", c.embed_dim, ": must be positive");
  RA_CHECK(c.heads > 0 && c.embed_dim % c.heads == 0, "--heads = ", c.heads,
           ": must be positive and divide --embed-dim = ", c.embed_dim);
  RA_CHECK((c.embed_dim / c.heads) % 2 == 0, "--embed-dim / --heads = ", c.embed_dim / c.heads,
           ": the head dim must be even (rotary position embedding)");
  RA_CHECK(c.ffn_dim >= 0, "--ffn-dim = ", c.ffn_dim, ": must be >= 0 (0 = 4 x --embed-dim)");
  std::string variants;
  bool known_variant = false;
  for (const auto& name : attention_names()) {
    variants += (variants.empty() ? "" : ", ") + name;
    known_variant = known_variant || name == c.attention_variant;
  }
  RA_CHECK(known_variant, "--attention = '", c.attention_variant, "': allowed: ", variants);
  if (c.attention_variant == "sparse") {
    try {
      validate(c.sparse);
    } catch (const Error& e) {  // the shared rule, reported with the flags that set it
      RA_THROW("--attention sparse: ", e.message(),
               " (set by --sparse-block-size, --sparse-window, --sparse-global-tokens, "
               "--sparse-level-windows, --sparse-level-strides)");
    }
  }
  RA_CHECK(c.checkpointing == "auto" || c.checkpointing == "on" || c.checkpointing == "off",
           "--checkpointing = '", c.checkpointing, "': allowed: auto, on, off");
  RA_CHECK(c.checkpoint_layers >= -1 && c.checkpoint_layers <= c.layers,
           "--checkpoint-layers = ", c.checkpoint_layers, ": allowed: -1 (all) or 0..", c.layers,
           " (--layers)");
  RA_CHECK(c.checkpoint_layers == -1 || c.checkpointing != "off",
           "--checkpoint-layers = ", c.checkpoint_layers,
           " needs checkpointing: --checkpointing is off");
  RA_CHECK(
      c.recompute_ffn_layers >= 0 && c.recompute_ffn_layers <= c.layers - checkpointed_layers(c),
      "--recompute-ffn-layers = ", c.recompute_ffn_layers, ": allowed: 0..",
      c.layers - checkpointed_layers(c), " (the blocks that are not checkpointed: --layers ",
      c.layers, " minus ", checkpointed_layers(c), " checkpointed)");
  RA_CHECK(c.checkpoint_dtype == "auto" || c.checkpoint_dtype == "float32" ||
               c.checkpoint_dtype == "bfloat16",
           "--checkpoint-dtype = '", c.checkpoint_dtype,
           "': allowed: auto (bfloat16 with bf16 compute on CUDA, else the model dtype), "
           "float32, bfloat16");
  RA_CHECK(c.offload_checkpoints == "off" || c.offload_checkpoints == "on",
           "--offload-checkpoints = '", c.offload_checkpoints, "': allowed: off, on");
  RA_CHECK(c.fused_norms == "off" || c.fused_norms == "on", "--fused-norms = '", c.fused_norms,
           "': allowed: on, off");
  RA_CHECK(c.overlap_grad_reduce == "off" || c.overlap_grad_reduce == "on",
           "--overlap-grad-reduce = '", c.overlap_grad_reduce, "': allowed: on, off");
  RA_CHECK(c.dtype == "auto" || c.dtype == "fp32" || c.dtype == "bf16", "--dtype = '", c.dtype,
           "': allowed: auto (bf16 on GPU, fp32 on CPU), fp32, bf16");
  RA_CHECK(c.device == "auto" || c.device == "cpu" || c.device == "cuda", "--device = '", c.device,
           "': allowed: auto, cpu, cuda");
  const bool fused_kernel = c.attention.backend == AttentionBackend::kCudnn ||
                            c.attention.backend == AttentionBackend::kFlash;
  RA_CHECK(!fused_kernel || (c.device != "cpu" && c.dtype != "fp32"),
           "--attention-backend = ", to_string(c.attention.backend), " with --device ", c.device,
           " --dtype ", c.dtype,
           ": the cuDNN and flash kernels run on CUDA in bf16; use --attention-backend auto or "
           "reference here");
  RA_CHECK(c.steps > 0, "--steps = ", c.steps, ": must be positive");
  RA_CHECK(c.lr > 0, "--lr = ", c.lr, ": must be positive");
  RA_CHECK(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1, "--min-lr-ratio = ", c.min_lr_ratio,
           ": must be in [0, 1]");
  RA_CHECK(c.warmup >= 0, "--warmup = ", c.warmup, ": must be >= 0");
  RA_CHECK(c.weight_decay >= 0, "--weight-decay = ", c.weight_decay, ": must be >= 0");
  RA_CHECK(c.clip >= 0, "--clip = ", c.clip, ": must be >= 0 (0 = no clipping)");
  RA_CHECK(c.save_every >= 0, "--save-every = ", c.save_every, ": must be >= 0");
  RA_CHECK(c.save_every == 0 || !c.save_dir.empty(), "--save-every = ", c.save_every,
           ": needs --save-dir");
  RA_CHECK(c.resume != "auto" || !c.save_dir.empty(),
           "--resume = auto: needs --save-dir (the newest complete checkpoint there is loaded)");
  RA_CHECK(c.log_every > 0, "--log-every = ", c.log_every, ": must be positive");
  RA_CHECK(c.stop_after >= 0, "--stop-after = ", c.stop_after, ": must be >= 0 (0 = no limit)");
  RA_CHECK(c.eval_batches >= 0, "--eval-batches = ", c.eval_batches, ": must be >= 0");
  RA_CHECK(c.threads >= 0, "--threads = ", c.threads, ": must be >= 0 (0 = default)");
  RA_CHECK(c.profile_step >= 0, "--profile-step = ", c.profile_step,
           ": must be >= 0 (0 = no profiling)");
  RA_CHECK(c.profile_step == 0 || !c.profile_file.empty(),
           "--profile-file is empty: --profile-step needs a file to write the trace to");
  RA_CHECK(c.timeout_seconds > 0, "--timeout = ", c.timeout_seconds, ": must be positive");
  RA_CHECK(c.exchange_ctas >= 0 && c.exchange_ctas <= kMaxExchangeCtas,
           "--exchange-ctas = ", c.exchange_ctas, ": allowed 0 (NCCL's choice) to ",
           kMaxExchangeCtas);
  RA_CHECK(c.loss_chunk_tokens > 0, "--loss-chunk = ", c.loss_chunk_tokens, ": must be positive");
  RA_CHECK(c.data.rfind("synthetic", 0) == 0 || c.attention.causal, "--data = '", c.data,
           "': language modelling on a token file needs --causal "
           "(without it every position sees the token it predicts)");
  try {
    validate(c.attention);
  } catch (const Error& e) {
    RA_THROW("--segment-lengths / --dilation-rates / --head-mode: ", e.message());
  }
  try {
    validate_sharding(c.attention, c.seq_len, world_size);
  } catch (const Error& e) {
    RA_THROW("--seq-len = ", c.seq_len, " with ", world_size, " rank(s): ", e.message());
  }
}

std::string describe(const TrainConfig& c) {
  std::ostringstream os;
  os << "  seq-len = " << c.seq_len << "  batch-size = " << c.batch_size << "  steps = " << c.steps
     << "\n  model: layers = " << c.layers << "  embed-dim = " << c.embed_dim
     << "  heads = " << c.heads << "  ffn-dim = " << resolved_ffn_dim(c)
     << "\n  attention = " << c.attention_variant
     << (c.attention_variant == "allgather" ? "  exchange-ctas = " + std::to_string(c.exchange_ctas)
                                            : std::string())
     << "  segment-lengths = " << list(c.attention.segment_lengths)
     << "  dilation-rates = " << list(c.attention.dilation_rates)
     << "  head-mode = " << to_string(c.attention.head_mode)
     << "  attention-backend = " << to_string(c.attention.backend)
     << "  causal = " << (c.attention.causal ? "yes" : "no");
  if (c.attention_variant == "sparse") {
    os << "\n  sparse: pattern = " << to_string(c.sparse.pattern)
       << "  block-size = " << c.sparse.block_size << "  window = " << c.sparse.window
       << "  global-tokens = " << c.sparse.global_tokens;
  }
  os << "\n  checkpointing = " << c.checkpointing << " ("
     << (checkpointing_enabled(c) ? "on" : "off")
     << ")  checkpoint-layers = " << checkpointed_layers(c) << " of " << c.layers
     << "  recompute-ffn-layers = " << c.recompute_ffn_layers
     << "  checkpoint-dtype = " << c.checkpoint_dtype
     << "  offload-checkpoints = " << c.offload_checkpoints << "  fused-norms = " << c.fused_norms
     << "\n  dtype = " << c.dtype << "  device = " << c.device
     << "  loss-chunk = " << c.loss_chunk_tokens << "\n  optimizer: AdamW lr = " << c.lr
     << "  min-lr-ratio = " << c.min_lr_ratio << "  warmup = " << c.warmup
     << "  weight-decay = " << c.weight_decay << "  betas = (" << c.beta1 << ", " << c.beta2
     << ")  clip = " << c.clip << "  overlap-grad-reduce = " << c.overlap_grad_reduce
     << "  seed = " << c.seed << "\n  data = " << c.data
     << "  save-dir = " << (c.save_dir.empty() ? "(none)" : c.save_dir)
     << "  save-every = " << c.save_every << "  resume = " << c.resume
     << "\n  log-every = " << c.log_every
     << "  metrics-file = " << (c.metrics_file.empty() ? "(none)" : c.metrics_file)
     << "  eval-batches = " << c.eval_batches << "  stop-after = " << c.stop_after
     << "  threads = " << c.threads << "  timeout = " << c.timeout_seconds << " s";
  if (c.profile_step > 0) {
    os << "\n  profile-step = " << c.profile_step << "  profile-file = " << c.profile_file;
  }
  return os.str();
}

}  // namespace ra
