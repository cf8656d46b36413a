// RoPE with float64 angles and a one-entry table cache (see rotary_embedding.h).
#include "runtime/rotary_embedding.h"

#include "runtime/error.h"
#if RA_TORCH_HAS_CUDA
#include "runtime/rotary_cuda.h"
#endif

namespace ra {

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double base) : head_dim_(head_dim), base_(base) {
  RA_CHECK(head_dim > 0 && head_dim % 2 == 0, "head_dim = ", head_dim,
           ": rotary position embedding needs an even head dim");
  RA_CHECK(base > 1.0, "rope base = ", base, ": must be > 1");
}

const RotaryEmbedding::Table& RotaryEmbedding::table(int64_t first_position, int64_t length,
                                                     const at::TensorOptions& options) const {
  if (cache_.first == first_position && cache_.length == length &&
      cache_.cos.device() == options.device() && cache_.cos.dtype() == options.dtype()) {
    return cache_;
  }
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto positions = at::arange(first_position, first_position + length, f64);              // [S]
  auto inv_freq = at::pow(base_, -at::arange(0, head_dim_, 2, f64) / double(head_dim_));  // [D/2]
  auto angles = at::outer(positions, inv_freq).view({1, length, 1, head_dim_ / 2});
  cache_.cos = angles.cos().to(options);
  cache_.sin = angles.sin().to(options);
  cache_.first = first_position;
  cache_.length = length;
  return cache_;
}

bool RotaryEmbedding::cuda_tables(const at::Tensor& x, int64_t first_position, at::Tensor& cos,
                                  at::Tensor& sin) const {
#if RA_TORCH_HAS_CUDA
  // GPU: one fused kernel with fp32 tables [S, D/2] (the op-by-op form costs ~8 strided,
  // broadcasting elementwise passes over q and k).
  if (x.is_cuda() && at::isFloatingType(x.scalar_type()) && x.scalar_type() != at::kDouble) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Table& t = table(first_position, x.size(1), x.options().dtype(at::kFloat));
    cos = t.cos.view({x.size(1), head_dim_ / 2}), sin = t.sin.view({x.size(1), head_dim_ / 2});
    return true;
  }
#endif
  (void)x, (void)first_position, (void)cos, (void)sin;
  return false;
}

at::Tensor RotaryEmbedding::rotate(const at::Tensor& x, int64_t first_position) const {
  RA_CHECK(x.dim() == 4 && x.size(3) == head_dim_, "rotary input must be [B, S, H, D = ", head_dim_,
           "], got ", x.sizes());
  RA_CHECK(first_position >= 0, "first_position = ", first_position, ": must be >= 0");
  at::Tensor cos, sin;
#if RA_TORCH_HAS_CUDA
  if (cuda_tables(x, first_position, cos, sin)) return rotate_pairs_cuda(x, cos, sin);
#endif
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const Table& t = table(first_position, x.size(1), x.options());
    cos = t.cos, sin = t.sin;
  }
  auto halves = x.chunk(2, -1);  // x1, x2: [B, S, H, D/2]
  return at::cat({halves[0] * cos - halves[1] * sin, halves[1] * cos + halves[0] * sin}, -1);
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::encode_query_key(const at::Tensor& q,
                                                                    const at::Tensor& k,
                                                                    int64_t first_position) const {
#if RA_TORCH_HAS_CUDA
  at::Tensor cos, sin;
  if (q.dim() == 4 && k.dim() == 4 && q.size(3) == head_dim_ && k.size(3) == head_dim_ &&
      q.size(1) == k.size(1) && first_position >= 0 && k.is_cuda() &&
      k.scalar_type() == q.scalar_type() && cuda_tables(q, first_position, cos, sin)) {
    return rotate_pairs_cuda(q, k, cos, sin);
  }
#endif
  return {rotate(q, first_position), rotate(k, first_position)};
}

}  // namespace ra
