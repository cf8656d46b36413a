// Query swap between mirror members: one send/receive with the mirror per tensor.
#include "attention/ring/query_swap.h"

#include <ATen/ATen.h>

namespace ra {
namespace {

// Keeps rows [0, kept) of x (dim 2), sends the rest to the mirror and appends the `incoming`
// rows it sends back.
at::Tensor swap_tail(const ShardTask& task, RingExchange& group, const at::Tensor& x, int64_t kept,
                     int64_t incoming) {
  std::vector<int64_t> shape = x.sizes().vec();
  shape[2] = incoming;
  at::Tensor received = at::empty(shape, x.options());
  group.swap(x.narrow(2, kept, x.size(2) - kept).contiguous(), received, task.mirror());
  return at::cat({x.narrow(2, 0, kept), received}, 2);
}

}  // namespace

at::Tensor to_query_rows(const ShardTask& task, RingExchange& group, const at::Tensor& mine) {
  if (!task.swaps_queries()) return mine;
  RA_CHECK(mine.size(2) == task.kept_of(task.member), "to_query_rows: ", mine.size(2),
           " rows, the task keeps ", task.kept_of(task.member));
  return swap_tail(task, group, mine, task.my_chunks()[0].count,
                   task.member_chunks[task.mirror()][1].count);
}

at::Tensor from_query_rows(const ShardTask& task, RingExchange& group, const at::Tensor& computed) {
  if (!task.swaps_queries()) return computed;
  return swap_tail(task, group, computed, task.my_chunks()[0].count, task.my_chunks()[1].count);
}

}  // namespace ra
