// ring_train: trains a LongNet language model on sequences sharded across MPI ranks, e.g.
//   mpirun -n 8 ring_train --seq-len 1M --attention ring --causal --data tokens.bin
// Command-line and --config parsing only; the work is ra::Trainer (runtime/trainer.h).
// A configuration error is detected on every rank before any work and printed once by rank 0;
// every rank then exits with status 2. A later failure (files, devices, communication) is
// printed by the rank that hit it and ends the job (MPI_Abort, status 2).
#include <boost/program_options.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "comm/mpi_context.h"
#include "runtime/cli_values.h"
#include "runtime/distributed_setup.h"
#include "runtime/error.h"
#include "runtime/trainer.h"

namespace po = boost::program_options;

namespace {

constexpr int kConfigErrorExit = 2;

struct RawFlags {  // flags parsed by ra's own parsers (K/M/G counts, lists, names)
  std::string seq_len, segment_lengths, dilation_rates, head_mode, attention_backend;
  std::string sparse_pattern, sparse_level_windows, sparse_level_strides;
  bool causal = false;
};

// One option per line reads better than the formatter's chained layout.
// clang-format off
po::options_description make_options(ra::TrainConfig& c, RawFlags& raw, std::string& config_file) {
  po::options_description model("Model and attention");
  model.add_options()(
      "seq-len", po::value(&raw.seq_len)->default_value("4K"),
      "global tokens per sequence S; K, M, G = powers of 1024 (1M = 1048576). Must be a "
      "multiple of the number of ranks P and of every segment length (min(w, S))")(
      "batch-size", po::value(&c.batch_size)->default_value(c.batch_size), "sequences per step")(
      "layers", po::value(&c.layers)->default_value(c.layers), "decoder blocks")(
      "embed-dim", po::value(&c.embed_dim)->default_value(c.embed_dim), "model width E")(
      "heads", po::value(&c.heads)->default_value(c.heads),
      "attention heads (E/heads must be even)")(
      "ffn-dim", po::value(&c.ffn_dim)->default_value(c.ffn_dim), "FFN width; 0 = 4 x embed-dim")(
      "segment-lengths", po::value(&raw.segment_lengths)->default_value("2048,4096,8192"),
      "dilated attention segment lengths w_i, comma-separated (K/M/G allowed)")(
      "dilation-rates", po::value(&raw.dilation_rates)->default_value("1,2,4"),
      "dilation rates r_i, one per segment length")(
      "head-mode", po::value(&raw.head_mode)->default_value("all"),
      "all (paper: every head uses every branch) | partition (heads split per branch)")(
      "attention-backend", po::value(&raw.attention_backend)->default_value("auto"),
      "kernel of the dilated branches on CUDA fp16/bf16: auto (cuDNN for head dim <= 128, else "
      "flash) | cudnn | flash | reference (torch ops, exact, slow)")(
      "attention", po::value(&c.attention_variant)->default_value(c.attention_variant),
      "attention variant: ring | allgather (sequence-parallel: exact at any number of ranks; "
      "allgather is faster where segments span shards and keeps their gathered K/V until "
      "backward, which grows with the ranks a segment spans; the ring's memory does not "
      "(docs/USAGE.md)) | standard (each rank attends within its own shard only) | sparse "
      "(where built)")(
      "exchange-ctas", po::value(&c.exchange_ctas)->default_value(c.exchange_ctas),
      "allgather: CTAs (SMs) NCCL may use for the backward's dK/dV exchange, which runs beside "
      "the attention kernels (a communicator of its own); 0 = NCCL's choice (caps timed no "
      "faster on H100/H200: docs/PERFORMANCE.md, session 14)")(
      "causal", po::value(&raw.causal)->default_value(false)->implicit_value(true),
      "causal masking (required for token-file language modelling)")(
      "checkpointing", po::value(&c.checkpointing)->default_value(c.checkpointing),
      "per-block gradient checkpointing: auto (on from --seq-len 64K) | on | off")(
      "checkpoint-layers", po::value(&c.checkpoint_layers)->default_value(c.checkpoint_layers),
      "with checkpointing, checkpoint only the first N blocks (-1 = all); the others keep their "
      "activations: no recompute (faster), more memory (docs/USAGE.md: sizing)")(
      "recompute-ffn-layers",
      po::value(&c.recompute_ffn_layers)->default_value(c.recompute_ffn_layers),
      "the first N blocks that are not checkpointed keep their attention activations but "
      "recompute their FFN in backward: ~9 x embed-dim x 2 bytes less per token and block "
      "(bf16) for one FFN forward more each (docs/USAGE.md: sizing)")(
      "checkpoint-dtype", po::value(&c.checkpoint_dtype)->default_value(c.checkpoint_dtype),
      "dtype of the saved block inputs: auto (bfloat16 with bf16 compute on CUDA, else the "
      "model dtype) | float32 | bfloat16 (half the memory; blocks run on the rounded input)")(
      "offload-checkpoints",
      po::value(&c.offload_checkpoints)->default_value(c.offload_checkpoints),
      "off | on: keep the saved block inputs in pinned host memory, prefetched back during "
      "backward (CUDA; nothing to do on CPU)")(
      "fused-norms", po::value(&c.fused_norms)->default_value(c.fused_norms),
      "on | off: every LayerNorm as one CUDA kernel each way for fp16/bf16 (ATen's backward "
      "reads its inputs twice), the FFN's GELU and fc1's bias folded into its sub-LayerNorm, "
      "the attention's residual add into the FFN's pre-LayerNorm; off = ATen's layer_norm, "
      "gelu and add (same math to rounding)")(
      "dtype", po::value(&c.dtype)->default_value(c.dtype),
      "auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 (bf16 model, fp32 master weights and AdamW "
      "state; slow on CPU)")(
      "device", po::value(&c.device)->default_value(c.device), "auto | cpu | cuda")(
      "loss-chunk", po::value(&c.loss_chunk_tokens)->default_value(c.loss_chunk_tokens),
      "tokens per LM-head + cross-entropy chunk (bounds logits memory)");
  po::options_description sparse("Block-sparse attention (--attention sparse)");
  sparse.add_options()(
      "sparse-pattern", po::value(&raw.sparse_pattern)->default_value("local_window"),
      "local_window | dilated (blocks from --segment-lengths/--dilation-rates) | global_local | "
      "hierarchical")(
      "sparse-block-size", po::value(&c.sparse.block_size)->default_value(c.sparse.block_size),
      "tokens per block: 16, 32, 64 or 128 (the CUDA kernels take 64 or 128)")(
      "sparse-window", po::value(&c.sparse.window)->default_value(c.sparse.window),
      "local window in tokens (local_window, global_local)")(
      "sparse-global-tokens",
      po::value(&c.sparse.global_tokens)->default_value(c.sparse.global_tokens),
      "leading tokens that attend to and are attended by all (global_local)")(
      "sparse-level-windows", po::value(&raw.sparse_level_windows)->default_value(""),
      "hierarchical: window of each level in tokens, comma-separated")(
      "sparse-level-strides", po::value(&raw.sparse_level_strides)->default_value(""),
      "hierarchical: stride of each level in tokens (multiples of the block size)");
  po::options_description optim("Optimisation");
  optim.add_options()("steps", po::value(&c.steps)->default_value(c.steps), "optimisation steps")(
      "lr", po::value(&c.lr)->default_value(c.lr), "peak learning rate (AdamW)")(
      "min-lr-ratio", po::value(&c.min_lr_ratio)->default_value(c.min_lr_ratio),
      "cosine decay ends at lr x this")("warmup", po::value(&c.warmup)->default_value(c.warmup),
                                        "linear warmup steps")(
      "weight-decay", po::value(&c.weight_decay)->default_value(c.weight_decay),
      "AdamW weight decay (matrices only)")("beta1", po::value(&c.beta1)->default_value(c.beta1),
                                            "AdamW beta1")(
      "beta2", po::value(&c.beta2)->default_value(c.beta2), "AdamW beta2")(
      "clip", po::value(&c.clip)->default_value(c.clip), "max global gradient norm; 0 = off")(
      "overlap-grad-reduce",
      po::value(&c.overlap_grad_reduce)->default_value(c.overlap_grad_reduce),
      "on | off: sum the gradients over ranks block by block while backward runs (on a "
      "communicator of their own) instead of after it")(
      "seed", po::value(&c.seed)->default_value(c.seed), "seed of weights and data order");
  po::options_description io("Data, checkpoints, logging");
  io.add_options()(
      "data", po::value(&c.data)->default_value(c.data),
      "synthetic:kv[:KEYS[:VALUES]] (long-range key-value retrieval) or a token file path "
      "(format in docs/USAGE.md)")("save-dir", po::value(&c.save_dir)->default_value(""),
                                   "checkpoint directory")(
      "save-every", po::value(&c.save_every)->default_value(c.save_every),
      "save every N steps (and at the end); 0 = only at the end")(
      "resume", po::value(&c.resume)->default_value(c.resume)->implicit_value("auto"),
      "none | auto (newest complete checkpoint in --save-dir; fresh start if none) | a "
      "checkpoint directory")(
      "stop-after", po::value(&c.stop_after)->default_value(c.stop_after),
      "train at most N steps in this job, then save (with --save-dir) and exit; rerun with "
      "--resume to continue (time-limited jobs); 0 = no limit")(
      "log-every", po::value(&c.log_every)->default_value(c.log_every), "log every N steps")(
      "metrics-file", po::value(&c.metrics_file)->default_value(""),
      "JSON-lines file for the logged metrics (rank 0 writes it)")(
      "eval-batches", po::value(&c.eval_batches)->default_value(c.eval_batches),
      "batches scored after training (loss; accuracy on synthetic tasks)")(
      "threads", po::value(&c.threads)->default_value(c.threads),
      "CPU intra-op threads per rank; 0 = LibTorch default")(
      "timeout", po::value(&c.timeout_seconds)->default_value(c.timeout_seconds),
      "seconds any communication may wait before the job fails")(
      "profile-step", po::value(&c.profile_step)->default_value(c.profile_step),
      "rank 0 records step N's CPU ops and GPU kernels (Kineto) as a Chrome trace; 0 = off "
      "(summarise with bench/summarize_trace.py)")(
      "profile-file", po::value(&c.profile_file)->default_value(c.profile_file),
      "where --profile-step writes the trace");
  po::options_description all("ring_train options (every flag can also be a key of --config)");
  all.add_options()("help,h", "print this help and exit")(
      "config", po::value(&config_file)->default_value(""),
      "file of key = value lines with the same keys as the flags; flags override it");
  all.add(model).add(sparse).add(optim).add(io);
  return all;
}
// clang-format on

// Parses argv (and --config); returns false when --help was printed.
bool parse(int argc, char** argv, ra::TrainConfig& c, bool print_help) {
  RawFlags raw;
  std::string config_file;
  auto options = make_options(c, raw, config_file);
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, options), vm);
  if (vm.count("help")) {
    if (print_help) std::cout << options << std::endl;
    return false;
  }
  if (vm.count("config") && !vm["config"].as<std::string>().empty()) {
    const std::string path = vm["config"].as<std::string>();
    std::ifstream in(path);
    RA_CHECK(in.good(), "--config = '", path, "': cannot open the file");
    po::store(po::parse_config_file(in, options), vm);  // earlier (command-line) values win
  }
  po::notify(vm);
  c.seq_len = ra::parse_token_count(raw.seq_len, "--seq-len");
  c.attention.segment_lengths = ra::parse_int_list(raw.segment_lengths, "--segment-lengths");
  c.attention.dilation_rates = ra::parse_int_list(raw.dilation_rates, "--dilation-rates");
  c.attention.head_mode = ra::parse_head_mode(raw.head_mode, "--head-mode");
  c.attention.backend = ra::parse_backend(raw.attention_backend, "--attention-backend");
  c.attention.causal = raw.causal;
  c.sparse.pattern = ra::parse_sparse_pattern(raw.sparse_pattern, "--sparse-pattern");
  if (!raw.sparse_level_windows.empty()) {
    c.sparse.level_windows = ra::parse_int_list(raw.sparse_level_windows, "--sparse-level-windows");
  }
  if (!raw.sparse_level_strides.empty()) {
    c.sparse.level_strides = ra::parse_int_list(raw.sparse_level_strides, "--sparse-level-strides");
  }
  return true;
}

// Long sequences allocate activations of many sizes (chunks, branches, offload buffers): with
// fixed-size segments the caching allocator strands GiBs in split blocks (5.75M tokens on
// 2 x H100 80GB failed with 4.3 GiB reserved but unallocated). Expandable segments map
// physical pages on demand instead. Set before any CUDA call; a user's own
// PYTORCH_CUDA_ALLOC_CONF is left alone.
void default_cuda_allocator_settings() {
  setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True", /*overwrite=*/0);
}

}  // namespace

int main(int argc, char** argv) {
  default_cuda_allocator_settings();
  ra::MpiContext mpi(&argc, &argv);
  const bool rank0 = mpi.rank() == 0;
  ra::TrainConfig config;
  try {
    // Parsing and validation are pure functions of the flags and the world size, so they fail
    // identically on every rank: rank 0 prints, every rank exits with status 2, no MPI_Abort.
    if (!parse(argc, argv, config, rank0)) return 0;
    ra::validate_train_config(config, mpi.size());  // before touching devices or files
  } catch (const po::error& e) {
    if (rank0) std::fprintf(stderr, "ring_train: error: %s (see ring_train --help)\n", e.what());
    return kConfigErrorExit;
  } catch (const std::exception& e) {
    if (rank0) std::fprintf(stderr, "ring_train: error: %s\n", e.what());
    return kConfigErrorExit;
  }
  // From here a failure may hit some ranks only (a file, a device, a peer): the failing rank
  // prints and ends the whole job, so no rank waits for it.
  try {
    ra::DistributedRuntime runtime =
        ra::setup_distributed(mpi, config.device, config.timeout_seconds);
    ra::Trainer trainer(config, runtime, rank0 ? &std::cout : nullptr);
    trainer.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ring_train (rank %d): error: %s\n", mpi.rank(), e.what());
    std::fflush(stderr);
    ra::MpiContext::abort_job(kConfigErrorExit);
  }
  return 0;
}
