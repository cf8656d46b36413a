// The ring form of block-sparse attention on every rank of the job: each rank's output, lse and
// dq/dk/dv shards equal the single-process computation (float64, 1e-10) for every pattern,
// causal and not; bytes sent are exactly the needed blocks and unneeded hops send nothing.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/factory.h"
#include "attention/sparse/sparse_dilated_attention.h"
#include "comm/mpi_communicator.h"
#include "tests/support/dense_reference.h"
#include "tests/support/sparse_cases.h"

namespace ra {
namespace {

std::shared_ptr<MpiCommunicator> world() {
  static auto comm = std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, 60);
  return comm;
}

constexpr int64_t kSeq = 256, kBlock = 16, kBatch = 2, kHeads = 2, kKvHeads = 1, kDim = 8;

using testing::sparse_pattern_cases;
using testing::sparse_test_attention;

TEST(MpiSparseAttention, ShardsEqualSingleProcess) {
  auto comm = world();
  const int P = comm->size(), r = comm->rank();
  const int64_t shard = kSeq / P;
  for (const auto& c : sparse_pattern_cases(kSeq, kBlock)) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(c.name + (causal ? " causal" : ""));
      torch::manual_seed(21);  // every rank draws the same global inputs
      auto opts = torch::TensorOptions().dtype(torch::kDouble);
      at::Tensor q = torch::randn({kBatch, kSeq, kHeads, kDim}, opts).requires_grad_();
      at::Tensor k = torch::randn({kBatch, kSeq, kKvHeads, kDim}, opts).requires_grad_();
      at::Tensor v = torch::randn({kBatch, kSeq, kKvHeads, kDim}, opts).requires_grad_();
      at::Tensor grad = torch::randn({kBatch, kSeq, kHeads, kDim}, opts);

      AttentionSpec spec;
      spec.attention = sparse_test_attention(kSeq, causal);
      spec.sparse = c.sparse;
      AttentionResult whole = make_attention("sparse", spec)->forward(q, k, v);
      auto g_whole = torch::autograd::grad({whole.out}, {q, k, v}, {grad});

      spec.comm = comm;
      auto ring = make_attention("sparse", spec);
      auto mine = [&](const at::Tensor& t) { return t.detach().narrow(1, r * shard, shard); };
      at::Tensor qs = mine(q).clone().requires_grad_();
      at::Tensor ks = mine(k).clone().requires_grad_();
      at::Tensor vs = mine(v).clone().requires_grad_();
      AttentionResult part = ring->forward(qs, ks, vs);
      auto g_part = torch::autograd::grad({part.out}, {qs, ks, vs}, {mine(grad)});

      EXPECT_LT(testing::relative_error(part.out, mine(whole.out)), 1e-10);
      EXPECT_LT(testing::relative_error(part.lse, mine(whole.lse)), 1e-10);
      EXPECT_LT(testing::relative_error(g_part[0], mine(g_whole[0])), 1e-10);
      EXPECT_LT(testing::relative_error(g_part[1], mine(g_whole[1])), 1e-10);
      EXPECT_LT(testing::relative_error(g_part[2], mine(g_whole[2])), 1e-10);
    }
  }
}

TEST(MpiSparseAttention, SendsOnlyNeededBlocksAndSkipsHops) {
  auto comm = world();
  const int P = comm->size(), r = comm->rank();
  // Block distances 0 and 1: a rank needs one block from each neighbour (no wrap-around), so it
  // sends one block to each neighbour and nothing to any other rank.
  SparseConfig sparse;
  sparse.block_size = kBlock;
  sparse.window = 2 * kBlock;
  auto attention =
      std::make_shared<SparseDilatedAttention>(sparse_test_attention(kSeq, false), sparse, comm);
  const int64_t shard = kSeq / P;
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  at::Tensor q = torch::randn({kBatch, shard, kHeads, kDim}, opts).requires_grad_();
  at::Tensor k = torch::randn({kBatch, shard, kKvHeads, kDim}, opts).requires_grad_();
  at::Tensor v = torch::randn({kBatch, shard, kKvHeads, kDim}, opts).requires_grad_();
  AttentionResult res = attention->forward(q, k, v);
  res.out.sum().backward();

  const int neighbours = P == 1 ? 0 : (r == 0 || r == P - 1) ? 1 : 2;
  const int64_t block_bytes = 2 * kBatch * kKvHeads * kBlock * kDim * sizeof(double);  // k and v
  const auto& stats = attention->comm_stats();
  EXPECT_EQ(stats.forward_bytes_sent, neighbours * block_bytes);
  // Backward: the blocks again, and their dK/dV back to the owner (same size in float64).
  EXPECT_EQ(stats.backward_bytes_sent, 2 * neighbours * block_bytes);
  // Hops 1 and P-1 only (one hop when P = 2); hop 0 is local.
  const int exchanged_hops = P == 1 ? 0 : P == 2 ? 1 : 2;
  EXPECT_EQ(stats.exchanges, 3 * exchanged_hops);
}

}  // namespace
}  // namespace ra
