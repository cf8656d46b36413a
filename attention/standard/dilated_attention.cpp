// DilatedAttention::forward: validate, choose the backend, run.
#include "attention/standard/dilated_attention.h"

#include "attention/standard/reference_attention.h"
#ifdef RA_HAS_FUSED_ATTENTION
#include "attention/standard/fused_dilated_attention.h"
#endif
#include "runtime/error.h"
#include "runtime/validation.h"

namespace ra {

bool fused_path_applies(const DilatedAttentionConfig& config, const at::Tensor& q, bool dropout) {
#ifdef RA_HAS_FUSED_ATTENTION
  const bool half = q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16;
  const int64_t head_dim = q.size(3);
  const bool head_dim_ok = head_dim % 8 == 0 && head_dim <= kMaxFastPathHeadDim;
  return config.backend != AttentionBackend::kReference && q.is_cuda() && half && !dropout &&
         head_dim_ok;
#else
  (void)config, (void)q, (void)dropout;
  return false;
#endif
}

DilatedAttention::DilatedAttention(DilatedAttentionConfig config)
    : DilatedAttentionBase(std::move(config)) {}

AttentionResult DilatedAttention::forward(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v) {
  validate_attention_inputs(config_, q, k, v);
  const AttentionBackend backend = config_.backend;
  const bool fused_kernel =
      backend == AttentionBackend::kCudnn || backend == AttentionBackend::kFlash;
#ifdef RA_HAS_FUSED_ATTENTION
  // fp16/bf16 on CUDA: fused kernels. fp32/fp64 on CUDA fall back to the reference (exact,
  // slower); dropout is not in the fused path, so it also takes the reference.
  // Head dims the kernels do not take: an error for an explicit kernel, the reference for auto.
  const bool half = q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16;
  const bool dropout = training_ && config_.dropout > 0;
  if (fused_kernel && q.is_cuda() && half) validate_fast_path_head_dim(q.size(3));
  if (fused_path_applies(config_, q, dropout)) return fused_dilated_attention(config_, q, k, v);
  if (fused_kernel && (!q.is_cuda() || (half && dropout))) {
    RA_THROW_HINT("use backend=auto or backend=reference", "backend = ", to_string(backend),
                  ": the fused kernels need CUDA inputs and no dropout (got ", q.device(),
                  ", dropout ", dropout ? config_.dropout : 0.0, ")");
  }
#else
  if (fused_kernel) {
    RA_THROW_HINT("use backend=auto or backend=reference", "backend = ", to_string(backend),
                  ": this build has no fused GPU attention path (it needs a CUDA build of "
                  "LibTorch >= 2.1 and CUDA inputs)");
  }
#endif
  return dilated_attention_reference(config_, q, k, v, training_);
}

}  // namespace ra
