// The training loop (see trainer.h).
#include "runtime/trainer.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>

#include "attention/factory.h"
#include "attention/standard/dilation_plan.h"
#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/gradient_sync.h"
#include "runtime/kernel_profiler.h"
#include "runtime/torch_compat.h"

namespace ra {
namespace {

// First index of the steps evaluate() uses: far past any training step, so never trained on.
constexpr int64_t kEvalStepBase = int64_t(1) << 40;

// "36.00 GiB", "3.50 MiB", "32.00 KiB".
std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) bytes /= 1024, ++unit;
  char text[32];
  std::snprintf(text, sizeof text, "%.2f %s", bytes, units[unit]);
  return text;
}

void synchronize(const at::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// The flattened positions ([B * S/P] order) that have a target, found on the host copy of the
// targets (to be sent to the device with the batch): selecting them with a boolean mask on the
// device would sync the host (the result's size lives on the device).
at::Tensor scored_positions(const at::Tensor& host_targets) {
  return at::nonzero(host_targets.reshape({-1}) >= 0).reshape({-1});
}

// How many of the `scored` positions the model predicts right (argmax of the logits): a 0-dim
// float64 tensor on the device. hidden [B, S/P, E], targets [B, S/P] on the device.
at::Tensor count_correct(LongNetLMImpl& model, const at::Tensor& hidden, const at::Tensor& targets,
                         const at::Tensor& scored) {
  const at::Tensor h = hidden.reshape({-1, hidden.size(-1)}).index_select(0, scored);  // [n, E]
  const at::Tensor predicted = model.logits(h).argmax(-1);                             // [n]
  return (predicted == targets.reshape({-1}).index_select(0, scored)).sum().to(at::kDouble);
}

}  // namespace

Trainer::Trainer(TrainConfig config, DistributedRuntime runtime, std::ostream* log)
    : config_(std::move(config)), runtime_(std::move(runtime)), log_(log) {
  Communicator& comm = *runtime_.world;
  validate_train_config(config_, comm.size());
  const bool cuda = runtime_.device.is_cuda();
  bf16_ = config_.dtype == "bf16" || (config_.dtype == "auto" && cuda);
  if (config_.threads > 0) torch::set_num_threads(config_.threads);
  comm.set_timeout_seconds(config_.timeout_seconds);
  if (config_.profile_step > 0) KernelProfiler::ensure_available(cuda);  // fail now, every rank

  layout_ = {config_.batch_size, config_.seq_len, comm.rank(), comm.size()};
  data_ = make_training_data(config_.data, layout_, config_.seed);

  ModelConfig mc;
  mc.vocab_size = data_->vocab_size();
  mc.num_layers = config_.layers;
  mc.embed_dim = config_.embed_dim;
  mc.num_heads = config_.heads;
  mc.ffn_dim = resolved_ffn_dim(config_);
  mc.attention = config_.attention;
  mc.checkpointing = checkpointing_enabled(config_);
  mc.checkpoint_layers = config_.checkpoint_layers;
  mc.recompute_ffn_layers = config_.recompute_ffn_layers;
  checkpoint_dtype_ = resolved_checkpoint_dtype(config_, bf16_);
  // The saved inputs are fp32 (the residual stream of fp32 master weights); float32 = as is.
  mc.checkpoint_dtype = checkpoint_dtype_ == "bfloat16" ? at::kBFloat16 : at::kFloat;
  // On CPU the checkpoints already live in host memory: offloading would only copy them.
  mc.offload_checkpoints = config_.offload_checkpoints == "on" && cuda;
  mc.loss_chunk_tokens = config_.loss_chunk_tokens;
  mc.fused_norms = config_.fused_norms == "on";
  AttentionSpec spec;
  spec.attention = config_.attention;
  spec.sparse = config_.sparse;
  spec.ring.timeout_seconds = config_.timeout_seconds;
  spec.ring.exchange_ctas = config_.exchange_ctas;
  spec.comm = runtime_.world;
  const std::string variant = config_.attention_variant;
  // Same seed on every rank -> same initial weights; the broadcast below makes sure.
  torch::manual_seed(config_.seed);
  model_ = LongNetLM(mc, [&] { return make_attention(variant, spec); });
  model_->to(runtime_.device);
  model_->train();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model_->parameters()) comm.broadcast(p, 0);
  }
  // fp32 master weights in flat buffers, taken from the fp32 init; the parameters become views
  // of them (fp32) or of a flat bf16 copy, which is what turns the model into bf16 (the floating
  // point buffers, if any, follow as Module::to would convert them).
  flat_ = FlatParameters(model_->named_parameters(), bf16_ ? at::kBFloat16 : at::kFloat);
  if (bf16_) {
    torch::NoGradGuard no_grad;
    for (auto& b : model_->buffers()) {
      if (b.is_floating_point()) b.set_data(b.to(at::kBFloat16));
    }
  }

  // AdamW is elementwise, so one flat tensor per group is the same update as one per parameter.
  // Weight decay on matrices only (not on biases and LayerNorm gains).
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(config_.lr)
                                                            .betas({config_.beta1, config_.beta2})
                                                            .weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{flat_.master(FlatParameters::kDecay)},
                      options(config_.weight_decay));
  groups.emplace_back(std::vector<at::Tensor>{flat_.master(FlatParameters::kNoDecay)},
                      options(0.0));
  optimizer_ =
      std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(config_.lr));
  if (comm.size() > 1 && config_.overlap_grad_reduce == "on") {
    // Its own communicator: attention's backward runs collectives on the world's meanwhile.
    std::shared_ptr<Communicator> grad_comm = runtime_.world->split(0, comm.rank());
    grad_comm->set_timeout_seconds(config_.timeout_seconds);
    grad_reducer_ = std::make_unique<GradientReducer>(flat_, model_->backward_stage_parameters(),
                                                      std::move(grad_comm));
    model_->set_backward_stage_hook(
        [reducer = grad_reducer_.get()](size_t stage) { reducer->stage_done(stage); });
  }
  schedule_ = {config_.lr, config_.warmup, config_.steps, config_.min_lr_ratio};

  const int64_t head_dim = config_.embed_dim / config_.heads;
  const double attention_fwd =
      DilationPlan::build(config_.attention, config_.seq_len, config_.heads)
          .forward_flops(config_.batch_size, config_.seq_len, head_dim, config_.attention.causal);
  model_flops_per_step_ = 6.0 * double(model_->matmul_parameter_count()) *
                              double(config_.batch_size * config_.seq_len) +
                          3.5 * attention_fwd * double(config_.layers);

  maybe_resume();
  if (comm.rank() == 0)
    metrics_ = std::make_unique<MetricsLog>(config_.metrics_file, start_step_ > 1);
  print_header();
}

double Trainer::peak_flops_per_gpu() const {
  if (!runtime_.device.is_cuda()) return 0;
  const std::string name = compat::device_name(runtime_.device);
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos)
    return 989e12;
  if (name.find("A100") != std::string::npos) return 312e12;
  return 0;
}

void Trainer::print_header() {
  if (!log_) return;
  const auto& L = runtime_.layout;
  const double peak = peak_flops_per_gpu();
  std::ostream& os = *log_;
  os << "ring_train: resolved config\n" << describe(config_) << "\n";
  print_checkpoint_memory(os);
  os << "world: " << L.world_size << " rank(s) on " << L.world_size / std::max(1, L.local_size)
     << " node(s) x " << L.local_size << " per node; device "
     << compat::device_name(runtime_.device) << " (" << runtime_.device << "), communicator "
     << runtime_.world->backend() << "\n";
  os << "sequence: " << config_.seq_len << " tokens = " << L.world_size << " shards of "
     << layout_.shard_len() << "; rank r holds tokens [r*" << layout_.shard_len() << ", (r+1)*"
     << layout_.shard_len() << ")\n";
  os << "data: " << data_->describe() << "\n";
  int64_t n_params = 0;
  for (const auto& p : flat_.params()) n_params += p.numel();
  os << "model: " << n_params << " parameters, compute " << (bf16_ ? "bf16 (fp32 master)" : "fp32")
     << ", checkpointing " << (model_->config().checkpointing ? "on" : "off") << "\n";
  if (runtime_.device.is_cuda()) {
    const char* alloc_conf = std::getenv("PYTORCH_CUDA_ALLOC_CONF");
    os << "CUDA allocator: PYTORCH_CUDA_ALLOC_CONF=" << (alloc_conf ? alloc_conf : "(unset)")
       << "\n";
  }
  os << "MFU peak: ";
  if (peak > 0)
    os << peak / 1e12 << " TFLOP/s bf16 dense per GPU\n";
  else
    os << "n/a (" << (runtime_.device.is_cuda() ? "unknown card" : "CPU") << ")\n";
  if (start_step_ > 1) os << "resumed: continuing at step " << start_step_ << "\n";
  os.flush();
}

// Checkpoints dominate memory at long sequences; this tells users how large --seq-len can be.
void Trainer::print_checkpoint_memory(std::ostream& os) const {
  os << "  checkpoint memory per GPU (estimate): ";
  if (!model_->config().checkpointing) {
    os << "none (checkpointing off)\n";
    return;
  }
  const int world = runtime_.layout.world_size;
  const double bytes = checkpoint_bytes_per_rank(config_, world, checkpoint_dtype_);
  const int64_t layers = checkpointed_layers(config_);
  os << layers << " layers x " << config_.batch_size * config_.seq_len / world << " tokens x "
     << config_.embed_dim << " x " << (checkpoint_dtype_ == "bfloat16" ? 2 : 4) << " B ("
     << checkpoint_dtype_ << ") = " << format_bytes(bytes);
  if (model_->config().offload_checkpoints) {
    // Backward holds the input it recomputes and the one it prefetches.
    const int64_t on_gpu = std::min<int64_t>(2, layers);
    os << ", offloaded to pinned host memory (" << on_gpu << " layers' worth, "
       << format_bytes(layers > 0 ? double(on_gpu) * bytes / double(layers) : 0.0)
       << ", on the GPU at a time)";
  } else if (config_.offload_checkpoints == "on") {
    os << " (offload-checkpoints: nothing to do on CPU)";
  }
  if (layers < config_.layers) {
    os << "; the other " << config_.layers - layers
       << " layers keep their activations (not estimated; docs/USAGE.md: sizing)";
  }
  os << "\n";
}

void Trainer::maybe_resume() {
  if (config_.resume == "none" || config_.resume.empty()) return;
  Communicator& comm = *runtime_.world;
  std::string dir = config_.resume;
  if (config_.resume == "auto") {
    // Rank 0 decides, everyone follows (a file system may show ranks different listings).
    double latest_step = 0;  // rank 0's answer; the others contribute 0 to the sum
    if (comm.rank() == 0) {
      if (auto latest = find_latest_checkpoint(config_.save_dir, comm.size())) {
        latest_step = double(checkpoint_step(*latest));
      }
    }
    latest_step = sum_over_ranks({latest_step}, comm, runtime_.device)[0];
    if (latest_step < 1) return;  // nothing to resume: a fresh start
    dir = checkpoint_directory(config_.save_dir, int64_t(latest_step));
  }
  const int64_t step =
      load_checkpoint(dir, comm.rank(), comm.size(), flat_.named_master(), *optimizer_);
  flat_.copy_master_to_params();
  start_step_ = step + 1;
}

Trainer::~Trainer() {
  // The model may outlive the trainer (model() hands it out); the hook points at the reducer.
  if (!model_.is_empty()) model_->set_backward_stage_hook(nullptr);
}

Trainer::PreparedBatch Trainer::prepare_batch(int64_t step) const {
  PreparedBatch prepared;
  prepared.batch = data_->batch(step);
  const at::Tensor& targets = prepared.batch.targets;
  prepared.scored_count = (targets >= 0).sum().item<double>();
  if (data_->reports_accuracy()) prepared.scored = scored_positions(targets);
  // On a GPU everything the step copies is pinned, so those copies are asynchronous (PyTorch's
  // host allocator pins through an existing CUDA context: no context on GPU 0 from this thread).
  if (runtime_.device.is_cuda()) {
    Batch& b = prepared.batch;
    b.tokens = b.tokens.pin_memory(), b.targets = b.targets.pin_memory();
    if (prepared.scored.defined()) prepared.scored = prepared.scored.pin_memory();
  }
  return prepared;
}

Trainer::PreparedBatch Trainer::take_batch(int64_t step) {
  if (prefetched_step_ == step) {
    prefetched_step_ = 0;
    return prefetched_.get();  // rethrows what the data thread threw (e.g. a file error)
  }
  return prepare_batch(step);
}

void Trainer::prefetch_batch(int64_t step) {
  // A pending prefetch of another step (train_step called out of order) finishes first: the
  // future of std::async waits in its destructor.
  prefetched_step_ = step;
  prefetched_ = std::async(std::launch::async, [this, step] { return prepare_batch(step); });
}

StepMetrics Trainer::train_step(int64_t step) {
  Communicator& comm = *runtime_.world;
  comm.set_context("step " + std::to_string(step));
  synchronize(runtime_.device);
  const auto start = std::chrono::steady_clock::now();

  const PreparedBatch prepared = take_batch(step);
  if (step < config_.steps) prefetch_batch(step + 1);
  const Batch& batch = prepared.batch;
  // Asynchronous from pinned memory on GPUs; the host copies stay alive in `prepared`.
  at::Tensor tokens = batch.tokens.to(runtime_.device, /*non_blocking=*/true);    // [B, S/P]
  at::Tensor targets = batch.targets.to(runtime_.device, /*non_blocking=*/true);  // -1 = ignored
  at::Tensor scored;  // [n] flat indices of the scored positions, for the accuracy
  if (prepared.scored.defined())
    scored = prepared.scored.to(runtime_.device, /*non_blocking=*/true);
  // The loss needs the global count of scored positions before backward, so its sum over ranks
  // is one of the step's two host syncs (while the device is idle anyway).
  const double scored_total = sum_over_ranks({prepared.scored_count}, comm, runtime_.device)[0];
  const double global_count = std::max(1.0, scored_total);

  flat_.zero_grad();
  if (grad_reducer_) grad_reducer_->communicator().set_context(comm.context());
  at::Tensor hidden = model_->hidden_states(tokens, layout_.first_position());  // [B, S/P, E]
  at::Tensor loss_sum = model_->loss_sum(hidden, targets, batch.targets);
  (loss_sum / global_count).backward();
  // The flat fp32 master gradients (up-cast in bf16 runs) are summed over ranks - block by
  // block during backward with the reducer - and clipped in fp32, a few kernels per group, no
  // host sync.
  if (grad_reducer_) {
    grad_reducer_->finish();
  } else {
    flat_.collect_grads();
    flat_.all_reduce_grads(comm);
  }
  const at::Tensor grad_norm = flat_.clip_grad_norm_(config_.clip);
  const double lr = schedule_.at(step);
  for (auto& group : optimizer_->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
  optimizer_->step();
  flat_.copy_master_to_params();

  // Logged values: loss sum and correct predictions summed over ranks, then the grad norm; one
  // copy to the host (the step's other sync).
  at::Tensor stats;
  {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> summed = {loss_sum.detach().to(at::kDouble).reshape({1})};
    if (data_->reports_accuracy()) {
      summed.push_back(count_correct(*model_, hidden.detach(), targets, scored).reshape({1}));
    }
    stats = at::cat(summed);
    if (comm.size() > 1) comm.all_reduce_sum(stats);
    stats = at::cat({stats, grad_norm.to(at::kDouble).reshape({1})}).to(at::kCPU);
  }
  synchronize(runtime_.device);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  StepMetrics m;
  m.step = step;
  m.loss = stats[0].item<double>() / global_count;
  m.grad_norm = stats[-1].item<double>();
  m.lr = lr;
  m.step_ms = ms;
  const double step_tokens = double(config_.batch_size * config_.seq_len);
  m.tokens_per_s = step_tokens / (ms / 1e3);
  m.tokens_per_s_per_gpu = m.tokens_per_s / comm.size();
  m.tflops_per_gpu = model_flops_per_step_ / comm.size() / (ms / 1e3) / 1e12;
  if (const double peak = peak_flops_per_gpu(); peak > 0) m.mfu = m.tflops_per_gpu * 1e12 / peak;
  m.peak_memory_gib = compat::peak_memory_gib(runtime_.device);
  if (data_->reports_accuracy() && scored_total > 0) {
    m.accuracy = stats[1].item<double>() / scored_total;
  }
  return m;
}

EvalResult Trainer::evaluate(int64_t batches) {
  Communicator& comm = *runtime_.world;
  model_->eval();
  torch::NoGradGuard no_grad;
  // Loss sum and correct predictions accumulate on the device; scored positions on the host.
  at::Tensor totals =
      at::zeros({2}, at::TensorOptions().dtype(at::kDouble).device(runtime_.device));
  double scored_total = 0;
  for (int64_t i = 1; i <= batches; ++i) {
    comm.set_context("eval batch " + std::to_string(i));
    Batch batch = data_->batch(kEvalStepBase + i);
    at::Tensor tokens = batch.tokens.to(runtime_.device),
               targets = batch.targets.to(runtime_.device);
    const at::Tensor scored = scored_positions(batch.targets).to(runtime_.device);
    at::Tensor hidden = model_->hidden_states(tokens, layout_.first_position());
    totals += at::stack({model_->loss_sum(hidden, targets, batch.targets).to(at::kDouble),
                         count_correct(*model_, hidden, targets, scored)});
    scored_total += (batch.targets >= 0).sum().item<double>();
  }
  at::Tensor stats = at::cat({totals, at::full({1}, scored_total, totals.options())});
  if (comm.size() > 1) comm.all_reduce_sum(stats);
  stats = stats.to(at::kCPU);
  model_->train();
  EvalResult result;
  const double scored = std::max(1.0, stats[2].item<double>());
  result.loss = stats[0].item<double>() / scored;
  if (data_->reports_accuracy()) result.accuracy = stats[1].item<double>() / scored;
  return result;
}

void Trainer::save(int64_t step) {
  const std::string dir = save_checkpoint(config_.save_dir, step, *runtime_.world,
                                          flat_.named_master(), *optimizer_, describe(config_));
  if (log_) *log_ << "saved checkpoint " << dir << std::endl;
}

std::optional<EvalResult> Trainer::run() {
  const std::string memory_label = runtime_.device.is_cuda() ? "mem" : "RSS";
  compat::reset_peak_memory(runtime_.device);
  const int64_t last_step = config_.stop_after > 0
                                ? std::min(config_.steps, start_step_ + config_.stop_after - 1)
                                : config_.steps;
  for (int64_t step = start_step_; step <= last_step; ++step) {
    const bool profile_now = step == config_.profile_step && runtime_.world->rank() == 0;
    std::optional<KernelProfiler> profiler;
    if (profile_now) profiler.emplace(runtime_.device.is_cuda());
    StepMetrics m = train_step(step);
    if (profile_now) {
      profiler->save(config_.profile_file);
      if (log_)
        *log_ << "profile of step " << step << " written to " << config_.profile_file << std::endl;
    }
    const bool log_now = step % config_.log_every == 0 || step == last_step;
    if (metrics_ && log_now) metrics_->write(m);
    if (log_ && log_now) *log_ << MetricsLog::format(m, memory_label) << std::endl;
    const bool save_now =
        !config_.save_dir.empty() &&
        ((config_.save_every > 0 && step % config_.save_every == 0) || step == last_step);
    if (save_now) save(step);
  }
  if (last_step < config_.steps) {
    if (log_) *log_ << "stopping after step " << last_step << " (--stop-after)" << std::endl;
    return std::nullopt;
  }
  if (config_.eval_batches == 0) return std::nullopt;
  EvalResult eval = evaluate(config_.eval_batches);
  nlohmann::json j;
  j["event"] = "eval";
  j["batches"] = config_.eval_batches;
  j["loss"] = eval.loss;
  if (eval.accuracy) j["accuracy"] = *eval.accuracy;
  if (metrics_) metrics_->write_json_line(j.dump());
  if (log_) {
    char line[160];
    std::snprintf(line, sizeof line, "eval: %ld batches | loss %.4f | accuracy %s",
                  long(config_.eval_batches), eval.loss,
                  eval.accuracy ? std::to_string(*eval.accuracy).c_str() : "n/a");
    *log_ << line << std::endl;
  }
  return eval;
}

}  // namespace ra
