// Sequence-parallel training invariants under mpirun:
// - the sharded model (each rank its S/P tokens at their global positions, loss = local sum /
//   global count, gradients summed over ranks) gives the single-process loss and gradients
//   (float64; segments local to a shard, so "standard" attention is exact here; and with ring
//   attention and bf16, offloaded checkpoints);
// - resuming from a checkpoint at step k reproduces the uninterrupted run's losses exactly;
// - incomplete checkpoints (no manifest, a *.tmp directory, another world size) are never
//   loaded; checkpoints of an older format are refused with a message naming both formats;
//   weights are saved as their own data, not as the flat buffers they are views of;
// - after training steps the model's parameters are still views of the flat buffers (the fp32
//   master itself, or in bf16 the rounded master) and their gradients views of the flat
//   gradient buffers;
// - gradients summed during backward (--overlap-grad-reduce on) train as summed after it;
// - a token file trains: each rank reads its shard, the first loss is about log(vocab) and
//   training on a repeating pattern lowers it.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "attention/factory.h"
#include "comm/mpi_communicator.h"
#include "runtime/checkpoint.h"
#include "runtime/flat_parameters.h"
#include "runtime/gradient_sync.h"
#include "runtime/model.h"
#include "runtime/token_dataset.h"
#include "runtime/trainer.h"
#include "tests/support/dense_reference.h"

namespace ra {
namespace {
namespace fs = std::filesystem;

std::shared_ptr<Communicator> world() {
  return std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, 60);
}

// A directory name every rank agrees on (rank 0's pid), fresh for each test.
std::string shared_temp_dir(Communicator& comm, const std::string& tag) {
  at::Tensor pid = at::full({1}, double(getpid()), at::kDouble);
  comm.broadcast(pid, 0);
  const std::string dir = "/tmp/ra_test_" + tag + "_" + std::to_string(int64_t(pid.item<double>()));
  if (comm.rank() == 0) fs::remove_all(dir);
  comm.barrier();
  return dir;
}

// A 2-layer causal model small enough for fp64 equality tests, dilation rates 1 and 2.
ModelConfig small_model(std::vector<int64_t> segment_lengths) {
  ModelConfig mc;
  mc.vocab_size = 40;
  mc.num_layers = 2;
  mc.embed_dim = 32;
  mc.num_heads = 4;
  mc.ffn_dim = 48;
  mc.attention.segment_lengths = std::move(segment_lengths);
  mc.attention.dilation_rates = {1, 2};
  mc.attention.causal = true;
  mc.loss_chunk_tokens = 5;
  return mc;
}

// Builds `config` twice with the same seed: once on one process over all S tokens with
// `full_variant`, once sharded over the ranks with `sharded_variant` (sharded_config); checks
// that the mean loss and every parameter gradient (all-reduced, in `bucket_bytes` buckets) match.
void expect_sharded_equals_single_process(const ModelConfig& config,
                                          const std::string& full_variant,
                                          const ModelConfig& sharded_config,
                                          const std::string& sharded_variant,
                                          int64_t bucket_bytes) {
  auto comm = world();
  const int64_t S = 64, B = 2, shard = S / comm->size();
  auto make = [&](const ModelConfig& c, const std::string& variant) {
    torch::manual_seed(3);
    LongNetLM m(c, [&] {
      AttentionSpec spec;
      spec.attention = c.attention;
      spec.comm = comm;
      return make_attention(variant, spec);
    });
    m->to(torch::kDouble);
    m->train();
    return m;
  };
  torch::manual_seed(99);  // same data on every rank
  auto tokens = torch::randint(0, 40, {B, S}, torch::kLong);
  auto targets = torch::randint(-1, 40, {B, S}, torch::kLong);
  const double count = (targets >= 0).sum().item<double>();

  LongNetLM full = make(config, full_variant);
  at::Tensor full_loss = full->loss_sum(full->hidden_states(tokens, 0), targets) / count;
  full_loss.backward();

  LongNetLM sharded = make(sharded_config, sharded_variant);
  const int64_t first = comm->rank() * shard;
  at::Tensor local_loss =
      sharded->loss_sum(sharded->hidden_states(tokens.narrow(1, first, shard), first),
                        targets.narrow(1, first, shard)) /
      count;
  local_loss.backward();
  std::vector<at::Tensor> params = sharded->parameters();
  all_reduce_gradients(params, *comm, bucket_bytes);
  at::Tensor loss = local_loss.detach().reshape({1}).clone();
  comm->all_reduce_sum(loss);

  EXPECT_NEAR(loss.item<double>(), full_loss.item<double>(), 1e-12);
  auto expected = full->named_parameters();
  for (const auto& item : sharded->named_parameters()) {
    EXPECT_LT(testing::relative_error(item.value().grad(), expected[item.key()].grad()), 1e-10)
        << item.key();
  }
}

TEST(SequenceParallel, ShardedLossAndGradientsEqualSingleProcess) {
  const ModelConfig mc = small_model({4, 16});  // segments local to every shard for P <= 4
  expect_sharded_equals_single_process(mc, "standard", mc, "standard",
                                       /*bucket_bytes=*/4096);  // several buckets
}

// Checkpoints stored in bf16 and offloaded (a CPU copy here) with ring attention, whose
// recompute in backward runs collectives: the sharded model still equals the single-process
// one with the same checkpoint storage.
TEST(SequenceParallel, RingWithBf16OffloadedCheckpointsEqualsSingleProcess) {
  ModelConfig mc = small_model({16, 64});  // 64 spans shards for P > 1
  mc.checkpointing = true;
  mc.ffn_chunk_tokens = 6;
  mc.checkpoint_dtype = at::kBFloat16;
  ModelConfig offloaded = mc;
  offloaded.offload_checkpoints = true;
  // One device: all S tokens, kept checkpoints; sharded: ring attention, offloaded checkpoints.
  expect_sharded_equals_single_process(mc, "standard", offloaded, "ring", 32ll << 20);
}

TrainConfig tiny_run(const std::string& save_dir) {
  TrainConfig c;
  c.seq_len = 64;
  c.batch_size = 2;
  c.layers = 2;
  c.embed_dim = 32;
  c.heads = 4;
  c.ffn_dim = 64;
  c.attention.segment_lengths = {16, 64};
  c.attention.dilation_rates = {1, 2};
  c.attention.causal = true;
  c.checkpointing = "on";
  c.device = "cpu";
  c.steps = 6;
  c.lr = 3e-3;
  c.warmup = 2;
  c.data = "synthetic:kv:4:4";
  c.save_dir = save_dir;
  c.seed = 5;
  c.threads = 1;
  return c;
}

DistributedRuntime cpu_runtime(std::shared_ptr<Communicator> comm) {
  DistributedRuntime r;
  r.world = comm;
  r.layout.world_size = comm->size();
  r.layout.rank = comm->rank();
  return r;
}

TEST(Checkpoint, ResumeAtStepKGivesTheUninterruptedLosses) {
  auto comm = world();
  const std::string dir = shared_temp_dir(*comm, "resume");
  std::vector<StepMetrics> uninterrupted;
  {
    Trainer t(tiny_run(dir), cpu_runtime(comm), nullptr);
    for (int64_t step = 1; step <= 6; ++step) {
      uninterrupted.push_back(t.train_step(step));
      if (step == 3) t.save(3);
    }
  }
  auto config = tiny_run(dir);
  config.resume = "auto";
  Trainer resumed(config, cpu_runtime(comm), nullptr);
  ASSERT_EQ(resumed.start_step(), 4);
  for (int64_t step = 4; step <= 6; ++step) {
    StepMetrics m = resumed.train_step(step);
    EXPECT_EQ(m.loss, uninterrupted[step - 1].loss) << "step " << step;  // exact on CPU
    EXPECT_EQ(m.grad_norm, uninterrupted[step - 1].grad_norm) << "step " << step;
  }
  // The losses do change from step to step (the test would be vacuous otherwise).
  EXPECT_NE(uninterrupted[3].loss, uninterrupted[5].loss);
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST(Checkpoint, IncompleteCheckpointsAreNeverLoaded) {
  auto comm = world();
  const std::string dir = shared_temp_dir(*comm, "partial");
  Trainer t(tiny_run(dir), cpu_runtime(comm), nullptr);
  t.train_step(1);
  t.save(1);
  const std::string good = checkpoint_directory(dir, 1);
  if (comm->rank() == 0) {
    // A save interrupted before the rename, one missing its manifest, one missing a rank file
    // and one from a job of another world size: all newer than step 1.
    fs::copy(good, checkpoint_directory(dir, 9) + ".tmp");
    fs::copy(good, checkpoint_directory(dir, 8));
    fs::remove(fs::path(checkpoint_directory(dir, 8)) / "manifest.json");
    fs::copy(good, checkpoint_directory(dir, 7));
    fs::remove(fs::path(checkpoint_directory(dir, 7)) / "rank_00000.pt");
    fs::copy(good, checkpoint_directory(dir, 6));
    std::string text;
    {
      std::ifstream in(fs::path(checkpoint_directory(dir, 6)) / "manifest.json");
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    const std::string from = "\"world_size\": " + std::to_string(comm->size());
    text.replace(text.find(from), from.size(),
                 "\"world_size\": " + std::to_string(comm->size() + 1));
    std::ofstream(fs::path(checkpoint_directory(dir, 6)) / "manifest.json") << text;
  }
  comm->barrier();
  auto latest = find_latest_checkpoint(dir, comm->size());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(*latest, good);
  for (int64_t step : {6, 7, 8}) {
    std::string reason;
    EXPECT_FALSE(is_complete_checkpoint(checkpoint_directory(dir, step), comm->size(), &reason));
    EXPECT_FALSE(reason.empty());
  }
  auto config = tiny_run(dir);
  config.resume = checkpoint_directory(dir, 8);
  EXPECT_THROW(Trainer(config, cpu_runtime(comm), nullptr), Error);
  config.resume = "auto";
  EXPECT_EQ(Trainer(config, cpu_runtime(comm), nullptr).start_step(), 2);
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

// The step as the trainer runs it, fp32 and bf16: after each step the model's parameters are
// views of the flat buffers holding the (rounded) master weights, and backward accumulated into
// the flat gradient buffers.
TEST(Trainer, ParamsStayViewsOfTheFlatMasterAfterSteps) {
  auto comm = world();
  for (const std::string dtype : {"fp32", "bf16"}) {
    SCOPED_TRACE("--dtype " + dtype);
    auto config = tiny_run("");
    config.dtype = dtype;
    Trainer t(config, cpu_runtime(comm), nullptr);
    const FlatParameters& flat = t.flat_parameters();
    EXPECT_EQ(flat.shares_master(), dtype == "fp32");
    std::vector<at::Tensor> before;
    for (const auto& m : flat.master_views()) before.push_back(m.clone());
    for (int64_t step = 1; step <= 2; ++step) {
      StepMetrics m = t.train_step(step);
      EXPECT_TRUE(std::isfinite(m.loss) && m.grad_norm > 0) << "step " << step;
      std::vector<at::Tensor> params = t.model()->parameters();
      ASSERT_EQ(params.size(), flat.master_views().size());
      for (size_t i = 0; i < params.size(); ++i) {
        const at::Tensor& p = params[i];
        const at::Tensor& master = flat.master_views()[i];
        EXPECT_EQ(p.scalar_type(), dtype == "bf16" ? at::kBFloat16 : at::kFloat) << i;
        EXPECT_EQ(p.grad().data_ptr(), flat.grad_views()[i].data_ptr()) << i;
        if (flat.shares_master()) {
          EXPECT_EQ(p.data_ptr(), master.data_ptr()) << i;
        } else {
          EXPECT_TRUE(torch::equal(p, master.to(at::kBFloat16))) << i;
        }
        const size_t g = p.dim() >= 2 ? FlatParameters::kDecay : FlatParameters::kNoDecay;
        const auto* base = static_cast<const char*>(flat.param_buffer(g).data_ptr());
        const auto* data = static_cast<const char*>(p.data_ptr());
        EXPECT_TRUE(data >= base && data + p.nbytes() <= base + flat.param_buffer(g).nbytes()) << i;
      }
    }
    for (size_t i = 0; i < before.size(); ++i) {
      EXPECT_FALSE(torch::equal(before[i], flat.master_views()[i])) << "master " << i << " moved";
    }
  }
}

// --overlap-grad-reduce on (block by block during backward, on a split communicator, beside the
// ring attention's own collectives) trains as off does (everything after backward): the same
// losses, gradient norms and weights up to the reduction order of the sums, and every rank
// holds the same weights.
TEST(Trainer, OverlappedGradientReduceEqualsReduceAfterBackward) {
  auto comm = world();
  for (const std::string checkpointing : {"on", "off"}) {
    SCOPED_TRACE("--checkpointing " + checkpointing);
    std::vector<StepMetrics> metrics[2];
    std::vector<at::Tensor> weights[2];
    for (int overlap = 0; overlap < 2; ++overlap) {
      auto config = tiny_run("");
      config.checkpointing = checkpointing;
      config.overlap_grad_reduce = overlap ? "on" : "off";
      Trainer t(config, cpu_runtime(comm), nullptr);
      for (int64_t step = 1; step <= 3; ++step) metrics[overlap].push_back(t.train_step(step));
      for (size_t g = 0; g < FlatParameters::kNumGroups; ++g) {
        weights[overlap].push_back(t.flat_parameters().master(g).detach().clone());
      }
    }
    for (size_t i = 0; i < metrics[0].size(); ++i) {
      EXPECT_NEAR(metrics[1][i].loss, metrics[0][i].loss, 1e-6 * std::abs(metrics[0][i].loss));
      EXPECT_NEAR(metrics[1][i].grad_norm, metrics[0][i].grad_norm, 1e-5 * metrics[0][i].grad_norm);
    }
    for (size_t g = 0; g < FlatParameters::kNumGroups; ++g) {
      EXPECT_LT((weights[1][g] - weights[0][g]).abs().max().item<double>(), 1e-6) << "group " << g;
      at::Tensor rank0 = weights[1][g].clone();
      comm->broadcast(rank0, 0);
      EXPECT_TRUE(torch::equal(rank0, weights[1][g])) << "group " << g << " differs from rank 0";
    }
  }
}

// Format 2 kept one AdamW state per parameter; this build refuses it by name, given as a
// directory and through --resume auto (which must not start over next to it).
TEST(Checkpoint, OlderFormatIsRefusedNamingBothFormats) {
  auto comm = world();
  const std::string dir = shared_temp_dir(*comm, "format");
  {
    Trainer t(tiny_run(dir), cpu_runtime(comm), nullptr);
    t.train_step(1);
    t.save(1);
  }
  const std::string step_dir = checkpoint_directory(dir, 1);
  if (comm->rank() == 0) {
    const fs::path manifest = fs::path(step_dir) / "manifest.json";
    std::string text;
    {
      std::ifstream in(manifest);
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    const std::string from = "\"ringattn-checkpoint-3\"";
    ASSERT_NE(text.find(from), std::string::npos) << text;
    text.replace(text.find(from), from.size(), "\"ringattn-checkpoint-2\"");
    std::ofstream(manifest) << text;
  }
  comm->barrier();
  for (const std::string& resume : {step_dir, std::string("auto")}) {
    auto config = tiny_run(dir);
    config.resume = resume;
    try {
      Trainer t(config, cpu_runtime(comm), nullptr);
      ADD_FAILURE() << "--resume " << resume << " loaded a format-2 checkpoint";
    } catch (const Error& e) {
      const std::string message = e.what();
      for (const std::string& part : {step_dir, std::string("\"ringattn-checkpoint-2\""),
                                      std::string("\"ringattn-checkpoint-3\"")}) {
        EXPECT_NE(message.find(part), std::string::npos) << "missing " << part << " in " << message;
      }
    }
  }
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

// The weights are views of flat buffers; each is stored as its own data (not the whole buffer)
// and holds the master values.
TEST(Checkpoint, WeightsAreSavedAsTheirOwnData) {
  auto comm = world();
  const std::string dir = shared_temp_dir(*comm, "views");
  Trainer t(tiny_run(dir), cpu_runtime(comm), nullptr);
  t.train_step(1);
  t.save(1);
  torch::serialize::InputArchive archive, model_archive;
  char file[32];
  std::snprintf(file, sizeof file, "rank_%05d.pt", comm->rank());
  archive.load_from((fs::path(checkpoint_directory(dir, 1)) / file).string());
  archive.read("model", model_archive);
  const NamedWeights& weights = t.flat_parameters().named_master();
  ASSERT_GT(weights.size(), 2u);
  for (const auto& w : weights) {
    at::Tensor stored;
    ASSERT_TRUE(model_archive.try_read(w.key(), stored)) << w.key();
    EXPECT_EQ(stored.storage().nbytes(), stored.nbytes()) << w.key();
    EXPECT_TRUE(torch::equal(stored, w.value())) << w.key();
  }
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST(TokenFileTraining, ShardedRanksTrainOnTheirSlices) {
  auto comm = world();
  const std::string dir = shared_temp_dir(*comm, "tokens");
  const std::string path = dir + "/tokens.bin";
  if (comm->rank() == 0) {
    fs::create_directories(dir);
    std::vector<uint32_t> tokens(40 * 64 + 1);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t((i * 5) % 37);  // learnable
    write_token_file(path, tokens, 2, 37);
  }
  comm->barrier();
  auto config = tiny_run("");
  config.data = path;
  config.steps = 30;
  config.lr = 1e-2;
  Trainer t(config, cpu_runtime(comm), nullptr);
  const double first = t.train_step(1).loss;
  EXPECT_NEAR(first, std::log(37.0), 1.0);
  double last = first;
  for (int64_t step = 2; step <= 30; ++step) last = t.train_step(step).loss;
  EXPECT_LT(last, 0.5 * first);
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

}  // namespace
}  // namespace ra
