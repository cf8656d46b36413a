// RingExchange over the MPI backend: a block passed P times around the ring returns to its
// owner unchanged after visiting every rank, two interleaved streams (as in the ring backward)
// stay separate, and the preallocated buffers are reused instead of reallocated.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "comm/mpi_communicator.h"
#include "comm/ring_exchange.h"

namespace ra {
namespace {

std::shared_ptr<Communicator> world() {
  static auto comm = std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, 30);
  return comm;
}

at::Tensor block_of(int rank, int64_t n) { return torch::arange(n, torch::kFloat) + 1000 * rank; }

TEST(RingExchange, BlocksVisitEveryRankAndReturnHome) {
  RingExchange ring(world());
  const int P = ring.size(), r = ring.rank();
  at::Tensor held = block_of(r, 5);
  at::Tensor tracer = torch::full({1}, 0.0, torch::kDouble);  // sums the ranks visited
  for (int hop = 0; hop < P; ++hop) {
    const int owner = ((r - hop) % P + P) % P;
    EXPECT_TRUE(torch::equal(held, block_of(owner, 5))) << "hop " << hop;
    tracer += r;
    at::Tensor incoming = ring.buffer(hop % 2, {5}, held.options());
    at::Tensor tracer_in = ring.buffer(2 + hop % 2, {1}, tracer.options());
    ring.start(held, incoming, 0);
    ring.start(tracer, tracer_in, 1);
    ring.wait(0);
    ring.wait(1);
    held = incoming;
    tracer = tracer_in.clone();
  }
  EXPECT_TRUE(torch::equal(held, block_of(r, 5)));
  EXPECT_EQ(tracer.item<double>(), P * (P - 1) / 2.0);  // every rank added itself once
  if (P > 2) {
    EXPECT_GT(ring.counters().reuse_hits, 0);
    EXPECT_EQ(ring.counters().allocations, 4);  // 2 slots per stream, allocated once
  }
  EXPECT_EQ(ring.counters().transfers, 2 * P);
}

TEST(RingExchange, RejectsASecondTransferOnABusyStream) {
  RingExchange ring(world());
  at::Tensor send = block_of(ring.rank(), 3);
  at::Tensor recv = ring.buffer(0, {3}, send.options());
  ring.start(send, recv, 0);
  EXPECT_THROW(ring.start(send, recv, 0), Error);
  ring.wait(0);
  EXPECT_THROW(ring.wait(0), Error);
}

}  // namespace
}  // namespace ra
