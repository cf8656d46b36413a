// DilatedAttention: dilated attention of a whole sequence on one device (factory name
// "standard"). Picks the backend per call: the fused GPU path for CUDA fp16/bf16 inputs when
// the build has it (attention/standard/fused_*), otherwise the exact torch-op reference.
#pragma once

#include "attention/attention.h"

namespace ra {

// Whether the fused GPU kernels run these inputs: a build with the fused path, CUDA fp16/bf16 q,
// a head dim the kernels take, backend not `reference`, no dropout. Otherwise the reference runs
// (or, for an explicit cudnn/flash backend, DilatedAttention raises an error).
bool fused_path_applies(const DilatedAttentionConfig& config, const at::Tensor& q, bool dropout);

class DilatedAttention : public DilatedAttentionBase {
 public:
  explicit DilatedAttention(DilatedAttentionConfig config);

  AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
  std::string name() const override { return "standard"; }
};

}  // namespace ra
