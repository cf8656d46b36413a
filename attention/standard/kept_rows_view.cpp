// Strided views of kept rows (kept_rows_view.h).
#include "attention/standard/kept_rows_view.h"

#include "runtime/error.h"

namespace ra {

at::Tensor kept_rows_view(const at::Tensor& t, const cuda::KeptRows& g) {
  at::Tensor v = t.view({g.total_n(), g.segment, t.size(2), t.size(3)})  // [N, w', H, D]
                     .narrow(0, g.n_begin, g.size_n());
  v = v.slice(1, g.offset, g.offset + int64_t(g.kept - 1) * g.rate + 1, g.rate)
          .slice(2, g.head_start, g.head_start + int64_t(g.head_count - 1) * g.head_step + 1,
                 g.head_step);  // [N, L, h, D]
  return v.transpose(1, 2);     // [N, h, L, D]
}

at::Tensor stacked_rows_view(const at::Tensor& t, const cuda::KeptRows& first, int count) {
  RA_CHECK(t.dim() == 4 && t.is_contiguous(), "stacked_rows_view: t of shape ", t.sizes(),
           " must be a contiguous [B, S, H, D]");
  const int64_t H = t.size(2), D = t.size(3);
  const cuda::KeptRows& c = first;
  RA_CHECK(c.head_count == 1 && c.head_start + count <= H && c.offset + count <= c.rate,
           "stacked_rows_view: ", count, " groups from offset ", c.offset, " and head ",
           c.head_start, " (", c.head_count, " head(s) each) do not fit rate ", c.rate, " and ", H,
           " heads");
  // Group first + j: head head_start + j at rows offset + j + rate * l of each segment.
  return t.as_strided(
      {c.size_n(), count, c.kept, D}, {c.segment * H * D, (H + 1) * D, c.rate * H * D, 1},
      t.storage_offset() + (c.n_begin * c.segment + c.offset) * H * D + c.head_start * D);
}

}  // namespace ra
