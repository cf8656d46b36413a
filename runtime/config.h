// Configuration of every attention variant, in one place.
// These are plain structs: the factory, the CLI and the C++ API fill them, and the validation
// layer (runtime/validation.h) checks them the same way for every variant. Nothing here
// depends on LibTorch, CUDA or MPI.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ra {

// How heads use the branches (DESIGN.md "Dilated attention: the math").
enum class HeadMode {
  kAll,        // paper semantics: every head uses every branch, offset = head mod rate
  kPartition,  // seed semantics: heads split into one group per branch, output divided by G
};

// Which kernel computes attention on one device.
enum class AttentionBackend {
  kAuto,       // fused GPU kernels for CUDA fp16/bf16 inputs where built, else the reference
  kReference,  // torch ops, any device and dtype (exact, slow, memory-hungry)
  kCudnn,      // cuDNN fused attention through ATen (CUDA, fp16/bf16)
  kFlash,      // flash attention through ATen (CUDA, fp16/bf16)
};

// Dilated attention: a list of branches (segment length w_i, dilation rate r_i).
struct DilatedAttentionConfig {
  std::vector<int64_t> segment_lengths;  // w_i, clipped to the sequence length at run time
  std::vector<int64_t> dilation_rates;   // r_i
  std::optional<double> softmax_scale;   // default 1/sqrt(head_dim)
  double dropout = 0.0;                  // on attention probabilities, training only
  bool causal = false;
  HeadMode head_mode = HeadMode::kAll;
  bool check_finite = false;  // reject NaN/Inf inputs (one extra pass over q, k, v)
  AttentionBackend backend = AttentionBackend::kAuto;
};

// Multihead wrapper around a dilated attention (MAGNETO / LongNet block attention).
struct MultiheadConfig {
  int64_t embed_dim = 0;
  int64_t num_heads = 0;
  bool bias = true;
  bool fused_qkv = false;  // one [3E, E] projection instead of three [E, E]
  bool sub_ln = true;      // LayerNorm on the attention output before out_proj (MAGNETO)
  double layer_norm_eps = 1e-5;
  double gamma_init = 1.0;  // xavier gain for v_proj and out_proj
  bool qk_norm = false;     // LayerNorm on q and k per head
  // The LayerNorms (sub_ln, qk_norm) as ringattn's one-pass kernels where they apply (CUDA
  // fp16/bf16, attention/standard/layer_norm_op.h); false = torch::nn::LayerNorm's.
  bool fused_norms = true;
  DilatedAttentionConfig attention;
};

// Sequence-parallel (ring) attention across ranks.
enum class RingStrategy {
  kRing,       // pass dilated K/V blocks around the segment's ranks, merge online by LSE
  kAllGather,  // LongNet: all-gather dilated K/V in the segment group
};

struct RingConfig {
  RingStrategy strategy = RingStrategy::kRing;
  bool zigzag = false;  // balanced layout for dense causal attention (w = S, r = 1)
  // Spanning head groups of one branch that keep as many rows of every chunk run stacked: one
  // block call and one K/V message per hop for all of them (sharded_dilated_attention.cpp).
  // false: one per head group (the reference for benchmarks).
  bool stack_head_groups = true;
  // Causal segments that span ranks: the ring computes in the mirror layout (member i holds its
  // first shard half and its mirror's second, ShardTask::home_chunks), so every member does the
  // same work at every hop; false: the plain layout (member i attends i + 1 of the m shards).
  bool balance_causal = true;
  // No checkpointing switch: the backward always re-runs the ring (K/V travel again, dK/dV
  // return to their owners), so the forward keeps only q, k, v, out and lse of the local shard.
  double timeout_seconds = 300;  // deadline for every blocking communication wait
  // CTAs (SMs) the NCCL kernels of the allgather strategy's backward dK/dV exchange may use
  // (0: NCCL's choice, on the group's communicator; else a duplicate capped at that many). The
  // exchange runs beside a whole block computation, and cuDNN's persistent backward kernels
  // looked slowed by the SMs NCCL took from them in a traced step (128K on 4 x H100: 92 ms of
  // backward calls beside NCCL's default channels, 79 ms with every NCCL kernel capped at 2
  // CTAs), but timed steps do not confirm it (PERFORMANCE.md, session 14: 2 CTAs 115.9 / 116.2
  // vs 115.6 / 115.8 ms at 128K on 4 x H100, 1817.4 vs 1816.4 at 512K; the same on 2 x H200),
  // so the default is NCCL's choice; the cap is there to try on other machines.
  int exchange_ctas = 0;
};

// Block-sparse dilated attention.
enum class SparsePattern { kLocalWindow, kDilated, kGlobalLocal, kHierarchical, kCustom };

struct SparseConfig {
  SparsePattern pattern = SparsePattern::kLocalWindow;
  int64_t block_size = 64;    // tokens per query/key block: 64 or 128
  double sparsity = 0.9;      // target fraction of inactive blocks (adaptive patterns)
  int64_t window = 512;       // local window in tokens
  int64_t global_tokens = 0;  // leading tokens that attend to / are attended by all
  // hierarchical: levels (window_l, stride_l) in tokens; key block j is active for query
  // block i when |i - j| * block_size < window_l and |i - j| * block_size is a multiple of
  // stride_l (a multiple of block_size). Levels are combined (union).
  std::vector<int64_t> level_windows;
  std::vector<int64_t> level_strides;
  // custom: row-major [S/block_size, S/block_size] block mask, nonzero = active (global S).
  std::vector<uint8_t> custom_block_mask;
};

// Where this process sits in the job. Discovered from MPI, never set by users.
struct DistributedConfig {
  int world_size = 1;
  int rank = 0;
  int local_rank = 0;
  int local_size = 1;
};

std::string to_string(HeadMode mode);
std::string to_string(AttentionBackend backend);
std::string to_string(RingStrategy strategy);
std::string to_string(SparsePattern pattern);

// Parse the names above ("all", "partition", "ring", "allgather", "local_window", ...).
// `arg` names the option in the error, e.g. "--head-mode".
HeadMode parse_head_mode(const std::string& text, const std::string& arg = "head_mode");
AttentionBackend parse_backend(const std::string& text, const std::string& arg = "backend");
RingStrategy parse_ring_strategy(const std::string& text, const std::string& arg = "strategy");
SparsePattern parse_sparse_pattern(const std::string& text, const std::string& arg = "pattern");

// One-line description of a config, for logs: "w=[2048,4096] r=[1,2] causal head_mode=all".
std::string describe(const DilatedAttentionConfig& config);

}  // namespace ra
