// TrainConfig: every setting of a ring_train run, resolved (defaults applied). The CLI fills it
// from flags or a --config file; validate_train_config checks all of it against the world size
// before any work starts, with messages naming the flag, so every rank fails the same way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config.h"

namespace ra {

struct TrainConfig {
  // Model
  int64_t seq_len = 0;  // global tokens per sequence, S
  int64_t batch_size = 1;
  int64_t layers = 12;
  int64_t embed_dim = 768;
  int64_t heads = 12;
  int64_t ffn_dim = 0;  // 0 -> 4 * embed_dim
  DilatedAttentionConfig attention;
  std::string attention_variant = "ring";  // exact at any world size; "standard" is shard-local
  int exchange_ctas = RingConfig{}.exchange_ctas;  // allgather: CTAs of the dK/dV exchange
  SparseConfig sparse;                             // --attention sparse: the block pattern
  std::string checkpointing = "auto";              // auto | on | off
  int64_t checkpoint_layers = -1;         // with checkpointing: the first N blocks; -1 = all
  int64_t recompute_ffn_layers = 0;       // the next N blocks keep no FFN activations (recomputed)
  std::string checkpoint_dtype = "auto";  // auto | float32 | bfloat16 (saved block inputs)
  std::string offload_checkpoints = "off";  // off | on (saved block inputs in host memory)
  std::string fused_norms = "on";           // on | off (one-pass LayerNorm kernels, GELU folded)
  std::string dtype = "auto";               // auto | fp32 | bf16
  std::string device = "auto";              // auto | cpu | cuda
  int64_t loss_chunk_tokens = 4096;
  // Optimisation
  int64_t steps = 100;
  double lr = 3e-4;
  double min_lr_ratio = 0.1;
  int64_t warmup = 0;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95;
  double clip = 1.0;  // max global grad norm; 0 = no clipping
  // on | off: gradients summed over ranks block by block during backward (GradientReducer on a
  // communicator of its own) instead of after it
  std::string overlap_grad_reduce = "on";
  uint64_t seed = 0;
  // Data, checkpoints, logging
  std::string data = "synthetic:kv";
  std::string save_dir;
  int64_t save_every = 0;       // 0 = only at the end when --save-dir is set
  std::string resume = "none";  // none | auto (newest complete in --save-dir) | a checkpoint dir
  int64_t log_every = 1;
  std::string metrics_file;
  int64_t eval_batches = 0;  // batches scored after training (synthetic tasks)
  int64_t stop_after = 0;    // train at most this many steps in this job, then save and exit
                             // (time-limited jobs resume with --resume auto); 0 = no limit
  int threads = 0;           // intra-op CPU threads per rank; 0 = LibTorch's default
  double timeout_seconds = 300;
  int64_t profile_step = 0;  // > 0: rank 0 records this step's kernels (Kineto) to profile_file
  std::string profile_file = "ring_train_profile.json";
};

// Minimum global sequence length at which checkpointing=auto turns per-block checkpointing on.
inline constexpr int64_t kAutoCheckpointingSeqLen = 64 * 1024;

// Throws ra::Error naming the flag. world_size: ranks in the job (the sequence is split P ways).
void validate_train_config(const TrainConfig& config, int world_size);

bool checkpointing_enabled(const TrainConfig& config);
// How many blocks are checkpointed: 0 when checkpointing is off, else --checkpoint-layers
// (all for -1).
int64_t checkpointed_layers(const TrainConfig& config);
// "float32" or "bfloat16": auto = bfloat16 when the run computes in bf16 (on CUDA), else the
// model dtype (float32).
std::string resolved_checkpoint_dtype(const TrainConfig& config, bool bf16_compute);
// Bytes of the per-block checkpoints (one saved input per layer) on each rank:
// layers x batch x S/P x embed-dim x bytes per value of the checkpoint dtype.
double checkpoint_bytes_per_rank(const TrainConfig& config, int world_size,
                                 const std::string& checkpoint_dtype);
int64_t resolved_ffn_dim(const TrainConfig& config);

// "key = value" lines of the resolved config (what rank 0 prints at start).
std::string describe(const TrainConfig& config);

}  // namespace ra
