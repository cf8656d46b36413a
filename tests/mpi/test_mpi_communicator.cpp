// MpiCommunicator on every rank of the job: each operation against the value computed locally,
// sub-communicators, and a timeout that fires instead of hanging.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "comm/mpi_communicator.h"

namespace ra {
namespace {

MpiCommunicator& world() {
  static MpiCommunicator comm(MPI_COMM_WORLD, 60);
  return comm;
}

// A tensor every rank can recompute for any rank: rank r holds r * 100 + arange(n).
at::Tensor rank_tensor(int r, int64_t n) { return torch::arange(n, torch::kDouble) + 100.0 * r; }

TEST(MpiCommunicator, SendRecvRingShift) {
  auto& c = world();
  const int P = c.size(), r = c.rank();
  at::Tensor send = rank_tensor(r, 7), recv = torch::full({7}, -1.0, torch::kDouble);
  c.send_recv(send, (r + 1) % P, recv, (r + P - 1) % P);
  EXPECT_TRUE(torch::equal(recv, rank_tensor((r + P - 1) % P, 7)));
}

TEST(MpiCommunicator, AllReduceAllGatherReduceScatterBroadcast) {
  auto& c = world();
  const int P = c.size(), r = c.rank();
  at::Tensor sum = rank_tensor(r, 5);
  c.all_reduce_sum(sum);
  at::Tensor want = torch::zeros({5}, torch::kDouble);
  for (int i = 0; i < P; ++i) want += rank_tensor(i, 5);
  EXPECT_TRUE(torch::allclose(sum, want));

  at::Tensor gathered = torch::empty({P * 3}, torch::kDouble);
  c.all_gather(rank_tensor(r, 3), gathered);
  for (int i = 0; i < P; ++i)
    EXPECT_TRUE(torch::equal(gathered.narrow(0, 3 * i, 3), rank_tensor(i, 3)));

  at::Tensor input = rank_tensor(r, 2 * P), part = torch::empty({2}, torch::kDouble);
  c.reduce_scatter_sum(input, part);
  at::Tensor full = torch::zeros({2 * P}, torch::kDouble);
  for (int i = 0; i < P; ++i) full += rank_tensor(i, 2 * P);
  EXPECT_TRUE(torch::allclose(part, full.narrow(0, 2 * r, 2)));

  at::Tensor b = rank_tensor(r, 4);
  c.broadcast(b, P - 1);
  EXPECT_TRUE(torch::equal(b, rank_tensor(P - 1, 4)));
  c.barrier();
}

TEST(MpiCommunicator, StartedAllGatherAndReduceScatterMatchTheBlockingOnes) {
  auto& c = world();
  const int P = c.size(), r = c.rank();
  at::Tensor mine = rank_tensor(r, 3), gathered = torch::empty({P * 3}, torch::kDouble);
  c.start_all_gather(mine, gathered)->wait();
  for (int i = 0; i < P; ++i)
    EXPECT_TRUE(torch::equal(gathered.narrow(0, 3 * i, 3), rank_tensor(i, 3)));

  at::Tensor input = rank_tensor(r, 2 * P), part = torch::empty({2}, torch::kDouble);
  c.start_reduce_scatter_sum(input, part)->wait();
  at::Tensor want = torch::empty({2}, torch::kDouble);
  c.reduce_scatter_sum(input, want);
  EXPECT_TRUE(torch::equal(part, want));
}

TEST(MpiCommunicator, SplitMakesIndependentGroups) {
  auto& c = world();
  auto sub = c.split(c.rank() % 2, c.rank());
  EXPECT_EQ(sub->rank(), c.rank() / 2);
  EXPECT_EQ(sub->size(), (c.size() + 1 - c.rank() % 2) / 2);
  at::Tensor one = torch::ones({1}, torch::kDouble);
  sub->all_reduce_sum(one);
  EXPECT_EQ(one.item<double>(), sub->size());
}

TEST(MpiCommunicator, RejectsWrongInputs) {
  auto& c = world();
  at::Tensor bf16 = torch::ones({4}, torch::kBFloat16);
  EXPECT_THROW(c.all_reduce_sum(bf16), Error);
  at::Tensor out = torch::empty({1}, torch::kDouble);
  EXPECT_THROW(c.all_gather(torch::ones({4}, torch::kDouble), out), Error);
}

TEST(MpiCommunicator, ReceiveFromSilentPeerTimesOut) {
  auto& c = world();
  if (c.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  MpiCommunicator comm(MPI_COMM_WORLD, 0.2);
  comm.set_context("step 7");
  // Rank 0 waits for a message rank 1 never sends.
  if (c.rank() == 0) {
    at::Tensor buf = torch::empty({1}, torch::kDouble);
    try {
      comm.send_recv(torch::ones({0}, torch::kDouble), 0, buf, 1);
      ADD_FAILURE() << "expected CommTimeout";
    } catch (const CommTimeout& e) {
      EXPECT_NE(e.message().find("rank 0"), std::string::npos);
      EXPECT_NE(e.message().find("send_recv"), std::string::npos);
      EXPECT_NE(e.message().find("step 7"), std::string::npos);
    }
  }
  c.barrier();
}

}  // namespace
}  // namespace ra
