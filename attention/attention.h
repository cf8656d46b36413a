// The interface every attention variant implements (standard, ring, allgather, sparse).
// A variant owns a validated config and maps q, k, v [B, S, H, D] to the attention output and
// its log-sum-exp; the factory (attention/factory.h) creates variants by name.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "runtime/config.h"

namespace ra {

struct AttentionResult {
  at::Tensor out;  // [B, S, H, D], the input dtype; differentiable w.r.t. q, k, v
  at::Tensor lse;  // [B, S, H], float32 (float64 for float64 inputs); -inf where no key is
                   // attended; not differentiable (like the fused kernels' LSE)
};

class DilatedAttentionBase {
 public:
  explicit DilatedAttentionBase(DilatedAttentionConfig config);
  virtual ~DilatedAttentionBase() = default;

  // q: [B, S, H, D]; k, v: [B, S, H_kv, D] with H_kv dividing H. For sequence-parallel
  // variants S is this rank's shard and the result is this rank's shard of the output.
  virtual AttentionResult forward(const at::Tensor& q, const at::Tensor& k,
                                  const at::Tensor& v) = 0;
  virtual std::string name() const = 0;

  at::Tensor operator()(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    return forward(q, k, v).out;
  }

  const DilatedAttentionConfig& config() const { return config_; }
  void train(bool on = true) { training_ = on; }  // dropout is active only in training
  bool is_training() const { return training_; }

 protected:
  DilatedAttentionConfig config_;
  bool training_ = false;
};

}  // namespace ra
