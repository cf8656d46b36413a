// The ring form of block-sparse attention on every rank of the job: each rank's output, lse and
// dq/dk/dv shards equal the single-process computation (float64, 1e-10) for every pattern,
// causal and not; bytes sent are exactly the needed blocks and unneeded hops send nothing.
// Built twice: for CPU tensors over MPI (label mpi) and, with RA_TEST_ON_CUDA, for CUDA tensors
// over NCCL, one GPU per rank (tests/gpu, label gpu), where it also checks the ring form on the
// CUDA kernels (bf16, per hop) against the float64 dense masked reference.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>

#include "attention/factory.h"
#include "attention/sparse/sparse_dilated_attention.h"
#include "tests/support/dense_reference.h"
#include "tests/support/sparse_cases.h"

#include "tests/support/mpi_test_world.h"

#if defined(RA_TEST_ON_CUDA)
#include "tests/support/sparse_token_mask.h"
#endif

namespace ra {
namespace {

using testing::kDevice;
using testing::world;

constexpr int64_t kSeq = 256, kBlock = 16, kBatch = 2, kHeads = 2, kKvHeads = 1, kDim = 8;

using testing::sparse_pattern_cases;
using testing::sparse_test_attention;

TEST(MpiSparseAttention, ShardsEqualSingleProcess) {
  SKIP_WITHOUT_DEVICE();
  auto comm = world();
  const int P = comm->size(), r = comm->rank();
  const int64_t shard = kSeq / P;
  for (const auto& c : sparse_pattern_cases(kSeq, kBlock)) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(c.name + (causal ? " causal" : ""));
      torch::manual_seed(21);          // every rank draws the same global inputs
      auto draw = [](int64_t heads) {  // drawn on the CPU: the same on every rank and device
        return torch::randn({kBatch, kSeq, heads, kDim}, torch::kDouble).to(kDevice);
      };
      at::Tensor q = draw(kHeads).requires_grad_();
      at::Tensor k = draw(kKvHeads).requires_grad_();
      at::Tensor v = draw(kKvHeads).requires_grad_();
      at::Tensor grad = draw(kHeads);

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
  SKIP_WITHOUT_DEVICE();
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
  auto opts = torch::TensorOptions().dtype(torch::kDouble).device(kDevice);
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
  EXPECT_EQ(stats.kernel_hops, 0);  // float64: the torch-op path
}

#if defined(RA_TEST_ON_CUDA)
struct KernelCase {
  int64_t head_dim, block_size, heads, kv_heads;
};

// The ring form on the CUDA kernels (bf16, one launch per hop, merged by LSE) against the
// float64 dense masked reference on the whole sequence: this rank's out, lse and dq/dk/dv
// shards at the bf16 tolerance, every pattern, causal and not, D 64/128, block 64/128, GQA.
TEST(MpiSparseAttention, KernelRingMatchesDenseReference) {
  SKIP_WITHOUT_DEVICE();
  auto comm = world();
  const int P = comm->size(), r = comm->rank();
  constexpr int64_t B = 2, S = 1024;  // 8 blocks of 128 or 16 of 64: at least 2 per rank at P 4
  const int64_t shard = S / P;
  const KernelCase kernel_cases[] = {
      {128, 64, 4, 2}, {64, 128, 2, 1}, {64, 64, 4, 4}, {128, 128, 4, 1}};
  for (const auto& g : kernel_cases) {
    for (const auto& c : sparse_pattern_cases(S, g.block_size)) {
      for (bool causal : {false, true}) {
        SCOPED_TRACE(c.name + (causal ? " causal" : "") + " D=" + std::to_string(g.head_dim) +
                     " b=" + std::to_string(g.block_size) + " H=" + std::to_string(g.heads) +
                     " Hkv=" + std::to_string(g.kv_heads) + " P=" + std::to_string(P));
        torch::manual_seed(41);  // every rank draws the same global inputs (on the CPU)
        auto draw = [&](int64_t heads) {
          return torch::randn({B, S, heads, g.head_dim}, torch::kDouble).to(at::kBFloat16);
        };
        at::Tensor q = draw(g.heads), k = draw(g.kv_heads), v = draw(g.kv_heads);
        at::Tensor dout = draw(g.heads);
        auto mine = [&](const at::Tensor& t) { return t.detach().narrow(1, r * shard, shard); };

        const DilatedAttentionConfig attention = sparse_test_attention(S, causal);
        auto ring = std::make_shared<SparseDilatedAttention>(attention, c.sparse, comm);
        at::Tensor qs = mine(q).to(kDevice).requires_grad_();
        at::Tensor ks = mine(k).to(kDevice).requires_grad_();
        at::Tensor vs = mine(v).to(kDevice).requires_grad_();
        AttentionResult got = ring->forward(qs, ks, vs);
        auto gr = torch::autograd::grad({got.out}, {qs, ks, vs}, {mine(dout).to(kDevice)});
        EXPECT_GT(ring->comm_stats().kernel_hops, 0) << "the ring form did not use the kernels";

        auto to_ref = [](const at::Tensor& t) { return t.to(at::kDouble).requires_grad_(); };
        at::Tensor qd = to_ref(q), kd = to_ref(k), vd = to_ref(v);
        at::Tensor mask =
            testing::sparse_token_mask(c.sparse, attention, S).to(at::kDouble).unsqueeze(0);
        auto want = testing::dense_attention_with_counts(mask, qd, kd, vd,
                                                         1.0 / std::sqrt(double(g.head_dim)));
        auto gw = torch::autograd::grad({want.out}, {qd, kd, vd}, {dout.to(at::kDouble)});
        const double tol = testing::tolerance_for(at::kBFloat16);
        EXPECT_LT(testing::relative_error(got.out, mine(want.out)), tol);
        EXPECT_LT(testing::relative_error(got.lse, mine(want.lse)), tol);
        EXPECT_LT(testing::relative_error(gr[0], mine(gw[0])), tol);
        EXPECT_LT(testing::relative_error(gr[1], mine(gw[1])), tol);
        EXPECT_LT(testing::relative_error(gr[2], mine(gw[2])), tol);
      }
    }
  }
}
#endif

}  // namespace
}  // namespace ra
