// The fused GPU path of DilatedAttention (DESIGN.md "Fast path on GPU"): per branch head group
// the kept rows go to ATen's fused attention (cuDNN or flash) as a strided view or a gathered
// copy, one fp32 kernel merges all branches, and a custom autograd function runs each group's
// fused backward with the merged out and lse. Built only with a CUDA LibTorch
// (RA_HAS_FUSED_ATTENTION).
#pragma once

#include <array>

#include "attention/attention.h"
#include "attention/standard/dilation_plan.h"
#include "runtime/torch_compat.h"

namespace ra {

// How the kept rows reach the fused kernels. kAuto: the strided view, falling back to a
// gathered copy for the rest of the process if a kernel rejects the view.
enum class FusedInputLayout { kAuto, kStridedView, kGathered };
void set_fused_input_layout(FusedInputLayout layout);  // process-wide; for benchmarks

// The backward runs each branch head group in chunks of segment rows whose gradient
// temporaries stay near this many bytes; 0 (default): max(192 MiB, |q| / 32). Process-wide;
// tests set it small to run the chunked path on small inputs.
void set_fused_backward_chunk_bytes(int64_t bytes);

// q: [B, S, H, D]; k, v: [B, S, H_kv, D]; CUDA fp16/bf16, validated by
// validate_attention_inputs. config.backend picks the kernel: cudnn, flash, or auto (cuDNN for
// D <= 128, else flash; flash also when cuDNN rejects a shape). Head groups that keep one row per
// segment always run on flash (cuDNN takes no one-row blocks). No dropout. Returns out
// [B, S, H, D] (differentiable w.r.t. q, k, v) and lse [B, S, H] fp32.
AttentionResult fused_dilated_attention(const DilatedAttentionConfig& config, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v);

// The two halves of the fused path, for a caller that merges more branches into the result and
// drives backward itself (the ring's shard-local branches: attention/ring/
// sharded_dilated_attention.cpp). They run the branches of `plan`, which may be a subset of a
// config's plan: BranchPlan::index must then be the branch's position in plan.branches, and
// every segment must divide S = q.size(1).
struct FusedPlanSpec {
  DilationPlan plan;
  HeadMode head_mode = HeadMode::kAll;  // how plan's head groups were made
  double scale = 1.0;                   // softmax scale
  bool causal = false;
};
// What the backward needs from the forward's kernels.
struct FusedKernelState {
  compat::FusedOp kernel = compat::FusedOp::kCudnn;
  at::Tensor philox_seed, philox_offset;
  int64_t lse_dim = 3;  // the kernel's lse layout: [N, h, L] (3) or [N, h, L, 1] (4)
};
struct FusedPlanForward {
  at::Tensor out;  // [B, S, H, D] input dtype: plan.output_scale x the merge (0 where no branch
                   // keeps a (token, head))
  at::Tensor lse;  // [B, S, H] fp32 of the unscaled merge (-inf where no branch keeps it)
  FusedKernelState state;
};
// q, k, v: [B, S, H, D] contiguous CUDA fp16/bf16, one shape (GQA callers expand k, v). backend:
// as fused_dilated_attention's config.backend.
FusedPlanForward fused_plan_forward(const FusedPlanSpec& spec, AttentionBackend backend,
                                    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);
// The plan's branches' share of dq, dk, dv ([B, S, H, D], input dtype) for a merge whose output
// is out = plan.output_scale x merge and whose lse [B, S, H] (fp32) may include other branches
// (one joint softmax over all of them, as in the fused backward), given grad_out = d loss / d out.
// out and grad_out: q's shape and dtype; out contiguous.
std::array<at::Tensor, 3> fused_plan_backward(const FusedPlanSpec& spec,
                                              const FusedKernelState& state, const at::Tensor& q,
                                              const at::Tensor& k, const at::Tensor& v,
                                              const at::Tensor& out, const at::Tensor& lse,
                                              const at::Tensor& grad_out);

}  // namespace ra
