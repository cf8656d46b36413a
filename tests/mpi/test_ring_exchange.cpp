// RingExchange over the MPI backend: a block passed P times around the ring returns to its
// owner unchanged after visiting every rank, two interleaved streams (as in the ring backward)
// stay separate, the preallocated buffers are reused instead of reallocated, and the pairwise
// exchange (rank + t / rank - t) delivers every rank's block to every other, also as several
// tensors each way on the low-footprint duplicates of the exchange beside compute.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

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

// The allgather backward's pairwise exchange: at step t every rank sends to rank + t and
// receives from rank - t, all steps in flight at once; each rank gets every other rank's block
// once, and every transfer is counted. Peers outside the group are refused.
TEST(RingExchange, PairwiseExchangeReachesEveryRank) {
  RingExchange ring(world());
  const int P = ring.size(), r = ring.rank();
  std::vector<at::Tensor> sent, received;
  std::vector<std::unique_ptr<PendingTransfer>> pending;
  for (int t = 1; t < P; ++t) {
    const int to = (r + t) % P, from = (r + P - t) % P;
    sent.push_back(block_of(r, 4) + 10 * to);  // this rank's block for `to`
    received.push_back(torch::empty({4}));
    pending.push_back(ring.start_send_recv(sent.back(), to, received.back(), from, 7));
  }
  for (auto& p : pending) p->wait();
  for (int t = 1; t < P; ++t) {
    const int from = (r + P - t) % P;
    EXPECT_TRUE(torch::equal(received[t - 1], block_of(from, 4) + 10 * r)) << "step " << t;
  }
  EXPECT_EQ(ring.counters().transfers, P - 1);
  EXPECT_EQ(ring.counters().bytes_sent, (P - 1) * 4 * 4);
  at::Tensor buf = torch::empty({4});
  EXPECT_THROW(ring.start_send_recv(buf, P, buf, 0), Error);
  EXPECT_THROW(ring.start_send_recv(buf, 0, buf, -1), Error);
}

// Forwards to a real communicator and counts the duplicates made of it.
class DuplicateCounter : public Communicator {
 public:
  explicit DuplicateCounter(std::shared_ptr<Communicator> real) : real_(std::move(real)) {}
  int duplicates = 0;
  int rank() const override { return real_->rank(); }
  int size() const override { return real_->size(); }
  std::string backend() const override { return real_->backend(); }
  void send_recv(const at::Tensor& s, int dst, at::Tensor& r, int src) override {
    real_->send_recv(s, dst, r, src);
  }
  void all_reduce_sum(at::Tensor& t) override { real_->all_reduce_sum(t); }
  void all_gather(const at::Tensor& i, at::Tensor& o) override { real_->all_gather(i, o); }
  void reduce_scatter_sum(const at::Tensor& i, at::Tensor& o) override {
    real_->reduce_scatter_sum(i, o);
  }
  void broadcast(at::Tensor& t, int root) override { real_->broadcast(t, root); }
  void barrier() override { real_->barrier(); }
  std::shared_ptr<Communicator> split(int color, int key) override {
    return real_->split(color, key);
  }
  std::shared_ptr<Communicator> duplicate(int max_ctas) override {
    ++duplicates;
    return real_->duplicate(max_ctas);
  }

 private:
  std::shared_ptr<Communicator> real_;
};

// What rank a sends rank b in one exchange of several tensors: a count (none at times, so some
// ranks neither send nor receive in a step), sizes and dtypes that depend on both (so the two
// directions of a pair differ), values that name a, b and the round.
std::vector<at::Tensor> message(int a, int b, int round) {
  std::vector<at::Tensor> tensors;
  for (int i = 0; i < (a + 2 * b) % 3; ++i) {
    const auto dtype = i % 2 == 0 ? torch::kFloat : torch::kDouble;
    tensors.push_back((block_of(a, 2 + i + a) + 10 * b + 100 * double(round)).to(dtype));
  }
  return tensors;
}

// The exchange beside compute (the allgather backward's, RingConfig::exchange_ctas): several
// tensors each way, as many as each side holds, delivered in order, on one duplicate per CTA
// cap made by the first call and reused (0: the group's own communicator), counted as one
// transfer each, under the group's deadline; a negative cap refused.
TEST(RingExchange, BesideComputeExchangeUsesOneDuplicatePerCap) {
  auto counter = std::make_shared<DuplicateCounter>(world());
  RingExchange ring(counter);
  ring.set_timeout_seconds(20);
  const int P = ring.size(), r = ring.rank();
  const std::vector<int> caps = {2, 2, 0, 4};
  int64_t bytes = 0;
  for (size_t round = 0; round < caps.size(); ++round) {
    std::vector<std::vector<at::Tensor>> sent, received;
    std::vector<std::unique_ptr<PendingTransfer>> pending;
    for (int t = 1; t < P; ++t) {
      const int to = (r + t) % P, from = (r + P - t) % P;
      sent.push_back(message(r, to, int(round)));
      received.push_back({});
      for (const at::Tensor& like : message(from, r, int(round))) {
        received.back().push_back(torch::empty_like(like));
      }
      for (const at::Tensor& x : sent.back()) bytes += x.nbytes();
      pending.push_back(ring.start_send_recv_beside_compute(sent.back(), to, received.back(), from,
                                                            torch::kCPU, 9, caps[round]));
    }
    for (auto& p : pending) p->wait();
    for (int t = 1; t < P; ++t) {
      const int from = (r + P - t) % P;
      const std::vector<at::Tensor> want = message(from, r, int(round));
      ASSERT_EQ(received[t - 1].size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_TRUE(torch::equal(received[t - 1][i], want[i]))
            << "round " << round << " step " << t << " tensor " << i;
      }
    }
  }
  // A step where no rank has anything for its peers still completes on every rank.
  for (int t = 1; t < P; ++t) {
    ring.start_send_recv_beside_compute({}, (r + t) % P, {}, (r + P - t) % P, torch::kCPU, 9, 2)
        ->wait();
  }
  EXPECT_EQ(counter->duplicates, P > 1 ? 2 : 0);  // caps 2 and 4; 0: the group's own
  EXPECT_EQ(ring.counters().transfers, 5 * (P - 1));
  EXPECT_EQ(ring.counters().bytes_sent, bytes);
  EXPECT_EQ(counter->timeout_seconds(), 20);
  at::Tensor buf = torch::empty({3});
  EXPECT_THROW(ring.start_send_recv_beside_compute(buf, 0, buf, 0, torch::kCPU, 9, -1), Error);
  EXPECT_THROW(ring.start_send_recv_beside_compute(buf, P, buf, 0, torch::kCPU, 9, 2), Error);
}

}  // namespace
}  // namespace ra
