// rotate_pairs_cuda: the fused RoPE kernel wrapped in an autograd function (the backward is the
// inverse rotation, the same kernel with the sine negated), for one tensor or a query and a key.
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

// xs: one or two [B, S, H, D] tensors -> contiguous rotated copies; sign -1 rotates backwards.
// Two tensors of one shape, dtype and strides (a query and a key) go in one launch.
std::vector<at::Tensor> rotate(std::vector<at::Tensor> xs, const at::Tensor& cos,
                               const at::Tensor& sin, float sign) {
  if (xs.size() == 2 && (xs[0].sizes() != xs[1].sizes() || xs[0].strides() != xs[1].strides() ||
                         xs[0].scalar_type() != xs[1].scalar_type())) {
    return {rotate({xs[0]}, cos, sin, sign)[0], rotate({xs[1]}, cos, sin, sign)[0]};
  }
  for (at::Tensor& x : xs) {
    if (x.stride(3) != 1) x = x.contiguous();  // the kernels need the head dim contiguous
  }
  if (xs.size() == 2 && xs[0].strides() != xs[1].strides()) {  // one launch: equal strides
    xs[0] = xs[0].contiguous(), xs[1] = xs[1].contiguous();
  }
  std::vector<at::Tensor> outs;
  cuda::RotateTensor tensors[2];
  for (size_t t = 0; t < xs.size(); ++t) {
    outs.push_back(
        at::empty(xs[t].sizes(), xs[t].options().memory_format(at::MemoryFormat::Contiguous)));
    tensors[t] = {xs[t].data_ptr(), outs[t].data_ptr()};
  }
  const at::Tensor& x = xs[0];
  cuda::launch_rotate_pairs(tensors, int(xs.size()), x.stride(0), x.stride(1), x.stride(2),
                            cos.data_ptr<float>(), sin.data_ptr<float>(), int(x.size(0)),
                            int(x.size(1)), int(x.size(2)), int(x.size(3)), kind_of(x), sign,
                            at::cuda::getCurrentCUDAStream(x.device().index()));
  return outs;
}

// Rotates x, or x and y (a query and a key) in one launch; the backward rotates the gradients
// back the same way (an output that received none is skipped).
class RotatePairsFunction : public torch::autograd::Function<RotatePairsFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x,
                                                const c10::optional<at::Tensor>& y,
                                                const at::Tensor& cos, const at::Tensor& sin) {
    RECORD_FUNCTION("ra::rotary", std::vector<c10::IValue>({x}));
    ctx->set_materialize_grads(false);
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return rotate(y.has_value() ? std::vector<at::Tensor>{x, *y} : std::vector<at::Tensor>{x}, cos,
                  sin, 1.0f);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor cos = ctx->saved_data["cos"].toTensor(),
                     sin = ctx->saved_data["sin"].toTensor();
    std::vector<at::Tensor> defined;
    for (const at::Tensor& g : grads) {
      if (g.defined()) defined.push_back(g);
    }
    std::vector<at::Tensor> rotated = defined.empty() ? defined : rotate(defined, cos, sin, -1.0f);
    torch::autograd::variable_list result(4);  // dx, dy, (cos, sin: none)
    for (size_t i = 0, next = 0; i < grads.size(); ++i) {
      if (grads[i].defined()) result[i] = rotated[next++];
    }
    return result;
  }
};

void check_tables(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  RA_CHECK(x.is_cuda() && x.dim() == 4 && x.size(3) % 2 == 0, "rotary (CUDA): x must be a CUDA ",
           "[B, S, H, D] tensor with even D, got ", x.sizes(), " on ", x.device());
  const int64_t S = x.size(1), half = x.size(3) / 2;
  for (const at::Tensor* t : {&cos, &sin}) {
    RA_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device() == x.device() &&
                 t->numel() == S * half,
             "rotary (CUDA): tables must be contiguous fp32 [S = ", S, ", D/2 = ", half, "] on ",
             x.device(), ", got ", t->sizes(), " ", t->scalar_type(), " on ", t->device());
  }
}

}  // namespace

at::Tensor rotate_pairs_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_tables(x, cos, sin);
  return RotatePairsFunction::apply(x, c10::nullopt, cos, sin)[0];
}

std::pair<at::Tensor, at::Tensor> rotate_pairs_cuda(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& cos, const at::Tensor& sin) {
  check_tables(q, cos, sin);
  check_tables(k, cos, sin);
  RA_CHECK(q.device() == k.device(), "rotary (CUDA): q on ", q.device(), ", k on ", k.device());
  torch::autograd::variable_list out =
      RotatePairsFunction::apply(q, c10::optional<at::Tensor>(k), cos, sin);
  return {out[0], out[1]};
}

}  // namespace ra
