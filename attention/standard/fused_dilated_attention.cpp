// Fused dilated attention on one GPU. Forward: per branch head group, fused attention over the
// group's kept rows ([N = B * S / w', h, L, D]; all mode's one-head groups of a branch in one
// stacked call, see GroupStack), then launch_merge_branches writes out and lse for all tokens in
// one fp32 pass (partition mode, where the merge is a copy: every group's rows in one pass of
// whole rows, cuda/partition_forward.h). Backward: the merged output is one joint softmax over
// the union of every branch's keys, so each group's fused backward, given the MERGED out and lse
// in that group's layout, returns exactly that group's share of dq, dk, dv. The groups of the
// plan's head cover (each head in one of them: partition mode's groups, or one branch in all
// mode) write their shares into dq, dk, dv, zeros included, with launch_write_kept_rows; the other
// groups add theirs in place (launch_scatter_add_kept_rows). A rate-1 all-heads group's gradients
// become dq, dk, dv outright (no copy, no zero fill).
#include "attention/standard/fused_dilated_attention.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/record_function.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <string>

#include "attention/standard/cuda/gather_kept_rows.h"
#include "attention/standard/cuda/merge_branches.h"
#include "attention/standard/cuda/partition_forward.h"
#include "attention/standard/cuda/scatter_add_kept_rows.h"
#include "attention/standard/cuda/write_kept_rows.h"
#include "attention/standard/dilation_plan.h"
#include "attention/standard/kept_rows_view.h"
#include "attention/standard/kernel_scalar_kind.h"
#include "attention/standard/plan_kept_rows.h"
#include "attention/standard/reference_attention.h"
#include "runtime/env_switch.h"
#include "runtime/error.h"
#include "runtime/torch_compat.h"

namespace ra {
namespace {

using FusedKernel = compat::FusedOp;

std::atomic<int> g_layout{static_cast<int>(FusedInputLayout::kAuto)};
std::atomic<bool> g_strided_view_rejected[2] = {false, false};  // per FusedKernel, kAuto only
std::atomic<bool> g_cudnn_rejected{false};       // backend=auto: cuDNN refused a shape
std::atomic<int64_t> g_backward_chunk_bytes{0};  // 0: the default budget

cuda::ScalarKind scalar_kind(at::ScalarType type) {
  const std::optional<cuda::ScalarKind> kind = kernel_scalar_kind(type);
  RA_CHECK(kind.has_value(), "dtype = ", type, ": the fused path takes float16 or bfloat16");
  return *kind;
}

// t: [B, S, H, D] or [B, S, H] (then D = 1).
cuda::TokenTensor token_tensor(const at::Tensor& t) {
  return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
}

// Rate 1, offset 0, every head in order, every segment: the rows are all of [B, S, H, *].
bool covers_everything(const cuda::KeptRows& g) {
  return g.rate == 1 && g.offset == 0 && g.head_start == 0 && g.head_step == 1 &&
         g.head_count == g.num_heads && g.kept == g.segment && g.n_begin == 0 &&
         g.size_n() == g.total_n();
}

// Segment rows per backward chunk: each chunk's gradient temporaries (dq, dk, dv of the
// group, plus V scaled in partition mode) stay near max(192 MiB, |q| / 32) bytes each, or
// set_fused_backward_chunk_bytes's value. Fewer, larger cuDNN calls are faster: LongNet-base
// causal partition at 1M on H100 took 21.3 ms with a 64 MiB floor, 20.8 with 128 MiB, 20.5
// with 192 or 256 MiB, 20.6 with 1 GiB (+1.9 GiB peak). 192 rather than 256 keeps the wide
// config's partition mode at 1M under half the naive implementation's peak (33.3 vs 33.6 GiB
// of its 67.2) at the same speed.
int64_t backward_chunk_n(const cuda::KeptRows& g, const at::Tensor& q) {
  const int64_t forced = g_backward_chunk_bytes.load();
  const int64_t budget =
      forced > 0 ? forced : std::max<int64_t>(int64_t(192) << 20, int64_t(q.nbytes()) / 32);
  const int64_t bytes_per_n = int64_t(g.head_count) * g.kept * q.size(3) * q.element_size();
  return std::max<int64_t>(1, budget / std::max<int64_t>(1, bytes_per_n));
}

// The same rows times `scale` (exact copy when 1), gathered by the gather kernel into `dst`
// ([N, h, L, D], any strides with D contiguous; undefined: a new contiguous tensor).
at::Tensor gather_kept_rows(const at::Tensor& t, const cuda::KeptRows& g, float scale = 1.f,
                            at::Tensor dst = {}) {
  const int64_t D = t.dim() == 4 ? t.size(3) : 1;
  if (!dst.defined()) dst = at::empty({g.size_n(), g.head_count, g.kept, D}, t.options());
  cuda::launch_gather_kept_rows(g, token_tensor(t), row_tensor(dst), D,
                                scalar_kind(t.scalar_type()),
                                at::cuda::getCurrentCUDAStream().stream(), scale);
  return dst;
}

// RA_STACK_GROUPS=0: all mode's one-head groups one call each (GroupStack, A/B runs, tests).
bool stacking_enabled() {
  const char* env = env_switch("RA_STACK_GROUPS", {"0", "1"});
  return env == nullptr || std::strcmp(env, "1") == 0;
}

// The rows of a stack of `count` groups (the first one's KeptRows c, the others at the next
// offsets and heads) of t [B, S, H, D]: [n, count, L, D], a strided view where `view` and t is
// contiguous, else gathered.
at::Tensor stack_rows(const at::Tensor& t, const cuda::KeptRows& c, int count, bool view) {
  if (count == 1) return view ? kept_rows_view(t, c) : gather_kept_rows(t, c);
  if (view && t.is_contiguous()) return stacked_rows_view(t, c, count);
  at::Tensor rows = at::empty({c.size_n(), count, c.kept, t.size(3)}, t.options());
  for (int j = 0; j < count; ++j) {
    gather_kept_rows(t, stacked_group(c, j), 1.f, rows.narrow(1, j, 1));
  }
  return rows;
}

// cuDNN's attention takes no one-row blocks (s_q = s_kv = 1): a group that keeps one row per
// segment runs on flash whatever the kernel, forward and backward (its lse is then [N, h, L]).
FusedKernel group_kernel(FusedKernel kernel, const cuda::KeptRows& g) {
  return g.kept == 1 ? FusedKernel::kFlash : kernel;
}

// Runs fn(use_view); with layout kAuto, a kernel error on the strided view retries gathered
// and remembers that choice for this kernel.
template <typename Fn>
auto with_layout(FusedKernel kernel, Fn&& fn) {
  const auto layout = static_cast<FusedInputLayout>(g_layout.load());
  std::atomic<bool>& rejected = g_strided_view_rejected[static_cast<int>(kernel)];
  if (layout != FusedInputLayout::kAuto || rejected.load()) {
    return fn(layout != FusedInputLayout::kGathered && !rejected.load());
  }
  try {
    return fn(true);
  } catch (const c10::Error&) {
    rejected = true;
    return fn(false);
  }
}

// Settings that travel from forward to backward through the autograd context.
struct FusedSettings {
  DilatedAttentionConfig config;
  FusedKernel kernel = FusedKernel::kCudnn;
};

void save_settings(torch::autograd::AutogradContext* ctx, const FusedSettings& s) {
  ctx->saved_data["segments"] = s.config.segment_lengths;
  ctx->saved_data["rates"] = s.config.dilation_rates;
  ctx->saved_data["causal"] = s.config.causal;
  ctx->saved_data["partition"] = s.config.head_mode == HeadMode::kPartition;
  ctx->saved_data["scale"] = s.config.softmax_scale ? *s.config.softmax_scale : -1.0;
  ctx->saved_data["kernel"] = static_cast<int64_t>(s.kernel);
}

FusedSettings load_settings(torch::autograd::AutogradContext* ctx) {
  FusedSettings s;
  s.config.segment_lengths = ctx->saved_data["segments"].toIntVector();
  s.config.dilation_rates = ctx->saved_data["rates"].toIntVector();
  s.config.causal = ctx->saved_data["causal"].toBool();
  s.config.head_mode =
      ctx->saved_data["partition"].toBool() ? HeadMode::kPartition : HeadMode::kAll;
  const double scale = ctx->saved_data["scale"].toDouble();
  if (scale > 0) s.config.softmax_scale = scale;
  s.kernel = static_cast<FusedKernel>(ctx->saved_data["kernel"].toInt());
  return s;
}

template <typename T>
at::Tensor to_device(const std::vector<T>& items, const at::Device& device) {
  at::Tensor host = at::empty({int64_t(items.size() * sizeof(T))}, at::kByte).pin_memory();
  std::memcpy(host.data_ptr(), items.data(), items.size() * sizeof(T));
  return host.to(device, /*non_blocking=*/true);
}

// The fused halves' settings for a whole config on S tokens and H heads.
FusedPlanSpec spec_of(const DilatedAttentionConfig& config, int64_t S, int64_t H, int64_t D) {
  return {DilationPlan::build(config, S, H), config.head_mode, softmax_scale(config, D),
          config.causal};
}

// Forward of every group with `kernel`, then the merge. q, k, v: [B, S, H, D] contiguous, same
// heads. The state records what the kernel's backward will expect.
FusedPlanForward forward_with_kernel(const FusedPlanSpec& spec, FusedKernel kernel,
                                     const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v) {
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2);
  const bool partition = spec.head_mode == HeadMode::kPartition;
  const DilationPlan& plan = spec.plan;
  const std::vector<GroupRows> groups = plan_groups(plan, B, S, H, partition);
  FusedKernelState state{kernel, at::Tensor(), at::Tensor(), 3};

  std::vector<at::Tensor> keep_alive;  // group outputs until the merge has read them
  std::vector<cuda::MergeGroup> merge_groups(groups.size());
  std::vector<cuda::MergeBranch> merge_branches(plan.branches.size());
  for (size_t i = 0, first = 0; i < plan.branches.size(); ++i) {
    const BranchPlan& b = plan.branches[i];
    cuda::MergeBranch& mb = merge_branches[i];
    mb.segment = int32_t(b.segment);
    mb.rate = int32_t(b.rate);
    mb.partition = partition ? 1 : 0;
    mb.first_group = int32_t(first);
    if (partition && !b.groups.empty()) {
      mb.head_start = int32_t(b.groups[0].heads.front());
      mb.head_count = int32_t(b.groups[0].heads.size());
      mb.offset = int32_t(b.groups[0].offset);
    }
    first += b.groups.size();
  }

  for (const GroupStack& stack : group_stacks(groups, !partition && stacking_enabled())) {
    const cuda::KeptRows& g = groups[stack.first].rows;
    if (g.kept == 0) continue;  // offset >= w': the group keeps nothing; the merge skips it
    const FusedKernel gk = group_kernel(kernel, g);
    compat::FusedAttentionForward f = with_layout(gk, [&](bool view) {
      auto rows = [&](const at::Tensor& t) { return stack_rows(t, g, stack.count, view); };
      return compat::fused_attention_forward(gk, rows(q), rows(k), rows(v), spec.causal,
                                             spec.scale);
    });
    at::Tensor out = f.out;  // [N, h, L, D]
    if (out.stride(3) != 1 || out.stride(0) % 8 || out.stride(1) % 8 || out.stride(2) % 8 ||
        reinterpret_cast<uintptr_t>(out.data_ptr()) % 16) {
      out = out.contiguous();
    }
    at::Tensor lse = f.lse.dim() == 4 ? f.lse.select(3, 0) : f.lse;  // [N, h, L] fp32
    RA_CHECK(lse.scalar_type() == at::kFloat && lse.size(2) == g.kept,
             "fused kernel returned lse of shape ", f.lse.sizes(), " and dtype ",
             f.lse.scalar_type(), "; expected [N, h, L(, 1)] float32 with L = ", g.kept);
    for (int j = 0; j < stack.count; ++j) {  // group j: head j of the call
      merge_groups[stack.first + j] = {
          static_cast<char*>(out.data_ptr()) + j * out.stride(1) * out.element_size(),
          out.stride(0),
          out.stride(1),
          out.stride(2),
          lse.data_ptr<float>() + j * lse.stride(1),
          lse.stride(0),
          lse.stride(1),
          lse.stride(2)};
    }
    keep_alive.push_back(out);
    keep_alive.push_back(lse);
    if (!state.philox_seed.defined()) {  // unused without dropout, but the ops take them
      state.philox_seed = f.philox_seed;
      state.philox_offset = f.philox_offset;
    }
    if (gk == kernel) state.lse_dim = f.lse.dim();
  }

  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({B, S, H}, q.options().dtype(at::kFloat));
  if (partition && plan.head_cover(H).size() == groups.size()) {
    // Every (token, head) is kept by at most one group (partition mode's head cover is every
    // group), so the merge is that group's row, times the output scale, with zeros and lse -inf
    // where no group keeps it: plain stores, no branch walk. Written for every group in one
    // pass of whole rows (cuda/partition_forward.h), or, beyond that kernel's limits, by a
    // launch per group of its heads' rows.
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
    std::vector<cuda::PartitionGroup> pass_groups(groups.size());
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      const cuda::MergeGroup& mg = merge_groups[gi];  // empty where the group keeps nothing
      pass_groups[gi] = {groups[gi].rows, mg.out,          mg.out_stride_n,
                         mg.out_stride_h, mg.out_stride_l, mg.lse,
                         mg.lse_stride_n, mg.lse_stride_h, mg.lse_stride_l};
    }
    if (groups.size() <= size_t(cuda::kMaxPartitionGroups) && H <= cuda::kMaxPartitionHeads) {
      cuda::launch_write_partition_forward(pass_groups.data(), int(pass_groups.size()), B, S, H,
                                           q.size(3), scalar_kind(q.scalar_type()),
                                           float(plan.output_scale), out.data_ptr(),
                                           lse.data_ptr<float>(), stream);
      return {out, lse, state};
    }
    for (const cuda::PartitionGroup& g : pass_groups) {
      const cuda::KeptLse lse_rows{g.lse, g.lse_sn, g.lse_sh, g.lse_sl, lse.data_ptr<float>(),
                                   S * H, H,        1};
      const cuda::RowTensor rows{const_cast<void*>(g.out), g.out_sn, g.out_sh, g.out_sl};
      cuda::launch_write_kept_rows(g.rows, rows, token_tensor(out), q.size(3),
                                   scalar_kind(q.scalar_type()), stream, float(plan.output_scale),
                                   lse_rows);
    }
    return {out, lse, state};
  }
  at::Tensor branches_dev = to_device(merge_branches, q.device());
  at::Tensor groups_dev = to_device(merge_groups, q.device());
  cuda::launch_merge_branches(
      reinterpret_cast<const cuda::MergeBranch*>(branches_dev.data_ptr()),
      int(merge_branches.size()), reinterpret_cast<const cuda::MergeGroup*>(groups_dev.data_ptr()),
      int(merge_groups.size()), int(B), int(S), int(H), int(q.size(3)),
      scalar_kind(q.scalar_type()), float(plan.output_scale), token_tensor(out),
      lse.data_ptr<float>(), at::cuda::getCurrentCUDAStream().stream());
  return {out, lse, state};
}

// Each group's fused backward with the merged out and lse, written or added into dq, dk, dv
// (see the top of the file). q, k, v, out, lse, grad_out as fused_plan_backward takes them.
std::array<at::Tensor, 3> backward_impl(const FusedPlanSpec& spec, const FusedKernelState& state,
                                        const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& out,
                                        const at::Tensor& lse, const at::Tensor& grad_out_in) {
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  const bool partition = spec.head_mode == HeadMode::kPartition;
  const DilationPlan& plan = spec.plan;
  const at::Tensor grad_out = grad_out_in.contiguous();

  // Partition mode: out holds s * merge (s = 1/G), so a group's kernel would need O = out / s and
  // dO = s * grad_out. Its backward reads O only in rowsum(dO O) and V only in dP = dO V^T and
  // dV = P^T dO: run with O = out, dO = grad_out (unchanged: views where the layout allows) and V
  // scaled by s, dQ and dK are the same and dV comes out divided by s, multiplied back when it is
  // written. One scaled copy per group (V) instead of two (out and grad_out).
  const double out_scale = plan.output_scale;
  const bool scaled = out_scale != 1.0;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  const cuda::ScalarKind kind = scalar_kind(q.scalar_type());
  at::Tensor lse_rows_src = lse.unsqueeze(-1);  // [B, S, H, 1]
  std::vector<GroupRows> groups = plan_groups(plan, B, S, H, partition);
  // The head cover's groups run first and write every element of dq/dk/dv (their kept rows,
  // zeros in their heads' other rows); the other groups then add into them. No zero fill, and
  // no write replaces another group's share: each (token, head) is kept by at most one cover
  // group. No cover: zero fill, and every group adds.
  for (const GroupRef& ref : plan.head_cover(H)) {
    for (GroupRows& gr : groups) gr.writes |= gr.branch == ref.branch && gr.group == ref.group;
  }
  std::stable_partition(groups.begin(), groups.end(),
                        [](const GroupRows& gr) { return gr.writes; });
  const bool cover = !groups.empty() && groups.front().writes;
  // A cover that is one rate-1 all-heads group (head_mode all): its gradients, laid out like
  // [B, S, H, D], become dq/dk/dv (written into new tensors if their layout is not that).
  const bool adopt = cover && covers_everything(groups.front().rows);
  at::Tensor dq, dk, dv;  // [B, S, H, D], input dtype
  at::Tensor* accs[3] = {&dq, &dk, &dv};
  if (!adopt) {
    for (at::Tensor* acc : accs) {
      *acc = cover ? at::empty({B, S, H, D}, q.options()) : at::zeros({B, S, H, D}, q.options());
    }
  }
  for (const GroupStack& stack : group_stacks(groups, !partition && stacking_enabled())) {
    const GroupRows& group = groups[stack.first];  // the stack's groups all write or all add
    const cuda::KeptRows& g = group.rows;
    if (g.kept == 0) {  // offset >= w': keeps nothing, but a cover group owes its heads' zeros
      if (!group.writes) continue;
      for (at::Tensor* acc : accs) {
        cuda::launch_write_kept_rows(g, {}, token_tensor(*acc), D, kind, stream);
      }
      continue;
    }
    // The merged lse in this stack's layout, contiguous, shaped as the kernel's forward
    // returned it: [N, h, L] (flash) or [N, h, L, 1] (cuDNN).
    const FusedKernel gk = group_kernel(state.kernel, g);
    at::Tensor lse_group = stack_rows(lse_rows_src, g, stack.count, /*view=*/false);
    if (gk == FusedKernel::kFlash || state.lse_dim == 3) lse_group = lse_group.squeeze(-1);
    // The group whose gradients become dq/dk/dv runs whole; the others in chunks of
    // segment rows, which bounds the temporaries at no cost in kernel efficiency.
    const bool whole = adopt && stack.first == 0;
    cuda::KeptRows stack_size = g;  // for the chunk budget: every head of the stack
    stack_size.head_count *= stack.count;
    const int64_t step = whole ? g.total_n() : backward_chunk_n(stack_size, q);
    for (int64_t n0 = 0; n0 < g.total_n(); n0 += step) {
      cuda::KeptRows c = g;
      c.n_begin = n0;
      c.n_count = std::min(step, g.total_n() - n0);
      const at::Tensor lse_c = lse_group.narrow(0, n0, c.n_count);
      compat::FusedAttentionGrads grads_c = with_layout(gk, [&](bool view) {
        auto rows = [&](const at::Tensor& t) { return stack_rows(t, c, stack.count, view); };
        const at::Tensor q_c = rows(q);  // [n, h, L, D]
        // Scaled (partition mode: no stacks): dense in q_c's dimension order (empty_like).
        const at::Tensor v_c =
            scaled ? gather_kept_rows(v, c, float(out_scale), at::empty_like(q_c)) : rows(v);
        const compat::FusedAttentionForward merged{rows(out), lse_c, state.philox_seed,
                                                   state.philox_offset};
        return compat::fused_attention_backward(gk, rows(grad_out), q_c, rows(k), v_c, merged,
                                                spec.causal, spec.scale);
      });
      const at::Tensor parts[3] = {std::get<0>(grads_c), std::get<1>(grads_c),
                                   std::get<2>(grads_c)};
      for (int j = 0; j < stack.count; ++j) {
        // A group's dq, dk, dv go out in one launch (one index decode for the three): written
        // by a cover group, else added.
        const cuda::KeptRows cj = stacked_group(c, j);
        std::array<cuda::KeptRowsWrite, 3> writes;
        std::array<cuda::KeptRowsAdd, 3> adds;
        std::array<at::Tensor, 3> keep_parts;  // the parts, alive until the launches
        int num_writes = 0, num_adds = 0;
        for (int i = 0; i < 3; ++i) {
          at::Tensor part = stack.count == 1 ? parts[i] : parts[i].narrow(1, j, 1);  // [n, h, L, D]
          // dV / s (see above): multiplied by s as the write below stores it, else here.
          const bool rescale = scaled && i == 2;
          const bool rescale_in_write = rescale && group.writes && accs[i]->defined();
          if (rescale && !rescale_in_write) part = part * out_scale;
          if (!accs[i]->defined()) {                 // the adopted group, run whole
            at::Tensor full = part.transpose(1, 2);  // [N, L, h, D] = [B * S / w', w', H, D]
            if (full.is_contiguous()) {
              *accs[i] = full.view({B, S, H, D});
              continue;
            }
            *accs[i] = at::empty({B, S, H, D}, q.options());  // the cover: written below
          }
          if (part.stride(3) != 1 || part.stride(0) % 8 || part.stride(1) % 8 ||
              part.stride(2) % 8 || reinterpret_cast<uintptr_t>(part.data_ptr()) % 16) {
            part = part.contiguous();
          }
          if (group.writes) {  // written together below
            writes[num_writes++] = {row_tensor(part), token_tensor(*accs[i]),
                                    rescale_in_write ? float(out_scale) : 1.f};
          } else {  // added together below
            adds[num_adds++] = {row_tensor(part), token_tensor(*accs[i])};
          }
          keep_parts[i] = part;
        }
        if (num_writes > 0) {
          cuda::launch_write_kept_rows(cj, writes.data(), num_writes, D, kind, stream);
        }
        if (num_adds > 0) {
          cuda::launch_scatter_add_kept_rows(cj, adds.data(), num_adds, D, kind, stream);
        }
      }
    }
  }
  return {dq, dk, dv};
}

class FusedDilatedAttentionFunction
    : public torch::autograd::Function<FusedDilatedAttentionFunction> {
 public:
  // q, k, v: [B, S, H, D] contiguous CUDA fp16/bf16. Returns {out [B, S, H, D] (partition
  // 1/G scale applied), lse [B, S, H] fp32 of the unscaled merge (not differentiable)}.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, FusedSettings settings) {
    RECORD_FUNCTION("ra::fused_dilated_attention", std::vector<c10::IValue>({q}));
    FusedPlanForward r = forward_with_kernel(
        spec_of(settings.config, q.size(1), q.size(2), q.size(3)), settings.kernel, q, k, v);
    ctx->saved_data["lse_dim"] = r.state.lse_dim;
    save_settings(ctx, settings);
    ctx->saved_data["philox_seed"] = r.state.philox_seed;
    ctx->saved_data["philox_offset"] = r.state.philox_offset;
    ctx->save_for_backward({q, k, v, r.out, r.lse});
    ctx->mark_non_differentiable({r.lse});
    return {r.out, r.lse};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const FusedSettings s = load_settings(ctx);
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const FusedKernelState state{s.kernel, ctx->saved_data["philox_seed"].toTensor(),
                                 ctx->saved_data["philox_offset"].toTensor(),
                                 ctx->saved_data["lse_dim"].toInt()};
    const at::Tensor grad_out = grads[0].defined() ? grads[0] : at::zeros_like(out);
    std::array<at::Tensor, 3> d = backward_impl(spec_of(s.config, q.size(1), q.size(2), q.size(3)),
                                                state, q, k, v, out, lse, grad_out);
    return {d[0], d[1], d[2], at::Tensor()};
  }
};

FusedKernel choose_kernel(AttentionBackend backend, int64_t head_dim) {
  switch (backend) {
    case AttentionBackend::kCudnn:
      return FusedKernel::kCudnn;
    case AttentionBackend::kFlash:
      return FusedKernel::kFlash;
    default:
      return head_dim <= 128 && !g_cudnn_rejected.load() ? FusedKernel::kCudnn
                                                         : FusedKernel::kFlash;
  }
}

}  // namespace

FusedPlanForward fused_plan_forward(const FusedPlanSpec& spec, AttentionBackend backend,
                                    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  RA_CHECK(q.is_cuda() && (q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16),
           "q: device ", q.device(), ", dtype ", q.scalar_type(),
           ": the fused path takes CUDA float16 or bfloat16 tensors");
  RA_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes() && q.is_contiguous() &&
               k.is_contiguous() && v.is_contiguous(),
           "fused_plan_forward: q ", q.sizes(), ", k ", k.sizes(), " and v ", v.sizes(),
           " must be contiguous [B, S, H, D] of one shape");
  const c10::cuda::CUDAGuard guard(q.device());
  const FusedKernel kernel = choose_kernel(backend, q.size(3));
  try {
    return forward_with_kernel(spec, kernel, q, k, v);
  } catch (const c10::Error& e) {
    if (backend != AttentionBackend::kAuto || kernel != FusedKernel::kCudnn) {
      RA_THROW_HINT("try backend=auto, or backend=reference for this shape", "fused ",
                    to_string(backend), " attention failed for q ", q.sizes(), " ", q.scalar_type(),
                    ": ", e.what_without_backtrace());
    }
    g_cudnn_rejected = true;  // as in fused_dilated_attention
    return forward_with_kernel(spec, FusedKernel::kFlash, q, k, v);
  }
}

std::array<at::Tensor, 3> fused_plan_backward(const FusedPlanSpec& spec,
                                              const FusedKernelState& state, const at::Tensor& q,
                                              const at::Tensor& k, const at::Tensor& v,
                                              const at::Tensor& out, const at::Tensor& lse,
                                              const at::Tensor& grad_out) {
  RA_CHECK(out.sizes() == q.sizes() && grad_out.sizes() == q.sizes() && out.is_contiguous() &&
               lse.is_contiguous() && lse.scalar_type() == at::kFloat,
           "fused_plan_backward: out ", out.sizes(), " and grad_out ", grad_out.sizes(),
           " must be q's shape ", q.sizes(), ", out and lse [B, S, H] (float32) contiguous");
  const c10::cuda::CUDAGuard guard(q.device());
  return backward_impl(spec, state, q, k, v, out, lse, grad_out);
}

void set_fused_backward_chunk_bytes(int64_t bytes) { g_backward_chunk_bytes = bytes; }

void set_fused_input_layout(FusedInputLayout layout) {
  g_layout = static_cast<int>(layout);
  for (auto& rejected : g_strided_view_rejected) rejected = false;
}

AttentionResult fused_dilated_attention(const DilatedAttentionConfig& config, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v) {
  RA_CHECK(q.is_cuda() && (q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16),
           "q: device ", q.device(), ", dtype ", q.scalar_type(),
           ": the fused path takes CUDA float16 or bfloat16 tensors");
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t H = q.size(2), heads_per_kv = H / k.size(2);
  // GQA: the fused groups pick heads with a stride, so k/v are expanded to H heads here and
  // autograd sums the expanded gradients back.
  auto expand = [&](const at::Tensor& t) {
    return (heads_per_kv == 1 ? t : t.repeat_interleave(heads_per_kv, 2)).contiguous();
  };
  FusedSettings settings{config, choose_kernel(config.backend, q.size(3))};
  const at::Tensor qc = q.contiguous(), kc = expand(k), vc = expand(v);
  torch::autograd::variable_list r;
  try {
    r = FusedDilatedAttentionFunction::apply(qc, kc, vc, settings);
  } catch (const c10::Error& e) {
    if (config.backend != AttentionBackend::kAuto || settings.kernel != FusedKernel::kCudnn) {
      RA_THROW_HINT("try backend=auto, or backend=reference for this shape", "fused ",
                    to_string(config.backend), " attention failed for q ", q.sizes(), " ",
                    q.scalar_type(), ": ", e.what_without_backtrace());
    }
    g_cudnn_rejected = true;  // auto: cuDNN refused this build/shape; flash from now on
    settings.kernel = FusedKernel::kFlash;
    r = FusedDilatedAttentionFunction::apply(qc, kc, vc, settings);
  }
  return {r[0], r[1]};
}

}  // namespace ra
