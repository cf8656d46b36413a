// Trainer: one sequence-parallel training run. Every rank holds the same model and S/P tokens
// of every sequence; a step is forward (attention through the chosen variant, everything else
// token-local) -> loss = local sum / global count -> backward -> gradient all-reduce ->
// clip -> AdamW with warmup + cosine (the all-reduce overlapped with backward, block by block:
// GradientReducer). Rank 0 logs; checkpoints are collective.
// bf16 runs keep the whole model in bf16 (weights, activations, residual stream, LayerNorm
// I/O: half the bytes of every memory-bound op, no autocast casts) and fp32 master weights and
// AdamW state in the optimizer (Megatron's scheme). Weights, master weights and gradients live
// in one flat buffer per weight-decay group (FlatParameters), so the step's tail after backward
// is a few kernels per group, and a step syncs the host with the device twice (token count,
// logged values).
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <torch/optim/adamw.h>

#include "runtime/checkpoint.h"
#include "runtime/distributed_setup.h"
#include "runtime/flat_parameters.h"
#include "runtime/gradient_reducer.h"
#include "runtime/lr_schedule.h"
#include "runtime/metrics_log.h"
#include "runtime/model.h"
#include "runtime/train_config.h"
#include "runtime/training_data.h"

namespace ra {

struct EvalResult {
  double loss = 0;
  std::optional<double> accuracy;  // when the data reports accuracy
};

class Trainer {
 public:
  // Validates the config (throws ra::Error naming the flag), builds data, model and optimizer,
  // and resumes when config.resume asks for it. `log` (rank 0's stdout, or null) gets the
  // config, the world layout and the step lines.
  Trainer(TrainConfig config, DistributedRuntime runtime, std::ostream* log);
  ~Trainer();

  // Trains from start_step() to config.steps (or config.stop_after steps), saving and logging
  // as configured; then, when training is complete and config.eval_batches > 0, evaluates.
  // Returns the eval result (if any).
  std::optional<EvalResult> run();

  // One optimisation step on the batch of `step` (1-based). Collective.
  StepMetrics train_step(int64_t step);
  // Scores `batches` batches that training never sees. Collective.
  EvalResult evaluate(int64_t batches);
  void save(int64_t step);

  int64_t start_step() const { return start_step_; }
  LongNetLM& model() { return model_; }
  const TrainConfig& config() const { return config_; }
  // Model FLOPs of one step over all ranks (6 * matmul params * tokens + attention), no recompute.
  double model_flops_per_step() const { return model_flops_per_step_; }
  // The flat weight, master and gradient buffers the model's parameters are views of.
  const FlatParameters& flat_parameters() const { return flat_; }

 private:
  void print_header();
  void print_checkpoint_memory(std::ostream& os) const;
  void maybe_resume();
  double peak_flops_per_gpu() const;  // bf16 dense peak of the card, 0 when unknown / CPU
  // A step's batch with what the host derives from it (pinned on GPU runs).
  struct PreparedBatch {
    Batch batch;
    double scored_count = 0;  // positions of this rank with a target (>= 0)
    at::Tensor scored;        // [n] int64 flat indices of those positions (accuracy tasks only)
  };
  PreparedBatch prepare_batch(int64_t step) const;
  // The batch of `step`: the one prefetched for it, else made now.
  PreparedBatch take_batch(int64_t step);
  // Starts preparing the batch of `step` on a host thread, so that its generation, file reads
  // and host-side counting overlap the current step's device work.
  void prefetch_batch(int64_t step);

  TrainConfig config_;
  DistributedRuntime runtime_;
  std::ostream* log_;
  ShardLayout layout_;
  std::unique_ptr<TrainingData> data_;
  std::future<PreparedBatch> prefetched_;  // TrainingData::batch: const, a function of step
  int64_t prefetched_step_ = 0;            // 0: nothing prefetched
  LongNetLM model_{nullptr};
  // What AdamW updates (one flat fp32 tensor per group) and checkpoints store (its views, by
  // name). The model's parameters are views of it in fp32 runs; in bf16 runs views of a flat
  // bf16 copy (gradients up-cast into the master after backward, the updated weights rounded
  // back after the step).
  FlatParameters flat_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  // With --overlap-grad-reduce on and more than one rank: sums gradients during backward.
  std::unique_ptr<GradientReducer> grad_reducer_;
  LrSchedule schedule_;
  std::unique_ptr<MetricsLog> metrics_;
  bool bf16_ = false;
  std::string checkpoint_dtype_;  // resolved --checkpoint-dtype: float32 | bfloat16
  int64_t start_step_ = 1;
  double model_flops_per_step_ = 0;
};

}  // namespace ra
