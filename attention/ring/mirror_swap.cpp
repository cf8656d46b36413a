// Row swap between mirror members: one send/receive with the mirror per tensor.
#include "attention/ring/mirror_swap.h"

#include <ATen/ATen.h>

#include <vector>

namespace ra {
namespace {

// Keeps rows [0, kept) of x along dim, sends the rest to the mirror and appends the `incoming`
// rows the mirror sends.
at::Tensor swap_tail(const ShardTask& task, RingExchange& group, const at::Tensor& x, int64_t dim,
                     int64_t kept, int64_t incoming) {
  std::vector<int64_t> shape = x.sizes().vec();
  shape[dim] = incoming;
  at::Tensor received = at::empty(shape, x.options());
  group.swap(x.narrow(dim, kept, x.size(dim) - kept).contiguous(), received, task.mirror());
  return at::cat({x.narrow(dim, 0, kept), received}, dim);
}

}  // namespace

at::Tensor to_compute_rows(const ShardTask& task, RingExchange& group, const at::Tensor& home,
                           int64_t dim) {
  if (!task.swaps_rows()) return home;
  const auto& mine = task.my_home_chunks();
  RA_CHECK(home.size(dim) == task.home_kept(), "to_compute_rows: ", home.size(dim),
           " rows, the task's home rows are ", task.home_kept());
  return swap_tail(task, group, home, dim, mine[0].count, task.my_chunks()[1].count);
}

at::Tensor from_compute_rows(const ShardTask& task, RingExchange& group, const at::Tensor& computed,
                             int64_t dim) {
  if (!task.swaps_rows()) return computed;
  RA_CHECK(computed.size(dim) == task.kept_of(task.member),
           "from_compute_rows: ", computed.size(dim), " rows, the task computes ",
           task.kept_of(task.member));
  const auto& mine = task.my_home_chunks();
  return swap_tail(task, group, computed, dim, mine[0].count, mine[1].count);
}

}  // namespace ra
