// block_sparse_attention_cuda and the per-hop launches: tensor checks, layout uploads, the
// single-device autograd function, the kernel launches on the current CUDA stream.
#include "attention/sparse/cuda/block_sparse_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>

#include "attention/sparse/cuda/block_sparse_kernels.h"
#include "runtime/cuda_check.h"
#include "runtime/error.h"

namespace ra {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

cuda::TensorStrides strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}

// q, out: [B, q_len, H, D]; k, v: [B, kv_len, H_kv, D].
cuda::BlockSparseShape shape_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& out, int64_t block_size) {
  cuda::BlockSparseShape s;
  s.batch = static_cast<int>(q.size(0));
  s.q_len = static_cast<int>(q.size(1));
  s.kv_len = static_cast<int>(k.size(1));
  s.heads = static_cast<int>(q.size(2));
  s.kv_heads = static_cast<int>(k.size(2));
  s.head_dim = static_cast<int>(q.size(3));
  s.block_size = static_cast<int>(block_size);
  s.q = strides_of(q);
  s.k = strides_of(k);
  s.v = strides_of(v);
  s.out = strides_of(out);
  return s;
}

cuda::SparseDType dtype_of(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? cuda::SparseDType::kBFloat16
                                          : cuda::SparseDType::kFloat16;
}

cuda::DeviceBlockLayout view_of(const SparseDeviceLayout& d) {
  cuda::DeviceBlockLayout l;
  l.row_offsets = d.row_offsets.data_ptr<int>();
  l.col_indices = d.col_indices.data_ptr<int>();
  l.col_offsets = d.col_offsets.data_ptr<int>();
  l.row_indices = d.row_indices.data_ptr<int>();
  l.causal = d.causal;
  l.diagonal_col = d.diagonal_col.defined() ? d.diagonal_col.data_ptr<int>() : nullptr;
  return l;
}

// The kernels read every tensor through raw pointers: same device and dtype, [B, n, H, D] with
// a contiguous head dim and 16-byte aligned rows (the stride rule is checked with the shape).
void check_operand(const at::Tensor& t, const at::Tensor& q, const char* what, int64_t tokens) {
  RA_CHECK(t.device() == q.device() && t.scalar_type() == q.scalar_type(), what, " is ",
           t.scalar_type(), " on ", t.device(), ": the block-sparse kernels need ", q.scalar_type(),
           " on ", q.device());
  RA_CHECK(t.dim() == 4 && t.size(0) == q.size(0) && t.size(1) == tokens && t.size(3) == q.size(3),
           what, " has shape ", t.sizes(), ": expected [", q.size(0), ", ", tokens, ", heads, ",
           q.size(3), "]");
  RA_CHECK(t.stride(3) == 1 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, what,
           " needs a contiguous, 16-byte aligned head dim");
}

// The kernels index `a` with b's strides; a dim of size 1 is only ever indexed at 0.
bool same_strides(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

void check_shape(const cuda::BlockSparseShape& shape, const at::Tensor& q, int64_t block_size) {
  if (const char* why = cuda::block_sparse_unsupported(shape)) {
    RA_THROW("q has shape ", q.sizes(), ", block_size = ", block_size,
             ": the block-sparse CUDA kernels need ", why);
  }
}

class BlockSparseCudaFunction : public torch::autograd::Function<BlockSparseCudaFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const at::Tensor& row_offsets,
                               const at::Tensor& col_indices, const at::Tensor& col_offsets,
                               const at::Tensor& row_indices, bool causal, int64_t block_size,
                               double scale) {
    at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    at::Tensor out = at::empty_like(qc);  // [B, S, H, D]
    at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)},
                               q.options().dtype(at::kFloat));  // [B, S, H]
    SparseDeviceLayout layout{row_offsets,  col_indices, col_offsets, row_indices,
                              at::Tensor(), causal,      block_size};
    block_sparse_forward_cuda(qc, kc, vc, layout, scale, out, lse);
    ctx->save_for_backward(
        {qc, kc, vc, out, lse, row_offsets, col_indices, col_offsets, row_indices});
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["block_size"] = block_size;
    ctx->saved_data["scale"] = scale;
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const at::Tensor &q = s[0], &k = s[1], &v = s[2], &out = s[3], &lse = s[4];
    SparseDeviceLayout layout{s[5],
                              s[6],
                              s[7],
                              s[8],
                              at::Tensor(),
                              ctx->saved_data["causal"].toBool(),
                              ctx->saved_data["block_size"].toInt()};
    const double scale = ctx->saved_data["scale"].toDouble();
    at::Tensor dout = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(out);
    at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
    block_sparse_backward_cuda(q, k, v, out, dout, lse, layout, scale, dq, dk, dv);
    at::Tensor none;
    return {dq, dk, dv, none, none, none, none, none, none, none};
  }
};

at::Tensor to_device_int32(const std::vector<int64_t>& values, const at::Device& device) {
  std::vector<int> narrow(values.begin(), values.end());
  return at::tensor(narrow, at::kInt).to(device);
}

// One hop's RowTasks as CSR (by query block) and CSC (by buffer slot), on the device.
SparseDeviceLayout upload_tasks(const std::vector<RowTask>& tasks, int64_t num_query_blocks,
                                int64_t num_key_blocks, bool causal, int64_t block_size,
                                const at::Device& device) {
  std::vector<std::vector<int64_t>> rows(num_query_blocks);
  std::vector<int64_t> diagonal(num_query_blocks, -1);
  for (const RowTask& task : tasks) {
    rows[task.query_block] = task.key_slots;
    diagonal[task.query_block] = task.diagonal_slot;
  }
  std::vector<int64_t> row_offsets(num_query_blocks + 1, 0), col_indices;
  std::vector<int64_t> col_offsets(num_key_blocks + 1, 0);
  for (int64_t i = 0; i < num_query_blocks; ++i) {
    col_indices.insert(col_indices.end(), rows[i].begin(), rows[i].end());
    row_offsets[i + 1] = static_cast<int64_t>(col_indices.size());
    for (int64_t j : rows[i]) ++col_offsets[j + 1];
  }
  for (int64_t j = 0; j < num_key_blocks; ++j) col_offsets[j + 1] += col_offsets[j];
  std::vector<int64_t> row_indices(col_indices.size()),
      fill(col_offsets.begin(), col_offsets.end() - 1);
  for (int64_t i = 0; i < num_query_blocks; ++i) {  // ascending query blocks in each column
    for (int64_t j : rows[i]) row_indices[fill[j]++] = i;
  }
  SparseDeviceLayout d;
  d.row_offsets = to_device_int32(row_offsets, device);
  d.col_indices = to_device_int32(col_indices, device);
  d.col_offsets = to_device_int32(col_offsets, device);
  d.row_indices = to_device_int32(row_indices, device);
  d.diagonal_col = to_device_int32(diagonal, device);
  d.causal = causal;
  d.block_size = block_size;
  return d;
}

// q, out: [B, q_len, H, D]; k, v: [B, kv_len, H_kv, D], as the layout's block counts say.
void check_attention_operands(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& out, const SparseDeviceLayout& layout) {
  const int64_t b = layout.block_size, q_len = layout.num_query_blocks() * b,
                kv_len = layout.num_key_blocks() * b;
  check_operand(q, q, "q", q_len);
  check_operand(k, q, "k", kv_len);
  check_operand(v, q, "v", kv_len);
  check_operand(out, q, "out", q_len);
}

}  // namespace

SparseDeviceLayout upload_layout(const BlockLayout& layout, const at::Device& device) {
  RA_CHECK(layout.active_blocks() < (int64_t{1} << 31), "block layout has ", layout.active_blocks(),
           " active blocks: the CUDA kernels index them with int32");
  SparseDeviceLayout d;
  d.row_offsets = to_device_int32(layout.row_offsets, device);
  d.col_indices = to_device_int32(layout.col_indices, device);
  d.col_offsets = to_device_int32(layout.col_offsets, device);
  d.row_indices = to_device_int32(layout.row_indices, device);
  d.causal = layout.causal;
  d.block_size = layout.block_size;
  return d;
}

SparseHopLayouts upload_hop_layouts(const SparseRingPlan& plan, bool causal, int64_t block_size,
                                    const at::Device& device) {
  SparseHopLayouts layouts;
  layouts.device = device;
  for (const SparseHop& hop : plan.hops) {
    const int64_t key_blocks =
        hop.hop == 0 ? plan.blocks_per_rank : static_cast<int64_t>(hop.recv_blocks.size());
    layouts.hops.push_back(
        upload_tasks(hop.tasks, plan.blocks_per_rank, key_blocks, causal, block_size, device));
  }
  return layouts;
}

bool block_sparse_cuda_supports(const at::Tensor& q, int64_t block_size) {
  return q.is_cuda() && (q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16) &&
         (q.size(3) == 64 || q.size(3) == 128) && (block_size == 64 || block_size == 128);
}

AttentionResult block_sparse_attention_cuda(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, const SparseDeviceLayout& layout,
                                            double scale) {
  RA_CHECK(q.is_cuda(), "q is on ", q.device(), ": the block-sparse kernels need CUDA tensors");
  RA_CHECK(q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf, "q has dtype ",
           q.scalar_type(), ": the block-sparse CUDA kernels take float16 or bfloat16");
  const int64_t seq = layout.num_query_blocks() * layout.block_size;
  RA_CHECK(q.size(1) == seq, "q has ", q.size(1), " tokens but the layout covers ", seq);
  at::Tensor out_like = at::empty_like(q, at::MemoryFormat::Contiguous);
  check_shape(shape_of(q.contiguous(), k.contiguous(), v.contiguous(), out_like, layout.block_size),
              q, layout.block_size);
  variable_list r = BlockSparseCudaFunction::apply(q, k, v, layout.row_offsets, layout.col_indices,
                                                   layout.col_offsets, layout.row_indices,
                                                   layout.causal, layout.block_size, scale);
  return {r[0], r[1]};
}

void block_sparse_forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const SparseDeviceLayout& layout, double scale, at::Tensor& out,
                               at::Tensor& lse) {
  const int64_t b = layout.block_size, q_len = layout.num_query_blocks() * b;
  check_attention_operands(q, k, v, out, layout);
  RA_CHECK(out.is_contiguous() && lse.is_contiguous() && lse.scalar_type() == at::kFloat &&
               lse.numel() == q.size(0) * q_len * q.size(2),
           "block_sparse_forward_cuda: out and lse must be contiguous, lse float32 [B, S, H]");
  const cuda::BlockSparseShape shape = shape_of(q, k, v, out, b);
  check_shape(shape, q, b);
  const c10::cuda::CUDAGuard guard(q.device());
  RA_CUDA_CHECK(cuda::block_sparse_forward(
      dtype_of(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr<float>(),
      shape, view_of(layout), static_cast<float>(scale), at::cuda::getCurrentCUDAStream()));
}

void block_sparse_backward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& out, const at::Tensor& dout,
                                const at::Tensor& lse, const SparseDeviceLayout& layout,
                                double scale, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv) {
  const int64_t b = layout.block_size, q_len = layout.num_query_blocks() * b,
                kv_len = layout.num_key_blocks() * b;
  check_attention_operands(q, k, v, out, layout);
  check_operand(dout, q, "dout", q_len);
  RA_CHECK(
      same_strides(dq, q) && same_strides(dk, k) && same_strides(dv, v) && same_strides(dout, out),
      "block_sparse_backward_cuda: dq/dk/dv/dout must have the strides of q/k/v/out");
  RA_CHECK(lse.is_contiguous() && lse.scalar_type() == at::kFloat &&
               lse.numel() == q.size(0) * q_len * q.size(2),
           "block_sparse_backward_cuda: lse must be float32 [B, S, H], contiguous");
  check_operand(dq, q, "dq", q_len);
  check_operand(dk, q, "dk", kv_len);
  check_operand(dv, q, "dv", kv_len);
  const cuda::BlockSparseShape shape = shape_of(q, k, v, out, b);
  check_shape(shape, q, b);
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor delta = at::empty_like(lse);  // [B, S, H] float32 workspace
  // The kernel choice is made once here, so the dq workspace (fused dQ only: [B * H * q_len *
  // 128] fp32 from the caching allocator, zeroed by the kernels on the stream) fits it.
  const cuda::SparseBackwardKernel kernels = cuda::block_sparse_backward_choice(shape);
  const size_t work_bytes = cuda::block_sparse_backward_workspace_bytes(shape, kernels);
  at::Tensor dq_work;
  if (work_bytes > 0) {
    dq_work = at::empty({static_cast<int64_t>(work_bytes / sizeof(float))},
                        q.options().dtype(at::kFloat));
  }
  RA_CUDA_CHECK(cuda::block_sparse_backward(
      dtype_of(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), dout.data_ptr(),
      lse.data_ptr<float>(), delta.data_ptr<float>(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
      shape, view_of(layout), static_cast<float>(scale), kernels,
      work_bytes > 0 ? dq_work.data_ptr<float>() : nullptr, at::cuda::getCurrentCUDAStream()));
}

}  // namespace ra
