// block_sparse_attention_cuda: tensor checks, the autograd function, the kernel launches on the
// current CUDA stream.
#include "attention/sparse/cuda/block_sparse_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <torch/csrc/autograd/custom_function.h>

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

// q, out: [B, S, H, D]; k, v: [B, S, H_kv, D].
cuda::BlockSparseShape shape_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& out, int64_t block_size) {
  cuda::BlockSparseShape s;
  s.batch = static_cast<int>(q.size(0));
  s.seq_len = static_cast<int>(q.size(1));
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

cuda::DeviceBlockLayout view_of(const at::Tensor& row_offsets, const at::Tensor& col_indices,
                                const at::Tensor& col_offsets, const at::Tensor& row_indices,
                                bool causal) {
  cuda::DeviceBlockLayout l;
  l.row_offsets = row_offsets.data_ptr<int>();
  l.col_indices = col_indices.data_ptr<int>();
  l.col_offsets = col_offsets.data_ptr<int>();
  l.row_indices = row_indices.data_ptr<int>();
  l.causal = causal;
  return l;
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
    RA_CUDA_CHECK(cuda::block_sparse_forward(
        dtype_of(q), qc.data_ptr(), kc.data_ptr(), vc.data_ptr(), out.data_ptr(),
        lse.data_ptr<float>(), shape_of(qc, kc, vc, out, block_size),
        view_of(row_offsets, col_indices, col_offsets, row_indices, causal),
        static_cast<float>(scale), at::cuda::getCurrentCUDAStream()));
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
    const bool causal = ctx->saved_data["causal"].toBool();
    const int64_t block_size = ctx->saved_data["block_size"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    at::Tensor dout = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(out);
    at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
    at::Tensor delta = at::empty_like(lse);  // [B, S, H] float32
    RA_CUDA_CHECK(cuda::block_sparse_backward(
        dtype_of(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), dout.data_ptr(),
        lse.data_ptr<float>(), delta.data_ptr<float>(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
        shape_of(q, k, v, out, block_size), view_of(s[5], s[6], s[7], s[8], causal),
        static_cast<float>(scale), at::cuda::getCurrentCUDAStream()));
    at::Tensor none;
    return {dq, dk, dv, none, none, none, none, none, none, none};
  }
};

at::Tensor to_device_int32(const std::vector<int64_t>& values, const at::Device& device) {
  std::vector<int> narrow(values.begin(), values.end());
  return at::tensor(narrow, at::kInt).to(device);
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

AttentionResult block_sparse_attention_cuda(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, const SparseDeviceLayout& layout,
                                            double scale) {
  RA_CHECK(q.is_cuda(), "q is on ", q.device(), ": the block-sparse kernels need CUDA tensors");
  RA_CHECK(q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf, "q has dtype ",
           q.scalar_type(), ": the block-sparse CUDA kernels take float16 or bfloat16");
  const int64_t seq = (layout.row_offsets.size(0) - 1) * layout.block_size;
  RA_CHECK(q.size(1) == seq, "q has ", q.size(1), " tokens but the layout covers ", seq);
  at::Tensor out_like = at::empty_like(q, at::MemoryFormat::Contiguous);
  cuda::BlockSparseShape shape =
      shape_of(q.contiguous(), k.contiguous(), v.contiguous(), out_like, layout.block_size);
  if (const char* why = cuda::block_sparse_unsupported(shape)) {
    RA_THROW("q has shape ", q.sizes(), ", block_size = ", layout.block_size,
             ": the block-sparse CUDA kernels need ", why);
  }
  variable_list r = BlockSparseCudaFunction::apply(q, k, v, layout.row_offsets, layout.col_indices,
                                                   layout.col_offsets, layout.row_indices,
                                                   layout.causal, layout.block_size, scale);
  return {r[0], r[1]};
}

}  // namespace ra
