// The autograd functions behind block_sparse_attention: the hop loop with its exchanges and the
// backward ring, computing each hop with the torch ops of block_sparse_ops.h (after conversion
// to their block layout) or, where the run carries device layouts, with the CUDA kernels.
#include "attention/sparse/block_sparse_attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/custom_class.h>

#include <limits>

#include "attention/sparse/block_sparse_ops.h"
#include "comm/communicator.h"
#include "runtime/error.h"

#ifdef RA_SPARSE_CUDA_KERNELS
#include "attention/sparse/cuda/block_sparse_cuda.h"
#include "attention/standard/lse_merge.h"
#endif

namespace ra {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Carries the run (plan, communicator) from forward to backward through the autograd context.
struct RunHolder : torch::CustomClassHolder {
  explicit RunHolder(BlockSparseRun r) : run(std::move(r)) {}
  BlockSparseRun run;
};

void register_run_holder() {
  static const auto holder_class = torch::class_<RunHolder>("ringattn", "BlockSparseRun");
  (void)holder_class;
}

at::ScalarType compute_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// [B, S, H, D] -> [B, Hkv, nq, g*b, D]: query head h = kv_head * g + j.
at::Tensor queries_to_blocks(const at::Tensor& t, int64_t hkv, int64_t b) {
  const int64_t B = t.size(0), S = t.size(1), H = t.size(2), D = t.size(3), g = H / hkv;
  return t.reshape({B, S / b, b, hkv, g, D})
      .permute({0, 3, 1, 4, 2, 5})
      .reshape({B, hkv, S / b, g * b, D});
}

// Inverse of queries_to_blocks for [.., D] tensors (d > 0) or [..] tensors (d = 0).
at::Tensor queries_from_blocks(const at::Tensor& t, int64_t heads, int64_t b, int64_t d) {
  const int64_t B = t.size(0), hkv = t.size(1), nq = t.size(2), g = heads / hkv;
  if (d == 0) {
    return t.reshape({B, hkv, nq, g, b}).permute({0, 2, 4, 1, 3}).reshape({B, nq * b, heads});
  }
  return t.reshape({B, hkv, nq, g, b, d})
      .permute({0, 2, 4, 1, 3, 5})
      .reshape({B, nq * b, heads, d});
}

// k, v: [B, S, Hkv, D] -> kv: [2, B, Hkv, S/b, b, D].
at::Tensor keys_to_blocks(const at::Tensor& k, const at::Tensor& v, int64_t b) {
  const int64_t B = k.size(0), S = k.size(1), hkv = k.size(2), D = k.size(3);
  return at::stack({k, v}, 0)
      .reshape({2, B, S / b, b, hkv, D})
      .permute({0, 1, 4, 2, 3, 5})
      .contiguous();
}

// dkv: [2, B, Hkv, nk, b, D] -> dk or dv [B, S, Hkv, D] (a strided view: token stride D).
at::Tensor keys_from_blocks(const at::Tensor& dkv, int which) {
  at::Tensor t = dkv[which];  // [B, Hkv, nk, b, D]
  return t.permute({0, 2, 3, 1, 4})
      .reshape({t.size(0), t.size(2) * t.size(3), t.size(1), t.size(4)});
}

// Sends this rank's blocks `send_blocks` of `local` ([2, B, Hkv, n, b, D]) to hop.dst and
// receives hop.recv_blocks from hop.src; both may be empty (then no bytes move).
at::Tensor exchange_blocks(const BlockSparseRun& run, const SparseHop& hop, const at::Tensor& local,
                           int64_t& bytes_sent) {
  at::Tensor send =
      local.index_select(3, at::tensor(hop.send_blocks, at::kLong).to(local.device())).contiguous();
  std::vector<int64_t> shape = local.sizes().vec();
  shape[3] = static_cast<int64_t>(hop.recv_blocks.size());
  at::Tensor recv = at::empty(shape, local.options());
  run.comm->send_recv(send, hop.dst, recv, hop.src);
  bytes_sent += send.numel() * send.element_size();
  if (run.stats) ++run.stats->exchanges;
  return recv;
}

// Backward of one hop: the dK/dV of the blocks received at `hop` (dkv: [2, B, Hkv, n_recv, b, D])
// go back to their owner (hop.src) while ours, computed by hop.dst, come home and are added
// into dkv_local at the blocks we sent.
void return_block_grads(const BlockSparseRun& run, const SparseHop& hop, const at::Tensor& dkv,
                        at::Tensor& dkv_local, int64_t& bytes_sent) {
  SparseHop back;
  back.src = hop.dst;
  back.dst = hop.src;
  back.send_blocks.resize(hop.recv_blocks.size());
  for (size_t i = 0; i < back.send_blocks.size(); ++i) back.send_blocks[i] = int64_t(i);
  back.recv_blocks = hop.send_blocks;
  at::Tensor returned = exchange_blocks(run, back, dkv, bytes_sent);
  dkv_local.index_add_(3, at::tensor(hop.send_blocks, at::kLong).to(returned.device()), returned);
}

class BlockSparseFunction : public torch::autograd::Function<BlockSparseFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const BlockSparseRun& run) {
    const int64_t hkv = k.size(2), b = run.block_size;
    const at::ScalarType cd = compute_dtype(q);
    at::Tensor qb = queries_to_blocks(q.to(cd), hkv, b);  // [B, Hkv, nq, g*b, D]
    at::Tensor kv_local = keys_to_blocks(k, v, b);        // [2, B, Hkv, nq, b, D], input dtype
    at::Tensor kv_local_cd = kv_local.to(cd);
    at::Tensor out = at::zeros_like(qb);
    at::Tensor lse = at::full(qb.sizes().slice(0, 4), -std::numeric_limits<double>::infinity(),
                              qb.options());  // [B, Hkv, nq, g*b]
    int64_t bytes = 0;
    for (const SparseHop& hop : run.plan->hops) {
      // Blocks travel in the input dtype (bf16 halves the bytes); compute is fp32/fp64.
      at::Tensor kv =
          hop.hop == 0 ? kv_local_cd : exchange_blocks(run, hop, kv_local, bytes).to(cd);
      block_sparse_forward(qb, kv, hop.tasks, run.scale, b, out, lse);
    }
    if (run.stats) run.stats->forward_bytes_sent += bytes;

    register_run_holder();
    ctx->saved_data["run"] = c10::make_intrusive<RunHolder>(run);
    ctx->saved_data["out"] = out;
    ctx->saved_data["lse"] = lse;
    ctx->save_for_backward({q, k, v});
    const int64_t H = q.size(2), D = q.size(3);
    at::Tensor out_bshd = queries_from_blocks(out, H, b, D).to(q.scalar_type());
    at::Tensor lse_bsh = queries_from_blocks(lse, H, b, 0);
    ctx->mark_non_differentiable({lse_bsh});
    return {out_bshd, lse_bsh};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BlockSparseRun& run = ctx->saved_data["run"].toCustomClass<RunHolder>()->run;
    at::Tensor out = ctx->saved_data["out"].toTensor();
    at::Tensor lse = ctx->saved_data["lse"].toTensor();
    auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2];
    const int64_t hkv = k.size(2), b = run.block_size, H = q.size(2), D = q.size(3);
    const at::ScalarType cd = compute_dtype(q);
    at::Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(q);
    at::Tensor doutb = queries_to_blocks(dout.to(cd), hkv, b);  // [B, Hkv, nq, g*b, D]
    at::Tensor delta = (doutb * out).sum(-1);                   // [B, Hkv, nq, g*b]
    at::Tensor qb = queries_to_blocks(q.to(cd), hkv, b);
    at::Tensor kv_local = keys_to_blocks(k, v, b);
    at::Tensor kv_local_cd = kv_local.to(cd);
    at::Tensor dq = at::zeros_like(qb);
    at::Tensor dkv_local = at::zeros_like(kv_local_cd);  // [2, B, Hkv, nq, b, D]
    int64_t bytes = 0;
    for (const SparseHop& hop : run.plan->hops) {
      if (hop.hop == 0) {
        block_sparse_backward(qb, kv_local_cd, doutb, lse, delta, hop.tasks, run.scale, b, dq,
                              dkv_local);
        continue;
      }
      at::Tensor kv = exchange_blocks(run, hop, kv_local, bytes).to(cd);
      at::Tensor dkv = at::zeros_like(kv);
      block_sparse_backward(qb, kv, doutb, lse, delta, hop.tasks, run.scale, b, dq, dkv);
      return_block_grads(run, hop, dkv, dkv_local, bytes);
    }
    if (run.stats) run.stats->backward_bytes_sent += bytes;
    at::Tensor dq_bshd = queries_from_blocks(dq, H, b, D).to(q.scalar_type());
    at::Tensor dk = keys_from_blocks(dkv_local, 0).to(k.scalar_type());
    at::Tensor dv = keys_from_blocks(dkv_local, 1).to(v.scalar_type());
    return {dq_bshd, dk, dv, at::Tensor()};
  }
};

#ifdef RA_SPARSE_CUDA_KERNELS
// The same hop loop and exchanges with the CUDA kernels per hop. q, out, lse stay in the
// kernels' [B, S/P, H, (D)] layout; key/value blocks keep the exchange layout
// [2, B, Hkv, n, b, D] and the kernels read (and write dK/dV) through strided [B, n*b, Hkv, D]
// views of it, so no copies. Each hop's (out, lse) is merged in fp32 by LSE; backward runs every
// hop's kernels with the final out and lse.
class BlockSparseKernelFunction : public torch::autograd::Function<BlockSparseKernelFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const BlockSparseRun& run) {
    const auto& layouts = run.hop_layouts->hops;
    at::Tensor qc = q.contiguous();
    at::Tensor kv_local = keys_to_blocks(k, v, run.block_size);  // [2, B, Hkv, n, b, D]
    const auto f32 = qc.options().dtype(at::kFloat);
    at::Tensor out = at::zeros(qc.sizes(), f32);  // running result [B, S/P, H, D]
    at::Tensor lse = at::full({q.size(0), q.size(1), q.size(2)},
                              -std::numeric_limits<double>::infinity(), f32);  // [B, S/P, H]
    at::Tensor out_h = at::empty_like(qc), lse_h = at::empty_like(lse);
    int64_t bytes = 0;
    for (size_t i = 0; i < run.plan->hops.size(); ++i) {
      const SparseHop& hop = run.plan->hops[i];
      at::Tensor kv = hop.hop == 0 ? kv_local : exchange_blocks(run, hop, kv_local, bytes);
      if (hop.tasks.empty()) continue;  // this rank's queries need none of these blocks
      block_sparse_forward_cuda(qc, keys_from_blocks(kv, 0), keys_from_blocks(kv, 1), layouts[i],
                                run.scale, out_h, lse_h);
      merge_by_lse_(out, lse, out_h.to(at::kFloat), lse_h);
      if (run.stats) ++run.stats->kernel_hops;
    }
    if (run.stats) run.stats->forward_bytes_sent += bytes;

    register_run_holder();
    ctx->saved_data["run"] = c10::make_intrusive<RunHolder>(run);
    at::Tensor out_q = out.to(q.scalar_type());
    ctx->mark_non_differentiable({lse});
    ctx->save_for_backward({q, k, v, out_q, lse});
    return {out_q, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BlockSparseRun& run = ctx->saved_data["run"].toCustomClass<RunHolder>()->run;
    const auto& layouts = run.hop_layouts->hops;
    auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    at::Tensor qc = q.contiguous();
    at::Tensor dout = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(out);
    at::Tensor kv_local = keys_to_blocks(k, v, run.block_size);
    at::Tensor dq = at::zeros(qc.sizes(), qc.options().dtype(at::kFloat));
    at::Tensor dkv_local = at::zeros(kv_local.sizes(), kv_local.options().dtype(at::kFloat));
    at::Tensor dq_h = at::empty_like(qc);
    int64_t bytes = 0;
    for (size_t i = 0; i < run.plan->hops.size(); ++i) {
      const SparseHop& hop = run.plan->hops[i];
      at::Tensor kv = hop.hop == 0 ? kv_local : exchange_blocks(run, hop, kv_local, bytes);
      at::Tensor dkv_h = at::empty_like(kv);  // the kernels' dK/dV of the buffer's blocks
      if (hop.tasks.empty()) {
        dkv_h.zero_();
      } else {
        at::Tensor dk_h = keys_from_blocks(dkv_h, 0), dv_h = keys_from_blocks(dkv_h, 1);
        RA_CHECK(dk_h.is_alias_of(dkv_h) && dv_h.is_alias_of(dkv_h),
                 "block_sparse_attention: dK/dV views of the block buffer were copies");
        block_sparse_backward_cuda(qc, keys_from_blocks(kv, 0), keys_from_blocks(kv, 1), out, dout,
                                   lse, layouts[i], run.scale, dq_h, dk_h, dv_h);
        dq.add_(dq_h);
      }
      if (hop.hop == 0) {
        dkv_local.add_(dkv_h);
        continue;
      }
      // As in the torch-op path: fp32 dK/dV of the received blocks go back to their owner.
      return_block_grads(run, hop, dkv_h.to(at::kFloat), dkv_local, bytes);
    }
    if (run.stats) run.stats->backward_bytes_sent += bytes;
    at::Tensor dk = keys_from_blocks(dkv_local, 0).to(k.scalar_type());
    at::Tensor dv = keys_from_blocks(dkv_local, 1).to(v.scalar_type());
    return {dq.to(q.scalar_type()), dk, dv, at::Tensor()};
  }
};
#endif

}  // namespace

AttentionResult block_sparse_attention(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const BlockSparseRun& run) {
  RA_CHECK(run.plan != nullptr, "block_sparse_attention: no plan");
  RA_CHECK(run.plan->world_size == 1 || run.comm != nullptr, "block_sparse_attention: a plan over ",
           run.plan->world_size, " ranks needs a communicator");
  RA_CHECK(q.size(1) == run.plan->blocks_per_rank * run.block_size, "q has ", q.size(1),
           " tokens: this rank's shard of the layout has ",
           run.plan->blocks_per_rank * run.block_size);
  if (run.hop_layouts) {
#ifdef RA_SPARSE_CUDA_KERNELS
    RA_CHECK(run.hop_layouts->device == q.device() &&
                 run.hop_layouts->hops.size() == run.plan->hops.size(),
             "block_sparse_attention: the hop layouts were uploaded to ", run.hop_layouts->device,
             " for another plan or device than q (", q.device(), ")");
    variable_list result = BlockSparseKernelFunction::apply(q, k, v, run);
    return {result[0], result[1]};
#else
    RA_THROW("block_sparse_attention: hop layouts given, but this build has no CUDA kernels");
#endif
  }
  variable_list result = BlockSparseFunction::apply(q, k, v, run);
  return {result[0], result[1]};
}

}  // namespace ra
