// The one validation layer every attention variant calls before it does any work.
// Each check throws ra::Error naming the argument, the offending value and what is allowed,
// so a bad flag or a bad tensor fails the same way whichever variant the user picked.
#pragma once

#include <ATen/core/Tensor.h>

#include "runtime/config.h"

namespace ra {

// Largest head dim the fused GPU kernels accept (cuDNN / flash attention on sm_90).
inline constexpr int64_t kMaxFastPathHeadDim = 256;
// Largest RingConfig::exchange_ctas (NCCL's channel limit).
inline constexpr int kMaxExchangeCtas = 64;

void validate(const DilatedAttentionConfig& config);
void validate(const MultiheadConfig& config);
void validate(const RingConfig& config);
void validate(const SparseConfig& config);

// S must be a multiple of every clipped segment length min(w_i, S).
void validate_sequence_length(const DilatedAttentionConfig& config, int64_t seq_len);

// The global sequence is split into world_size equal shards; also checks the segment rule
// on the global length.
void validate_sharding(const DilatedAttentionConfig& config, int64_t global_seq_len,
                       int world_size);

// The layout of a sharded sequence: RingConfig::zigzag only for dense causal attention (one
// branch, w >= S, r = 1) with S a multiple of 2 * world_size.
void validate_ring_layout(const DilatedAttentionConfig& config, const RingConfig& ring,
                          int64_t global_seq_len, int world_size);

// Head dims the fused kernels accept: a multiple of 8, at most kMaxFastPathHeadDim.
void validate_fast_path_head_dim(int64_t head_dim);

// Block-sparse attention over a global sequence of seq_len tokens split over world_size ranks:
// S and the shard S/P are multiples of block_size; the `dilated` pattern needs every clipped
// segment length to be a multiple of block_size; `custom` needs an (S/b)^2 block mask.
void validate_sparse_sequence(const SparseConfig& sparse, const DilatedAttentionConfig& config,
                              int64_t seq_len, int world_size = 1);

// The tensor rules of validate_attention_inputs without the segment-length rule (for variants
// whose sequence rules differ, such as the block-sparse one).
void validate_attention_tensors(const DilatedAttentionConfig& config, const at::Tensor& q,
                                const at::Tensor& k, const at::Tensor& v);

// q, k, v: [B, S, H, D] (k and v may have fewer heads, H_kv dividing H), one floating dtype,
// one device; values finite when config.check_finite. Also applies validate_sequence_length.
void validate_attention_inputs(const DilatedAttentionConfig& config, const at::Tensor& q,
                               const at::Tensor& k, const at::Tensor& v);

}  // namespace ra
