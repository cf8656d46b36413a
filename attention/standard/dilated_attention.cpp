// DilatedAttention::forward: validate, choose the backend, run.
#include "attention/standard/dilated_attention.h"

#include "attention/standard/reference_attention.h"
#include "runtime/error.h"
#include "runtime/validation.h"

namespace ra {

DilatedAttention::DilatedAttention(DilatedAttentionConfig config)
    : DilatedAttentionBase(std::move(config)) {}

AttentionResult DilatedAttention::forward(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v) {
  validate_attention_inputs(config_, q, k, v);
  const AttentionBackend backend = config_.backend;
  if (backend == AttentionBackend::kCudnn || backend == AttentionBackend::kFlash) {
    RA_THROW_HINT("use backend=auto or backend=reference",
                  "backend = ", to_string(backend),
                  ": this build has no fused GPU attention path (it needs a CUDA build of "
                  "LibTorch >= 2.1 and CUDA inputs)");
  }
  return dilated_attention_reference(config_, q, k, v, training_);
}

}  // namespace ra
