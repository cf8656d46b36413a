// Gradient reduction during backward: the model's backward-stage hook fires once per stage, in
// decreasing order, when that stage's parameter gradients are already final (checkpointed or
// not, fused norms or not); and GradientReducer reduces every slice of the flat gradient buffers
// exactly once per step (a communicator that doubles what it reduces, as two identical ranks
// would, tells a slice reduced twice or never from one reduced once).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "runtime/flat_parameters.h"
#include "runtime/gradient_reducer.h"
#include "runtime/model.h"
#include "tests/support/tiny_model.h"

namespace ra {
namespace {

constexpr int64_t kLayers = 3;

void forward_backward(LongNetLM& model, int64_t step) {
  torch::manual_seed(100 + step);
  auto tokens = torch::randint(0, 50, {2, 32}, torch::kLong);
  auto targets = torch::randint(-1, 50, {2, 32}, torch::kLong);
  (model->loss_sum(model->hidden_states(tokens, 0), targets, targets) / 40.0).backward();
}

struct HookCase {
  std::string name;
  bool checkpointing;
  int64_t checkpoint_layers;  // -1 = all
  bool fused_norms;
  int64_t recompute_ffn_layers = 0;
};

// At each hook call the stage's gradients are cloned; after backward they must be unchanged.
TEST(BackwardStageHook, StagesArriveInDecreasingOrderWithTheirFinalGradients) {
  const std::vector<HookCase> cases = {
      {"no checkpointing", false, -1, true},
      {"all blocks checkpointed", true, -1, true},
      {"first block checkpointed", true, 1, true},
      {"ATen norms, no checkpointing", false, -1, false},
      {"ATen norms, first two checkpointed", true, 2, false},
      {"FFN of blocks 0, 1 recomputed", false, -1, true, 2},
      {"block 0 checkpointed, FFN of 1 recomputed", true, 1, true, 1}};
  for (const HookCase& c : cases) {
    SCOPED_TRACE(c.name);
    ModelConfig config = testing::tiny_model_config(kLayers, c.checkpointing);
    config.checkpoint_layers = c.checkpoint_layers;
    config.fused_norms = c.fused_norms;
    config.recompute_ffn_layers = c.recompute_ffn_layers;
    LongNetLM model = testing::make_standard_model(config, torch::kDouble);
    const auto stages = model->backward_stage_parameters();
    ASSERT_EQ(stages.size(), size_t(kLayers + 1));
    std::vector<size_t> order;
    std::map<size_t, std::vector<at::Tensor>> at_hook;  // stage -> its gradients then
    model->set_backward_stage_hook([&](size_t stage) {
      order.push_back(stage);
      for (const auto& p : stages[stage]) {
        at_hook[stage].push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
      }
    });
    for (int64_t step = 1; step <= 2; ++step) {  // the hook is registered anew each forward
      SCOPED_TRACE("step " + std::to_string(step));
      order.clear(), at_hook.clear();
      for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
      forward_backward(model, step);
      EXPECT_EQ(order, (std::vector<size_t>{3, 2, 1, 0}));
      for (const auto& [stage, grads] : at_hook) {
        for (size_t i = 0; i < grads.size(); ++i) {
          const at::Tensor& final_grad = stages[stage][i].grad();
          ASSERT_TRUE(grads[i].defined()) << "stage " << stage << " parameter " << i;
          EXPECT_TRUE(torch::equal(grads[i], final_grad))
              << "stage " << stage << " parameter " << i << " changed after its hook";
        }
      }
    }
    // Without grad (eval) nothing is registered.
    order.clear();
    {
      torch::NoGradGuard no_grad;
      model->hidden_states(torch::zeros({1, 32}, torch::kLong), 0);
    }
    EXPECT_TRUE(order.empty());
  }
}

// Two identical ranks: all_reduce_sum doubles in place.
class DoublingCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string backend() const override { return "doubling"; }
  void send_recv(const at::Tensor&, int, at::Tensor&, int) override { RA_THROW("unused"); }
  void all_reduce_sum(at::Tensor& tensor) override {
    tensor.mul_(2);
    reduced_elements += tensor.numel();
    ++calls;
  }
  void all_gather(const at::Tensor&, at::Tensor&) override { RA_THROW("unused"); }
  void reduce_scatter_sum(const at::Tensor&, at::Tensor&) override { RA_THROW("unused"); }
  void broadcast(at::Tensor&, int) override { RA_THROW("unused"); }
  void barrier() override {}
  std::shared_ptr<Communicator> split(int, int) override { RA_THROW("unused"); }
  int64_t reduced_elements = 0;
  int calls = 0;
};

TEST(GradientReducer, ReducesEverySliceOnceDuringBackward) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const bool checkpointing : {false, true}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + (checkpointing ? ", checkpointed" : ""));
      const ModelConfig config = testing::tiny_model_config(kLayers, checkpointing);
      LongNetLM reference = testing::make_standard_model(config);  // reduced after backward
      LongNetLM model = testing::make_standard_model(config);      // reduced during backward
      FlatParameters reference_flat(reference->named_parameters(), dtype);
      FlatParameters flat(model->named_parameters(), dtype);
      auto comm = std::make_shared<DoublingCommunicator>();
      GradientReducer reducer(flat, model->backward_stage_parameters(), comm);
      int calls_in_backward = 0;
      model->set_backward_stage_hook([&](size_t stage) {
        reducer.stage_done(stage);
        calls_in_backward = comm->calls;
      });
      for (int64_t step = 1; step <= 2; ++step) {
        SCOPED_TRACE("step " + std::to_string(step));
        reference_flat.zero_grad(), flat.zero_grad();
        comm->reduced_elements = 0, comm->calls = 0;
        forward_backward(reference, step);
        forward_backward(model, step);
        EXPECT_GT(calls_in_backward, 0);  // reductions started before backward returned
        reducer.finish();
        EXPECT_EQ(reducer.stages_reported_last_step(), size_t(kLayers + 1));
        reference_flat.collect_grads();
        for (size_t g = 0; g < FlatParameters::kNumGroups; ++g) {
          const at::Tensor expected = reference_flat.master(g).grad() * 2;
          EXPECT_TRUE(torch::equal(flat.master(g).grad(), expected)) << "group " << g;
        }
        int64_t param_elements = 0;
        for (const auto& p : flat.params()) param_elements += p.numel();
        // Each parameter once; alignment gaps only between parameters of one slice.
        EXPECT_GE(comm->reduced_elements, param_elements);
        EXPECT_LT(comm->reduced_elements, param_elements + 64 * int64_t(flat.params().size()));
      }
    }
  }
}

// A stage whose parameters are not neighbours in their group's buffer (a, c around b of another
// stage; d in no stage) is reduced as several slices, each element once.
TEST(GradientReducer, InterleavedStagesAreReducedOncePerElement) {
  auto a = torch::randn({3, 5}).requires_grad_(), b = torch::randn({4, 4}).requires_grad_();
  auto c = torch::randn({2, 7}).requires_grad_(), d = torch::randn({6}).requires_grad_();
  torch::OrderedDict<std::string, at::Tensor> named;
  named.insert("a", a), named.insert("b", b), named.insert("c", c), named.insert("d", d);
  FlatParameters flat(named, at::kFloat);
  auto comm = std::make_shared<DoublingCommunicator>();
  GradientReducer reducer(flat, {{a, c}, {b}}, comm);
  flat.zero_grad();
  ((a * 2).sum() + (b * 3).sum() + (c * 5).sum() + (d * 7).sum()).backward();
  reducer.stage_done(0);
  EXPECT_EQ(comm->calls, 2);                                      // a and c: two slices
  EXPECT_TRUE(torch::equal(b.grad(), torch::full({4, 4}, 3.0)));  // not reduced yet
  reducer.finish();  // b (stage 1, not reported) and d (no stage)
  EXPECT_EQ(reducer.stages_reported_last_step(), 1u);
  EXPECT_TRUE(torch::equal(a.grad(), torch::full({3, 5}, 4.0)));
  EXPECT_TRUE(torch::equal(b.grad(), torch::full({4, 4}, 6.0)));
  EXPECT_TRUE(torch::equal(c.grad(), torch::full({2, 7}, 10.0)));
  EXPECT_TRUE(torch::equal(d.grad(), torch::full({6}, 14.0)));
}

TEST(GradientReducer, RejectsAParameterInTwoStagesOrNotInTheModel) {
  const ModelConfig config = testing::tiny_model_config(1, false);
  LongNetLM model = testing::make_standard_model(config);
  FlatParameters flat(model->named_parameters(), at::kFloat);
  auto comm = std::make_shared<DoublingCommunicator>();
  auto stages = model->backward_stage_parameters();
  stages[1].push_back(stages[0][0]);
  EXPECT_THROW(GradientReducer(flat, stages, comm), Error);
  stages = model->backward_stage_parameters();
  stages[0].push_back(torch::zeros({3}));
  EXPECT_THROW(GradientReducer(flat, stages, comm), Error);
  EXPECT_THROW(GradientReducer(flat, model->backward_stage_parameters(), nullptr), Error);
}

}  // namespace
}  // namespace ra
