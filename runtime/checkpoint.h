// Training checkpoints that are either complete or invisible.
// save_checkpoint: rank 0 creates <dir>/step_<k>.tmp, every rank writes rank_<r>.pt (model and
// optimizer state), then rank 0 writes manifest.json last and renames the directory to
// <dir>/step_<k>. A crash at any point leaves at most a *.tmp directory, which the loader
// ignores. find_latest_checkpoint only returns directories with a manifest that matches the
// world size and names rank files that all exist.
#pragma once

#include <c10/util/Exception.h>
#include <torch/optim/optimizer.h>
#include <torch/ordered_dict.h>

#include <cstdint>
#include <optional>
#include <string>

#include "comm/communicator.h"

namespace ra {

// <save_dir>/step_<9-digit step>, and the step of such a directory.
std::string checkpoint_directory(const std::string& save_dir, int64_t step);
int64_t checkpoint_step(const std::string& dir);

// The weights a checkpoint stores, by name (model.named_parameters(), or the fp32 master copies
// under the same names when the model itself runs in bf16).
using NamedWeights = torch::OrderedDict<std::string, at::Tensor>;

// Collective over comm. Returns the final directory. `config_text` is stored in the manifest.
std::string save_checkpoint(const std::string& save_dir, int64_t step, Communicator& comm,
                            const NamedWeights& weights, torch::optim::Optimizer& optimizer,
                            const std::string& config_text);

// The newest complete checkpoint directory under save_dir for world_size ranks, if any. Local
// (no communication); callers agree by broadcasting rank 0's answer. A checkpoint in another
// format counts (load_checkpoint then refuses it, naming the format), so that `--resume auto`
// never silently starts over next to checkpoints this build cannot read.
std::optional<std::string> find_latest_checkpoint(const std::string& save_dir, int world_size);

// Whether `dir` is a complete checkpoint for world_size ranks in this build's format; why not
// in *reason.
bool is_complete_checkpoint(const std::string& dir, int world_size, std::string* reason = nullptr);

// Loads this rank's file of a complete checkpoint into `weights` (copied in place, so their
// dtype and device stay) and the optimizer; returns its step. Throws (naming the directory)
// when it has another format (naming the one found and the one expected), is incomplete,
// written for another world size, or lacks one of the weights.
int64_t load_checkpoint(const std::string& dir, int rank, int world_size,
                        const NamedWeights& weights, torch::optim::Optimizer& optimizer);

}  // namespace ra
