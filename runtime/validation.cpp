// Checks shared by every variant; messages say "<argument> = <value>: <what is allowed>".
#include "runtime/validation.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "runtime/error.h"

namespace ra {
namespace {

std::string shape_of(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

void check_positive_list(const std::vector<int64_t>& values, const char* name) {
  RA_CHECK(!values.empty(), name, " is empty: give at least one value");
  for (size_t i = 0; i < values.size(); ++i) {
    RA_CHECK(values[i] > 0, name, "[", i, "] = ", values[i], ": must be a positive integer");
  }
}

}  // namespace

void validate(const DilatedAttentionConfig& config) {
  check_positive_list(config.segment_lengths, "segment_lengths");
  check_positive_list(config.dilation_rates, "dilation_rates");
  RA_CHECK(config.segment_lengths.size() == config.dilation_rates.size(), "segment_lengths has ",
           config.segment_lengths.size(), " values but dilation_rates has ",
           config.dilation_rates.size(), ": give one dilation rate per segment length");
  RA_CHECK(config.dropout >= 0.0 && config.dropout < 1.0, "dropout = ", config.dropout,
           ": must be in [0, 1)");
  if (config.softmax_scale) {
    double s = *config.softmax_scale;
    RA_CHECK(std::isfinite(s) && s > 0, "softmax_scale = ", s,
             ": must be a finite positive number (or unset for 1/sqrt(head_dim))");
  }
}

void validate(const MultiheadConfig& config) {
  RA_CHECK(config.embed_dim > 0, "embed_dim = ", config.embed_dim, ": must be positive");
  RA_CHECK(config.num_heads > 0, "num_heads = ", config.num_heads, ": must be positive");
  RA_CHECK(config.embed_dim % config.num_heads == 0, "embed_dim = ", config.embed_dim,
           " is not divisible by num_heads = ", config.num_heads,
           ": head_dim = embed_dim / num_heads must be an integer");
  RA_CHECK(config.layer_norm_eps > 0 && std::isfinite(config.layer_norm_eps),
           "layer_norm_eps = ", config.layer_norm_eps, ": must be a finite positive number");
  RA_CHECK(config.gamma_init > 0 && std::isfinite(config.gamma_init),
           "gamma_init = ", config.gamma_init, ": must be a finite positive number");
  validate(config.attention);
}

void validate(const RingConfig& config) {
  RA_CHECK(config.timeout_seconds > 0 && std::isfinite(config.timeout_seconds),
           "timeout_seconds = ", config.timeout_seconds, ": must be a finite positive number");
  RA_CHECK(config.exchange_ctas >= 0 && config.exchange_ctas <= kMaxExchangeCtas,
           "exchange_ctas = ", config.exchange_ctas, ": allowed 0 (NCCL's choice) to ",
           kMaxExchangeCtas);
}

void validate(const SparseConfig& config) {
  const int64_t b = config.block_size;
  RA_CHECK(b == 16 || b == 32 || b == 64 || b == 128, "block_size = ", b,
           ": allowed 16, 32, 64 or 128 (the CUDA kernels take 64 or 128)");
  RA_CHECK(config.sparsity >= 0.0 && config.sparsity < 1.0, "sparsity = ", config.sparsity,
           ": must be in [0, 1)");
  RA_CHECK(config.window > 0, "window = ", config.window, ": must be a positive token count");
  RA_CHECK(config.global_tokens >= 0, "global_tokens = ", config.global_tokens, ": must be >= 0");
  RA_CHECK(config.level_windows.size() == config.level_strides.size(), "level_windows has ",
           config.level_windows.size(), " values but level_strides has ",
           config.level_strides.size(), ": give one stride per hierarchical level");
  for (size_t i = 0; i < config.level_windows.size(); ++i) {
    RA_CHECK(config.level_windows[i] > 0, "level_windows[", i, "] = ", config.level_windows[i],
             ": must be a positive token count");
    RA_CHECK(config.level_strides[i] > 0 && config.level_strides[i] % b == 0, "level_strides[", i,
             "] = ", config.level_strides[i], ": must be a positive multiple of block_size = ", b);
  }
  if (config.pattern == SparsePattern::kHierarchical) {
    RA_CHECK(!config.level_windows.empty(),
             "level_windows is empty: the hierarchical pattern needs at least one "
             "(window, stride) level");
  }
  if (config.pattern == SparsePattern::kCustom) {
    RA_CHECK(!config.custom_block_mask.empty(),
             "custom_block_mask is empty: the custom pattern needs an (S/block_size)^2 mask");
  }
}

void validate_sparse_sequence(const SparseConfig& sparse, const DilatedAttentionConfig& config,
                              int64_t seq_len, int world_size) {
  const int64_t b = sparse.block_size;
  RA_CHECK(world_size > 0, "world size = ", world_size, ": must be positive");
  RA_CHECK(seq_len > 0 && seq_len % b == 0, "sequence length S = ", seq_len,
           ": must be a positive multiple of block_size = ", b);
  RA_CHECK((seq_len / b) % world_size == 0, "sequence length S = ", seq_len,
           " over P = ", world_size, " ranks: each shard S/P must be a whole number of blocks of ",
           b, " tokens");
  if (sparse.pattern == SparsePattern::kDilated) {
    for (size_t i = 0; i < config.segment_lengths.size(); ++i) {
      const int64_t w = std::min(config.segment_lengths[i], seq_len);
      RA_CHECK(w % b == 0 && seq_len % w == 0, "segment_lengths[", i,
               "] = ", config.segment_lengths[i], " with S = ", seq_len,
               ": the dilated block pattern needs min(w, S) to be a multiple of block_size = ", b,
               " and to divide S");
    }
  }
  if (sparse.pattern == SparsePattern::kCustom) {
    const int64_t nb = seq_len / b;
    RA_CHECK(static_cast<int64_t>(sparse.custom_block_mask.size()) == nb * nb,
             "custom_block_mask has ", sparse.custom_block_mask.size(), " entries: S = ", seq_len,
             " with block_size = ", b, " needs (S/block_size)^2 = ", nb * nb);
  }
}

void validate_sequence_length(const DilatedAttentionConfig& config, int64_t seq_len) {
  RA_CHECK(seq_len > 0, "sequence length = ", seq_len, ": must be positive");
  for (size_t i = 0; i < config.segment_lengths.size(); ++i) {
    const int64_t w = std::min(config.segment_lengths[i], seq_len);
    RA_CHECK(seq_len % w == 0, "sequence length S = ", seq_len,
             " is not a multiple of segment_lengths[", i, "] = ", config.segment_lengths[i],
             ": S must be a multiple of every segment length not larger than S");
  }
}

void validate_sharding(const DilatedAttentionConfig& config, int64_t global_seq_len,
                       int world_size) {
  RA_CHECK(world_size > 0, "world size = ", world_size, ": must be positive");
  RA_CHECK(global_seq_len % world_size == 0, "sequence length S = ", global_seq_len,
           " is not divisible by the number of ranks P = ", world_size,
           ": each rank holds S/P tokens, so S must be a multiple of P");
  validate_sequence_length(config, global_seq_len);
  const int64_t shard = global_seq_len / world_size;
  for (size_t i = 0; i < config.segment_lengths.size(); ++i) {
    const int64_t w = std::min(config.segment_lengths[i], global_seq_len);
    // A segment either fits in a shard (local) or spans a whole number of shards.
    RA_CHECK(w <= shard ? shard % w == 0 : w % shard == 0, "segment_lengths[", i,
             "] = ", config.segment_lengths[i], " and the shard length S/P = ", shard,
             ": a segment must divide the shard or be a multiple of it");
  }
}

void validate_ring_layout(const DilatedAttentionConfig& config, const RingConfig& ring,
                          int64_t global_seq_len, int world_size) {
  if (!ring.zigzag) return;
  const bool dense_causal = config.segment_lengths.size() == 1 &&
                            config.segment_lengths[0] >= global_seq_len &&
                            config.dilation_rates[0] == 1 && config.causal;
  RA_CHECK(dense_causal, "zigzag = true with ", describe(config), " and S = ", global_seq_len,
           ": the zigzag layout is only for dense causal attention (one branch with "
           "w >= S, r = 1, causal); use zigzag = false");
  RA_CHECK(global_seq_len % (2 * world_size) == 0, "sequence length S = ", global_seq_len,
           ": the zigzag layout needs a multiple of 2P = ", 2 * world_size);
}

void validate_fast_path_head_dim(int64_t head_dim) {
  RA_CHECK(head_dim % 8 == 0 && head_dim > 0 && head_dim <= kMaxFastPathHeadDim,
           "head_dim = ", head_dim, ": the fused GPU kernels need a multiple of 8 up to ",
           kMaxFastPathHeadDim);
}

void validate_attention_inputs(const DilatedAttentionConfig& config, const at::Tensor& q,
                               const at::Tensor& k, const at::Tensor& v) {
  validate_attention_tensors(config, q, k, v);
  validate_sequence_length(config, q.size(1));
}

void validate_attention_tensors(const DilatedAttentionConfig& config, const at::Tensor& q,
                                const at::Tensor& k, const at::Tensor& v) {
  const std::pair<const char*, const at::Tensor*> all[] = {{"q", &q}, {"k", &k}, {"v", &v}};
  for (const auto& [name, t] : all) {
    RA_CHECK(t->defined(), name, " is an undefined tensor");
    RA_CHECK(t->dim() == 4, name, " has shape ", shape_of(*t),
             ": expected 4 dims [batch, seq_len, heads, head_dim]");
    RA_CHECK(at::isFloatingType(t->scalar_type()), name, " has dtype ", t->scalar_type(),
             ": expected float64, float32, float16 or bfloat16");
    RA_CHECK(t->scalar_type() == q.scalar_type(), name, " has dtype ", t->scalar_type(),
             " but q has ", q.scalar_type(), ": q, k and v must share one dtype");
    RA_CHECK(t->device() == q.device(), name, " is on ", t->device(), " but q is on ", q.device(),
             ": q, k and v must be on one device");
    RA_CHECK(t->numel() > 0, name, " has shape ", shape_of(*t), ": must not be empty");
  }
  RA_CHECK(k.sizes() == v.sizes(), "k has shape ", shape_of(k), " but v has ", shape_of(v),
           ": k and v must have the same shape");
  RA_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3),
           "k has shape ", shape_of(k), " but q has ", shape_of(q),
           ": batch, seq_len and head_dim must match");
  RA_CHECK(q.size(2) % k.size(2) == 0, "k has ", k.size(2), " heads and q has ", q.size(2),
           ": the number of k/v heads must divide the number of q heads (GQA)");
  if (config.check_finite) {
    for (const auto& [name, t] : all) {
      RA_CHECK(at::isfinite(*t).all().item<bool>(), name,
               " contains NaN or Inf values: inputs must be finite");
    }
  }
}

}  // namespace ra
