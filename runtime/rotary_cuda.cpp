// rotate_pairs_cuda: the fused RoPE kernel wrapped in an autograd function (the backward is the
// inverse rotation, the same kernel with the sine negated).
#include "runtime/rotary_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/record_function.h>
#include <torch/autograd.h>

#include "attention/standard/cuda/rotate_pairs.h"
#include "attention/standard/kernel_scalar_kind.h"
#include "runtime/error.h"

namespace ra {
namespace {

cuda::ScalarKind kind_of(const at::Tensor& x) {
  const std::optional<cuda::ScalarKind> kind = kernel_scalar_kind(x.scalar_type());
  RA_CHECK(kind.has_value(), "rotary (CUDA): x must be float16, bfloat16 or float32, got ",
           x.scalar_type());
  return *kind;
}

// x: [B, S, H, D], head dim contiguous -> contiguous rotated copy; sign -1 rotates backwards.
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, float sign) {
  at::Tensor src = x.stride(3) == 1 ? x : x.contiguous();
  at::Tensor out =
      at::empty(src.sizes(), src.options().memory_format(at::MemoryFormat::Contiguous));
  cuda::launch_rotate_pairs(src.data_ptr(), src.stride(0), src.stride(1), src.stride(2),
                            out.data_ptr(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                            int(src.size(0)), int(src.size(1)), int(src.size(2)), int(src.size(3)),
                            kind_of(src), sign,
                            at::cuda::getCurrentCUDAStream(src.device().index()));
  return out;
}

class RotatePairsFunction : public torch::autograd::Function<RotatePairsFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& cos, const at::Tensor& sin) {
    RECORD_FUNCTION("ra::rotary", std::vector<c10::IValue>({x}));
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return rotate(x, cos, sin, 1.0f);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor cos = ctx->saved_data["cos"].toTensor(),
                     sin = ctx->saved_data["sin"].toTensor();
    return {rotate(grads[0], cos, sin, -1.0f), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor rotate_pairs_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  RA_CHECK(x.is_cuda() && x.dim() == 4 && x.size(3) % 2 == 0, "rotary (CUDA): x must be a CUDA ",
           "[B, S, H, D] tensor with even D, got ", x.sizes(), " on ", x.device());
  const int64_t S = x.size(1), half = x.size(3) / 2;
  for (const at::Tensor* t : {&cos, &sin}) {
    RA_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device() == x.device() &&
                 t->numel() == S * half,
             "rotary (CUDA): tables must be contiguous fp32 [S = ", S, ", D/2 = ", half, "] on ",
             x.device(), ", got ", t->sizes(), " ", t->scalar_type(), " on ", t->device());
  }
  return RotatePairsFunction::apply(x, cos, sin);
}

}  // namespace ra
