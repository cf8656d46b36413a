// The checkpoint autograd function: forward without graph, backward = recompute + grad.
#include "runtime/block_checkpoint.h"

#include <torch/autograd.h>
#include <torch/custom_class.h>
#include <torch/types.h>

#include "runtime/error.h"
#include "runtime/torch_compat.h"

namespace ra {
namespace {

// Carries the std::function through the autograd context (saved_data holds IValues).
struct FunctionHolder : torch::CustomClassHolder {
  explicit FunctionHolder(BlockFunction f) : fn(std::move(f)) {}
  BlockFunction fn;
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            at::TensorList params, const BlockFunction& fn) {
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<FunctionHolder>(fn));
    ctx->saved_data["autocast"] = compat::cuda_bf16_autocast_enabled();
    std::vector<at::Tensor> saved{input};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    torch::NoGradGuard no_grad;
    return fn(input);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto holder =
        c10::static_intrusive_pointer_cast<FunctionHolder>(ctx->saved_data["fn"].toCapsule());
    const bool input_needs_grad = saved[0].requires_grad();
    at::Tensor input = saved[0].detach().requires_grad_(input_needs_grad);

    // Recompute with a graph this time, in the forward's autocast state.
    const bool autocast_now = compat::cuda_bf16_autocast_enabled();
    const bool autocast_then = ctx->saved_data["autocast"].toBool();
    at::Tensor output;
    {
      at::AutoGradMode grad_on(true);
      if (autocast_then != autocast_now) compat::set_cuda_bf16_autocast(autocast_then);
      output = holder->fn(input);
      if (autocast_then != autocast_now) compat::set_cuda_bf16_autocast(autocast_now);
    }

    // Gradients w.r.t. the input and the parameters that need them.
    std::vector<at::Tensor> wrt;
    std::vector<size_t> slot;  // index into the result for each entry of wrt
    if (input_needs_grad) wrt.push_back(input), slot.push_back(0);
    for (size_t i = 1; i < saved.size(); ++i) {
      if (saved[i].requires_grad()) wrt.push_back(saved[i]), slot.push_back(i);
    }
    torch::autograd::variable_list result(saved.size() + 1);  // + the (non-tensor) fn
    if (wrt.empty() || !output.requires_grad()) return result;
    auto grads = torch::autograd::grad({output}, wrt, {grad_outputs[0]}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t j = 0; j < grads.size(); ++j) result[slot[j]] = grads[j];
    return result;
  }
};

}  // namespace

at::Tensor checkpoint_block(const BlockFunction& fn, const at::Tensor& input,
                            const std::vector<at::Tensor>& params) {
  RA_CHECK(fn != nullptr, "checkpoint_block: fn is empty");
  return CheckpointFunction::apply(input, at::TensorList(params), fn);
}

}  // namespace ra
