// The checkpoint autograd function: forward without graph, backward = recompute + grad. The
// saved input may be stored rounded (CheckpointStorage::dtype) and/or offloaded to the host.
#include "runtime/block_checkpoint.h"

#include <torch/autograd.h>
#include <torch/custom_class.h>
#include <torch/types.h>

#include "runtime/error.h"
#include "runtime/torch_compat.h"

namespace ra {
namespace {

// True on the thread running a checkpoint's recompute, while it runs (see inside_recompute()).
thread_local bool recomputing = false;

class RecomputeScope {
 public:
  RecomputeScope() : outer_(recomputing) { recomputing = true; }
  ~RecomputeScope() { recomputing = outer_; }

 private:
  bool outer_;
};

// What backward needs besides the saved tensors, carried through the autograd context
// (saved_data holds IValues).
struct CheckpointState : torch::CustomClassHolder {
  BlockFunction fn;
  at::ScalarType input_dtype = at::kFloat;  // the stored input is up-cast back to this
  bool input_requires_grad = false;
  bool autocast = false;  // the forward's bf16 autocast state, restored for the recompute
  std::shared_ptr<CheckpointOffloader> offloader;  // non-null: the input is in slot `slot`
  int64_t slot = -1;
};

// The backward result of a recomputing autograd function: gradients of `output` (given its
// gradient) w.r.t. the recomputed input (if it needs one) and each param that requires grad,
// laid out one entry per forward argument: input, each param, then `trailing` non-tensors.
torch::autograd::variable_list recomputed_gradients(const at::Tensor& output,
                                                    const at::Tensor& grad_output,
                                                    const at::Tensor& input,
                                                    bool input_requires_grad, at::TensorList params,
                                                    size_t trailing) {
  torch::autograd::variable_list result(1 + params.size() + trailing);
  std::vector<at::Tensor> wrt;
  std::vector<size_t> slot;  // index into the result for each entry of wrt
  if (input_requires_grad) wrt.push_back(input), slot.push_back(0);
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].requires_grad()) wrt.push_back(params[i]), slot.push_back(1 + i);
  }
  if (wrt.empty() || !output.requires_grad()) return result;
  auto grads = torch::autograd::grad({output}, wrt, {grad_output}, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/true);
  for (size_t j = 0; j < grads.size(); ++j) result[slot[j]] = grads[j];
  return result;
}

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            at::TensorList params, const BlockFunction& fn,
                            const CheckpointStorage& storage) {
    auto state = c10::make_intrusive<CheckpointState>();
    state->fn = fn;
    state->input_dtype = input.scalar_type();
    state->input_requires_grad = input.requires_grad();
    state->autocast = compat::cuda_bf16_autocast_enabled();

    // Rounding the stored input changes what the recompute sees, so the forward runs the block
    // on the same rounded input: forward and recompute then compute the same function, and the
    // gradients are exact for the loss actually computed (rounding passes the gradient through).
    const bool round = storage.dtype && *storage.dtype != input.scalar_type();
    const at::Tensor stored = round ? input.to(*storage.dtype) : input;
    const at::Tensor block_input = round ? stored.to(input.scalar_type()) : input;

    std::vector<at::Tensor> saved;
    if (storage.offloader) {
      state->offloader = storage.offloader;
      state->slot = storage.offloader->store(stored);
    } else {
      saved.push_back(stored);
    }
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    torch::NoGradGuard no_grad;
    return fn(block_input);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto state =
        c10::static_intrusive_pointer_cast<CheckpointState>(ctx->saved_data["state"].toCapsule());
    // saved = [stored input unless offloaded] + params.
    const size_t first_param = state->offloader ? 0 : 1;
    const at::Tensor stored = state->offloader ? state->offloader->take(state->slot) : saved[0];
    at::Tensor input =
        stored.to(state->input_dtype).detach().requires_grad_(state->input_requires_grad);

    // Recompute with a graph this time, in the forward's autocast state.
    const bool autocast_now = compat::cuda_bf16_autocast_enabled();
    const bool autocast_then = state->autocast;
    at::Tensor output;
    {
      at::AutoGradMode grad_on(true);
      RecomputeScope scope;
      if (autocast_then != autocast_now) compat::set_cuda_bf16_autocast(autocast_then);
      output = state->fn(input);
      if (autocast_then != autocast_now) compat::set_cuda_bf16_autocast(autocast_now);
    }

    // One result entry per forward argument: input, each param, fn, storage.
    return recomputed_gradients(output, grad_outputs[0], input, state->input_requires_grad,
                                at::TensorList(saved).slice(first_param), /*trailing=*/2);
  }
};

// add_recomputed_in_backward: forward returns h itself; backward runs fn chunk by chunk with a
// graph and adds each chunk's input gradient into the residual gradient.
struct DeferredState : torch::CustomClassHolder {
  BlockFunction fn;
  int64_t chunk = 0;
};

class DeferredResidualFunction : public torch::autograd::Function<DeferredResidualFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h,
                            at::TensorList params, const BlockFunction& fn, int64_t chunk) {
    auto state = c10::make_intrusive<DeferredState>();
    state->fn = fn;
    state->chunk = chunk;
    std::vector<at::Tensor> saved = {h};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    return h;  // autograd returns it as a view of h: no copy
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto state =
        c10::static_intrusive_pointer_cast<DeferredState>(ctx->saved_data["state"].toCapsule());
    const at::Tensor& grad = grad_outputs[0];  // [B, S, E]: of h + fn(h)
    const at::Tensor h = saved[0].detach();
    const bool h_requires_grad = saved[0].requires_grad();
    const at::TensorList params = at::TensorList(saved).slice(1);
    // One entry per forward argument: h, each param, fn, chunk.
    torch::autograd::variable_list result(1 + params.size() + 2);
    if (h_requires_grad) result[0] = grad.clone(at::MemoryFormat::Contiguous);  // the h path
    const int64_t tokens = h.size(1);
    for (int64_t start = 0; start < tokens; start += state->chunk) {
      const int64_t length = std::min(state->chunk, tokens - start);
      at::Tensor piece = h.narrow(1, start, length).requires_grad_(h_requires_grad);
      at::Tensor output;
      {
        at::AutoGradMode grad_on(true);
        output = state->fn(piece);
      }
      auto grads = recomputed_gradients(output, grad.narrow(1, start, length), piece,
                                        h_requires_grad, params, /*trailing=*/0);
      if (grads[0].defined()) result[0].narrow(1, start, length).add_(grads[0]);
      for (size_t i = 0; i < params.size(); ++i) {
        at::Tensor& total = result[1 + i];
        const at::Tensor& g = grads[1 + i];
        if (g.defined()) total = total.defined() ? total.add_(g) : g;
      }
    }
    return result;
  }
};

// Identity in backward, so its gradient is the one checkpoint_block's rounding gives.
class RoundThroughFunction : public torch::autograd::Function<RoundThroughFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& input,
                            at::ScalarType dtype) {
    return input.to(dtype).to(input.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grad_outputs) {
    return {grad_outputs[0], at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpoint_block(const BlockFunction& fn, const at::Tensor& input,
                            const std::vector<at::Tensor>& params,
                            const CheckpointStorage& storage) {
  RA_CHECK(fn != nullptr, "checkpoint_block: fn is empty");
  return CheckpointFunction::apply(input, at::TensorList(params), fn, storage);
}

bool inside_recompute() { return recomputing; }

at::Tensor add_recomputed_in_backward(const BlockFunction& fn, const at::Tensor& h,
                                      const std::vector<at::Tensor>& params, int64_t chunk) {
  RA_CHECK(fn != nullptr, "add_recomputed_in_backward: fn is empty");
  RA_CHECK(h.dim() >= 2, "add_recomputed_in_backward: h must be [batch, tokens, ...], got ",
           h.sizes());
  RA_CHECK(chunk > 0, "add_recomputed_in_backward: chunk = ", chunk, ": must be positive");
  return DeferredResidualFunction::apply(h, at::TensorList(params), fn, chunk);
}

at::Tensor round_through(const at::Tensor& input, at::ScalarType dtype) {
  return RoundThroughFunction::apply(input, dtype);
}

}  // namespace ra
