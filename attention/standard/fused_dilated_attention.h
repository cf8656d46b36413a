// The fused GPU path of DilatedAttention (DESIGN.md "Fast path on GPU"): per branch head group
// the kept rows go to ATen's fused attention (cuDNN or flash) as a strided view or a gathered
// copy, one fp32 kernel merges all branches, and a custom autograd function runs each group's
// fused backward with the merged out and lse. Built only with a CUDA LibTorch
// (RA_HAS_FUSED_ATTENTION).
#pragma once

#include "attention/attention.h"

namespace ra {

// How the kept rows reach the fused kernels. kAuto: the strided view, falling back to a
// gathered copy for the rest of the process if a kernel rejects the view.
enum class FusedInputLayout { kAuto, kStridedView, kGathered };
void set_fused_input_layout(FusedInputLayout layout);  // process-wide; for benchmarks

// The backward runs each branch head group in chunks of segment rows whose gradient
// temporaries stay near this many bytes; 0 (default): max(64 MiB, |q| / 32). Process-wide;
// tests set it small to run the chunked path on small inputs.
void set_fused_backward_chunk_bytes(int64_t bytes);

// q: [B, S, H, D]; k, v: [B, S, H_kv, D]; CUDA fp16/bf16, validated by
// validate_attention_inputs. config.backend picks the kernel: cudnn, flash, or auto (cuDNN for
// D <= 128, else flash; flash also when cuDNN rejects a shape). No dropout. Returns out
// [B, S, H, D] (differentiable w.r.t. q, k, v) and lse [B, S, H] fp32.
AttentionResult fused_dilated_attention(const DilatedAttentionConfig& config, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v);

}  // namespace ra
