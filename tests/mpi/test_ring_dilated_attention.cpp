// Sequence-parallel dilated attention ("ring" and "allgather") on every rank of the job: each
// rank's output and dq/dk/dv equal its shard of the float64 dense reference computed on the
// whole sequence (every rank rebuilds the same full input from a shared seed). Branch lists
// mix local branches, branches spanning 2 ranks and all ranks, rates that do not divide the
// segment, head groups that keep nothing; causal and not; both head modes; spanning head groups
// stacked (the default) and one by one; GQA (float64 and float32, and the bytes sent: K/V and
// dK/dV at k/v-head granularity); zigzag; bfloat16. Built
// twice: for CPU tensors over MPI (label mpi) and, with RA_TEST_ON_CUDA, for CUDA tensors over
// NCCL, one GPU per rank (tests/gpu, label gpu; skips without GPUs).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "attention/factory.h"
#include "attention/ring/ring_dilated_attention.h"
#include "attention/ring/segment_groups.h"
#include "attention/ring/zigzag_layout.h"
#include "tests/support/dense_reference.h"
#include "tests/support/mpi_test_world.h"

namespace ra {
namespace {

using testing::dense_dilated_attention;
using testing::relative_error;
using testing::tolerance_for;

using testing::kDevice;
using testing::world;

constexpr int64_t kShard = 16;  // tokens per rank; S = 16 P

// A short deadline, so a rank that fails with an exception makes the others fail fast
// instead of waiting the default minutes.
RingConfig ring_config(bool zigzag = false) {
  RingConfig ring;
  ring.zigzag = zigzag;
  ring.timeout_seconds = 20;
  return ring;
}

struct Case {
  std::string name;
  std::vector<int64_t> segments, rates;
};

// Branch lists for P ranks: local (w < S/P), spanning 2 ranks (P even), spanning all ranks.
std::vector<Case> cases(int P) {
  const int64_t S = kShard * P;
  const int64_t pair = P % 2 == 0 ? 2 * kShard : kShard;
  return {
      {"local_and_global", {kShard / 2, S}, {1, 2}},
      // w=4 r=6: head offsets 4, 5 keep nothing; r=3 and r=5 divide neither w nor S/P.
      {"mixed_rates", {4, pair, S}, {6, 3, 5}},
      {"sparse_global", {kShard / 4, S}, {2, 20}},  // r=20 > S/P: some ranks keep nothing
      {"dense", {S}, {1}},
  };
}

// Runs fn(case, config) for each case, non-causal and causal, head mode all and partition.
template <typename Fn>
void for_each_config(const std::vector<Case>& list, Fn&& fn) {
  for (const Case& c : list) {
    for (bool causal : {false, true}) {
      for (HeadMode mode : {HeadMode::kAll, HeadMode::kPartition}) {
        DilatedAttentionConfig config;
        config.segment_lengths = c.segments;
        config.dilation_rates = c.rates;
        config.causal = causal;
        config.head_mode = mode;
        fn(c, config);
      }
    }
  }
}

struct Inputs {
  at::Tensor q, k, v, dout;  // full sequence [B, S, H, D]
};

Inputs make_inputs(int64_t S, int64_t H, int64_t Hkv, at::ScalarType dtype) {
  torch::manual_seed(1234);  // the same on every rank
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const int64_t B = 2, D = 8;
  Inputs in{torch::randn({B, S, H, D}, opts), torch::randn({B, S, Hkv, D}, opts),
            torch::randn({B, S, Hkv, D}, opts), torch::randn({B, S, H, D}, opts)};
  in.q = in.q.to(dtype), in.k = in.k.to(dtype), in.v = in.v.to(dtype);
  return in;
}

struct Outcome {
  double out = 0, dq = 0, dk = 0, dv = 0, lse = 0;
};

// Runs the variant on this rank's shard and compares with the shard of the dense reference.
// `shard` maps a full [B, S, ...] tensor to this rank's part (plain or zigzag).
template <typename ShardFn>
Outcome compare(const std::string& variant, const DilatedAttentionConfig& config,
                const RingConfig& ring, const Inputs& in, ShardFn shard) {
  // Reference on the full sequence, float64 with autograd.
  at::Tensor q = in.q.to(torch::kDouble).requires_grad_();
  at::Tensor k = in.k.to(torch::kDouble).requires_grad_();
  at::Tensor v = in.v.to(torch::kDouble).requires_grad_();
  auto want = dense_dilated_attention(config, q, k, v);
  auto want_grads = torch::autograd::grad({want.out}, {q, k, v}, {in.dout});

  AttentionSpec spec{config, ring, {}, world()};
  auto attention = make_attention(variant, spec);
  at::Tensor qs = shard(in.q).to(kDevice).detach().requires_grad_();
  at::Tensor ks = shard(in.k).to(kDevice).detach().requires_grad_();
  at::Tensor vs = shard(in.v).to(kDevice).detach().requires_grad_();
  AttentionResult got = attention->forward(qs, ks, vs);
  got.lse = got.lse.cpu();
  at::Tensor dout = shard(in.dout).to(kDevice, got.out.scalar_type());
  auto grads = torch::autograd::grad({got.out}, {qs, ks, vs}, {dout});

  Outcome o;
  o.out = relative_error(got.out, shard(want.out));
  o.dq = relative_error(grads[0], shard(want_grads[0]));
  o.dk = relative_error(grads[1], shard(want_grads[1]));
  o.dv = relative_error(grads[2], shard(want_grads[2]));
  // LSE where a key was attended (elsewhere both are -inf).
  at::Tensor want_lse = shard(want.lse), finite = torch::isfinite(want_lse);
  EXPECT_TRUE(torch::equal(finite, torch::isfinite(got.lse))) << "lse -inf pattern differs";
  o.lse = relative_error(got.lse.masked_select(finite), want_lse.masked_select(finite));
  return o;
}

void expect_within(const Outcome& o, double tol, const std::string& what) {
  EXPECT_LT(o.out, tol) << what << " out";
  EXPECT_LT(o.lse, tol) << what << " lse";
  EXPECT_LT(o.dq, tol) << what << " dq";
  EXPECT_LT(o.dk, tol) << what << " dk";
  EXPECT_LT(o.dv, tol) << what << " dv";
}

at::Tensor plain_shard(const at::Tensor& full) {
  const int P = world()->size(), p = world()->rank();
  const int64_t shard = full.size(1) / P;
  return full.narrow(1, p * shard, shard);
}

class RingDilatedAttentionTest : public ::testing::TestWithParam<std::string> {};

// Every branch list, causal and not, both head modes, in float64. With GQA (H_kv < H) K/V
// travel at k/v-head granularity and are expanded after receipt; dK/dV are summed per k/v head
// before they return: H_kv = 2 and 1 over every branch list, and H = 8, H_kv = 4 with r = 3,
// whose head groups read k/v heads that are not a strided range ({0, 1, 3}).
TEST_P(RingDilatedAttentionTest, EqualsDenseReferenceFloat64) {
  SKIP_WITHOUT_DEVICE();
  const std::string variant = GetParam();
  const int P = world()->size();
  const int64_t S = kShard * P;
  struct Heads {
    int64_t h, hkv;
  };
  for (const Heads heads : {Heads{6, 6}, Heads{4, 2}, Heads{4, 1}, Heads{8, 4}}) {
    const Inputs in = make_inputs(S, heads.h, heads.hkv, torch::kDouble);
    const auto all = cases(P);
    const std::vector<Case> list = heads.h == 8 ? std::vector<Case>{all[1]} : all;
    for_each_config(list, [&](const Case& c, const DilatedAttentionConfig& config) {
      const std::string what =
          variant + " P=" + std::to_string(P) + " H=" + std::to_string(heads.h) +
          " H_kv=" + std::to_string(heads.hkv) + " " + c.name + " " + describe(config);
      expect_within(compare(variant, config, ring_config(), in, plain_shard), 1e-10, what);
    });
  }
}

// Counts the bytes this rank hands to every send-like operation of a communicator and of the
// communicators split from it (one counter for all of them).
class CountingCommunicator : public Communicator {
 public:
  CountingCommunicator(std::shared_ptr<Communicator> real, std::shared_ptr<int64_t> bytes)
      : real_(std::move(real)), bytes_(std::move(bytes)) {}

  int64_t bytes() const { return *bytes_; }
  int rank() const override { return real_->rank(); }
  int size() const override { return real_->size(); }
  std::string backend() const override { return real_->backend(); }
  void send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) override {
    *bytes_ += send.nbytes();
    real_->send_recv(send, dst, recv, src);
  }
  std::unique_ptr<PendingTransfer> start_send_recv(const at::Tensor& send, int dst,
                                                   at::Tensor& recv, int src, int tag) override {
    *bytes_ += send.nbytes();
    return real_->start_send_recv(send, dst, recv, src, tag);
  }
  std::unique_ptr<PendingTransfer> start_send_recv_many(at::TensorList sends, int dst,
                                                        at::TensorList recvs, int src,
                                                        at::Device device, int tag) override {
    for (const at::Tensor& t : sends) *bytes_ += t.nbytes();
    return real_->start_send_recv_many(sends, dst, recvs, src, device, tag);
  }
  void all_reduce_sum(at::Tensor& tensor) override {
    *bytes_ += tensor.nbytes();
    real_->all_reduce_sum(tensor);
  }
  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    *bytes_ += input.nbytes();
    real_->all_gather(input, output);
  }
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    *bytes_ += input.nbytes();
    real_->reduce_scatter_sum(input, output);
  }
  void broadcast(at::Tensor& tensor, int root) override {
    *bytes_ += tensor.nbytes();
    real_->broadcast(tensor, root);
  }
  void barrier() override { real_->barrier(); }
  std::shared_ptr<Communicator> split(int color, int key) override {
    return std::make_shared<CountingCommunicator>(real_->split(color, key), bytes_);
  }

 private:
  std::shared_ptr<Communicator> real_;
  std::shared_ptr<int64_t> bytes_;
};

// Bytes this rank sends in one forward + backward step of `config` with H query heads and H_kv
// k/v heads (a fresh counting communicator, so its own segment groups and ring buffers).
int64_t bytes_sent(const std::string& variant, const DilatedAttentionConfig& config, int64_t H,
                   int64_t Hkv, const RingConfig& ring = ring_config()) {
  auto comm = std::make_shared<CountingCommunicator>(world(), std::make_shared<int64_t>(0));
  AttentionSpec spec{config, ring, {}, comm};
  auto attention = make_attention(variant, spec);
  const Inputs in = make_inputs(kShard * comm->size(), H, Hkv, torch::kDouble);
  at::Tensor q = plain_shard(in.q).to(kDevice).requires_grad_();
  at::Tensor k = plain_shard(in.k).to(kDevice).requires_grad_();
  at::Tensor v = plain_shard(in.v).to(kDevice).requires_grad_();
  attention->forward(q, k, v).out.backward(plain_shard(in.dout).to(kDevice));
  return comm->bytes();
}

// With GQA the K/V (forward) and dK/dV (backward) cross the wire at k/v-head granularity: where
// every head group holds all query heads (dense, r = 1; or one group per k/v head in partition
// mode), a step sends exactly H_kv / H_kv' times the bytes of H_kv' k/v heads. Without GQA the
// ring sends the same per head; the allgather sends every block's dK/dV unsummed at the rows
// its calls cover (dense causal: member r's keys get blocks from ranks r..P-1 only). The causal
// balance adds the mirror swap (q, out, lse, dout, dq at the query heads, k, v, dk, dv at the
// k/v heads): measured without it, and its bytes checked separately.
TEST_P(RingDilatedAttentionTest, GqaSendsKvHeadBytesOnly) {
  SKIP_WITHOUT_DEVICE();
  const std::string variant = GetParam();
  const int P = world()->size(), r = world()->rank();
  if (P < 2) GTEST_SKIP() << "one rank sends nothing";
  const int64_t S = kShard * P, H = 4, B = 2, D = 8;
  DilatedAttentionConfig dense;
  dense.segment_lengths = {S};
  dense.dilation_rates = {1};
  dense.causal = true;
  RingConfig unbalanced = ring_config();
  unbalanced.balance_causal = false;
  const int64_t one_kv_head = bytes_sent(variant, dense, H, 1, unbalanced);
  ASSERT_GT(one_kv_head, 0);
  const bool allgather = variant == "allgather";
  if (allgather) {  // forward: this rank's K/V; backward: dK/dV of the ranks before it
    const int64_t kv_bytes = 2 * B * H * kShard * D * 8;
    EXPECT_EQ(bytes_sent(variant, dense, H, H, unbalanced), kv_bytes * (1 + r))
        << "allgather dense causal H_kv = H, rank " << r;
  }
  // Rank 0 swaps its second half (kShard / 2 rows, float64) with rank P - 1: forward q, k, v
  // there and out, lse back; backward q, k, v, out, lse, dout there and dq, dk, dv back.
  auto swap = [&](int64_t Hkv) { return ((6 * D + 2) * H + 6 * D * Hkv) * B * (kShard / 2) * 8; };
  const std::vector<int64_t> kv_heads =
      allgather ? std::vector<int64_t>{2, 1} : std::vector<int64_t>{4, 2, 1};
  for (int64_t Hkv : kv_heads) {
    const int64_t gqa = bytes_sent(variant, dense, H, Hkv, unbalanced);
    EXPECT_EQ(gqa, one_kv_head * Hkv) << variant << " dense H_kv=" << Hkv;
    if (world()->rank() == 0) {
      EXPECT_EQ(bytes_sent(variant, dense, H, Hkv) - gqa, swap(Hkv))
          << variant << " query swap bytes, dense H_kv=" << Hkv;
      std::cout << variant << " P=" << P << " dense causal S=" << S << " H=" << H
                << " D=8 B=2 fp64, bytes sent by rank 0 per step (fwd+bwd, unbalanced): H_kv=1: "
                << one_kv_head << ", H_kv=" << Hkv << ": " << gqa << std::endl;
    } else {
      bytes_sent(variant, dense, H, Hkv);  // collective: every rank runs it
    }
  }
  // Partition: two branches spanning all ranks, two query heads each, sharing one k/v head.
  DilatedAttentionConfig partition;
  partition.segment_lengths = {S, S};
  partition.dilation_rates = {1, 2};
  partition.head_mode = HeadMode::kPartition;
  EXPECT_EQ(bytes_sent(variant, partition, H, H), 2 * bytes_sent(variant, partition, H, 2))
      << variant << " partition H_kv=2";
}

// Spanning head groups run stacked by default (one block call and K/V message per hop for a
// branch's groups when they keep equal rows), and causal spanning segments balanced (mirror
// members swap their second halves); one by one, or each member computing its own
// rows, they give the same result.
TEST_P(RingDilatedAttentionTest, UnstackedOrUnbalancedEqualsDenseReference) {
  SKIP_WITHOUT_DEVICE();
  const std::string variant = GetParam();
  const int P = world()->size();
  const Inputs in = make_inputs(kShard * P, 6, 6, torch::kDouble);
  RingConfig unstacked = ring_config(), unbalanced = ring_config();
  unstacked.stack_head_groups = false;
  unbalanced.balance_causal = false;
  for_each_config(cases(P), [&](const Case& c, const DilatedAttentionConfig& config) {
    expect_within(compare(variant, config, unstacked, in, plain_shard), 1e-10,
                  variant + " unstacked " + c.name + " " + describe(config));
    if (!config.causal) return;  // nothing to balance
    expect_within(compare(variant, config, unbalanced, in, plain_shard), 1e-10,
                  variant + " unbalanced " + c.name + " " + describe(config));
  });
}

TEST_P(RingDilatedAttentionTest, EqualsDenseReferenceFloat32AndGqa) {
  SKIP_WITHOUT_DEVICE();
  const std::string variant = GetParam();
  const int P = world()->size();
  const int64_t S = kShard * P, H = 4;
  const Inputs in = make_inputs(S, H, /*Hkv=*/2, torch::kFloat);
  DilatedAttentionConfig config;
  config.segment_lengths = cases(P)[1].segments;
  config.dilation_rates = cases(P)[1].rates;
  for (bool causal : {false, true}) {
    config.causal = causal;
    expect_within(compare(variant, config, ring_config(), in, plain_shard),
                  tolerance_for(torch::kFloat), variant + " float32 GQA " + describe(config));
  }
}

// On CUDA, bf16 shards run their local branches through the fused single-GPU kernels and merge
// the spanning ones into them (ShardedAttentionPlan::fused_local): branch lists with local and
// spanning branches, both head modes, causal and not, GQA.
TEST_P(RingDilatedAttentionTest, EqualsDenseReferenceBFloat16) {
  SKIP_WITHOUT_DEVICE();
  const std::string variant = GetParam();
  const int P = world()->size();
  const int64_t S = kShard * P, H = 4;
  for (const int64_t hkv : {H, H / 2}) {
    const Inputs in = make_inputs(S, H, hkv, torch::kBFloat16);
    const auto all = cases(P);
    for_each_config({all[0], all[1], all[3]},
                    [&](const Case& c, const DilatedAttentionConfig& config) {
                      expect_within(compare(variant, config, ring_config(), in, plain_shard),
                                    tolerance_for(torch::kBFloat16),
                                    variant + " bfloat16 H_kv=" + std::to_string(hkv) + " " +
                                        c.name + " " + describe(config));
                    });
  }
}

TEST_P(RingDilatedAttentionTest, ZigzagDenseCausalEqualsReference) {
  SKIP_WITHOUT_DEVICE();
  const std::string variant = GetParam();
  const int P = world()->size(), p = world()->rank();
  const int64_t S = kShard * P;
  const Inputs in = make_inputs(S, 3, 3, torch::kDouble);
  DilatedAttentionConfig config;
  config.segment_lengths = {S};
  config.dilation_rates = {1};
  config.causal = true;
  RingConfig ring = ring_config(/*zigzag=*/true);
  // exchange_ctas > 0: the allgather's dK/dV exchange on a duplicate communicator.
  for (int ctas : {0, 2}) {
    ring.exchange_ctas = ctas;
    expect_within(compare(variant, config, ring, in,
                          [&](const at::Tensor& t) { return zigzag_shard(t, p, P); }),
                  1e-10, variant + " zigzag, exchange_ctas " + std::to_string(ctas));
  }
}

// Where the layer's work is one spanning task over all of a rank's rows (the dense ring, plain
// or zigzag), backward writes dk and dv once into the two halves of one tensor, in the input
// dtype, and returns them as they are: k.grad and v.grad are views of one storage, dv right after
// dk. (The equality of what they hold is checked above; this fails if the write-once path is
// skipped, which no equality test can see.) A plan of two branches takes the general path.
TEST_P(RingDilatedAttentionTest, DenseRingWritesItsGradientsOnce) {
  SKIP_WITHOUT_DEVICE();
  const int P = world()->size(), p = world()->rank();
  const int64_t S = kShard * P;
  const Inputs in = make_inputs(S, 2, 2, torch::kDouble);
  auto layout = [&](bool zigzag) {
    RingConfig ring = ring_config(zigzag);
    ring.strategy = parse_ring_strategy(GetParam());
    return ring;
  };
  auto grads_of = [&](const DilatedAttentionConfig& config, const RingConfig& ring,
                      const std::function<at::Tensor(const at::Tensor&)>& shard) {
    RingDilatedAttention attention(config, ring, world());
    at::Tensor q = shard(in.q).to(kDevice).requires_grad_();
    at::Tensor k = shard(in.k).to(kDevice).requires_grad_();
    at::Tensor v = shard(in.v).to(kDevice).requires_grad_();
    attention.forward(q, k, v).out.backward(shard(in.dout).to(kDevice));
    return std::make_pair(k.grad(), v.grad());
  };
  // One storage, not merely adjacent addresses: the caching allocator may place two separate
  // allocations back to back, so the adjacency alone passes the general path too on a GPU.
  auto one_storage = [](const std::pair<at::Tensor, at::Tensor>& g) {
    return g.first.is_alias_of(g.second) &&
           g.first.data_ptr<double>() + g.first.numel() == g.second.data_ptr<double>();
  };
  DilatedAttentionConfig causal;
  causal.segment_lengths = {S};
  causal.dilation_rates = {1};
  causal.causal = true;
  EXPECT_TRUE(one_storage(grads_of(causal, layout(true), [&](const at::Tensor& t) {
    return zigzag_shard(t, p, P);
  }))) << "zigzag";
  DilatedAttentionConfig full = causal;  // plain layout; not causal, so nothing is balanced
  full.causal = false;
  if (P > 1) {  // on one rank the branch is local: the single-device path
    EXPECT_TRUE(one_storage(grads_of(full, layout(false), plain_shard))) << "plain layout";
  }
  DilatedAttentionConfig two = full;
  two.segment_lengths = {S, S};
  two.dilation_rates = {1, 2};
  EXPECT_FALSE(one_storage(grads_of(two, layout(false), plain_shard))) << "two branches";
}

TEST_P(RingDilatedAttentionTest, LocalBranchesDoNotCommunicateAndBuffersAreShared) {
  SKIP_WITHOUT_DEVICE();
  const int P = world()->size();
  const int64_t S = kShard * P;
  const Inputs in = make_inputs(S, 4, 4, torch::kDouble);
  auto shard = [&](const at::Tensor& t) { return plain_shard(t).to(kDevice); };
  RingConfig strategy = ring_config();
  strategy.strategy = parse_ring_strategy(GetParam());
  DilatedAttentionConfig local;
  local.segment_lengths = {kShard / 2, kShard};
  local.dilation_rates = {1, 2};
  RingDilatedAttention only_local(local, strategy, world());
  const auto before = only_local.buffer_counters();
  at::Tensor q = shard(in.q).requires_grad_();
  only_local.forward(q, shard(in.k), shard(in.v)).out.sum().backward();
  EXPECT_EQ(only_local.buffer_counters().transfers, before.transfers);
  EXPECT_EQ(only_local.buffer_counters().bytes_sent, before.bytes_sent);
  if (P >= 2) {  // what the counters above would show: a branch over all shards is counted
    DilatedAttentionConfig spanning;
    spanning.segment_lengths = {S};
    spanning.dilation_rates = {1};
    RingDilatedAttention across(spanning, strategy, world());
    at::Tensor qa = shard(in.q).requires_grad_();
    across.forward(qa, shard(in.k), shard(in.v)).out.sum().backward();
    EXPECT_GT(across.buffer_counters().transfers, 0);
    EXPECT_GT(across.buffer_counters().bytes_sent, 0);
  }

  if (P < 2 || GetParam() != "ring") return;
  // Two "layers" on one communicator share the ring buffers: after the first layer's step the
  // second one allocates nothing.
  DilatedAttentionConfig global;
  global.segment_lengths = {S};
  global.dilation_rates = {2};
  RingDilatedAttention layer1(global, ring_config(), world()),
      layer2(global, ring_config(), world());
  layer1.forward(shard(in.q), shard(in.k), shard(in.v));
  const auto after_first = layer1.buffer_counters();
  layer2.forward(shard(in.q), shard(in.k), shard(in.v));
  const auto after_second = layer2.buffer_counters();
  EXPECT_GT(after_second.bytes_sent, after_first.bytes_sent);
  EXPECT_EQ(after_second.allocations, after_first.allocations);
  EXPECT_GT(after_second.reuse_hits, after_first.reuse_hits);
  EXPECT_GT(after_second.bytes_reserved, 0);
}

TEST_P(RingDilatedAttentionTest, RejectsBadLayouts) {
  SKIP_WITHOUT_DEVICE();
  const int P = world()->size();
  DilatedAttentionConfig dilated;
  dilated.segment_lengths = {kShard * P};
  dilated.dilation_rates = {2};
  dilated.causal = true;
  const RingConfig zigzag = ring_config(/*zigzag=*/true);
  AttentionSpec spec{dilated, zigzag, {}, world()};
  auto attention = make_attention(GetParam(), spec);
  at::Tensor x = torch::randn({1, kShard, 2, 8}, torch::kDouble).to(kDevice);
  try {
    attention->forward(x, x, x);
    ADD_FAILURE() << "zigzag with a dilated config must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("zigzag"), std::string::npos) << e.what();
  }
  AttentionSpec no_comm{dilated, ring_config(), {}, nullptr};
  try {
    make_attention(GetParam(), no_comm);
    ADD_FAILURE() << "a null communicator must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(GetParam()), std::string::npos) << e.what();
  }
  if (P > 1) {
    // A segment that neither divides the shard nor is a multiple of it.
    DilatedAttentionConfig odd;
    odd.segment_lengths = {kShard + kShard / 2};
    odd.dilation_rates = {1};
    AttentionSpec odd_spec{odd, ring_config(), {}, world()};
    at::Tensor y = torch::randn({1, kShard, 2, 8}, torch::kDouble).to(kDevice);
    if ((kShard * P) % (kShard + kShard / 2) == 0) {
      EXPECT_THROW(make_attention(GetParam(), odd_spec)->forward(y, y, y), Error);
    }
  }
}

// Backward reads the returned output itself (no second copy of it is kept): changing it in
// place before backward is an error naming the in-place change, never a wrong gradient.
TEST_P(RingDilatedAttentionTest, OutputChangedInPlaceBeforeBackwardIsAnError) {
  SKIP_WITHOUT_DEVICE();
  DilatedAttentionConfig dense;
  dense.segment_lengths = {kShard * world()->size()};
  dense.dilation_rates = {1};
  dense.causal = true;
  AttentionSpec spec{dense, ring_config(/*zigzag=*/true), {}, world()};
  auto attention = make_attention(GetParam(), spec);
  at::Tensor q = torch::randn({1, kShard, 2, 8}, torch::kDouble).to(kDevice).requires_grad_();
  AttentionResult r = attention->forward(q, q, q);
  at::Tensor dout = torch::ones_like(r.out);
  auto intact = torch::autograd::grad({r.out}, {q}, {dout}, /*retain_graph=*/true);
  EXPECT_TRUE(torch::isfinite(intact[0]).all().item<bool>());
  r.out.mul_(2);
  try {
    torch::autograd::grad({r.out}, {q}, {dout});
    ADD_FAILURE() << "backward after an in-place change of the output must fail";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("inplace operation"), std::string::npos) << e.what();
  }
}

// Segment-group communicators made at step 1 follow the world's deadline and context on every
// forward (RingDilatedAttention calls follow_world), so a timeout in a group names the current
// step, not the step that created it.
TEST(SegmentGroups, GroupsFollowTheWorldsDeadlineAndContext) {
  const int P = world()->size();
  std::shared_ptr<Communicator> mine = world()->split(0, world()->rank());  // settings stay local
  SegmentGroups groups(mine);
  mine->set_context("step 1");
  groups.follow_world(30);
  RingExchange& alone = groups.group(1);  // a split made now, at step 1
  RingExchange& all = groups.group(P);    // the world itself
  EXPECT_EQ(alone.comm().context(), "step 1");
  mine->set_context("step 2");
  groups.follow_world(12);
  for (RingExchange* ring : {&alone, &all}) {
    EXPECT_EQ(ring->comm().context(), "step 2");
    EXPECT_EQ(ring->comm().timeout_seconds(), 12);
  }
  EXPECT_EQ(mine->timeout_seconds(), 12);
}

INSTANTIATE_TEST_SUITE_P(Strategies, RingDilatedAttentionTest,
                         ::testing::Values(std::string("ring"), std::string("allgather")),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ra
