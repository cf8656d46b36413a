// GradientReducer: sums the trainer's gradients over the ranks while backward still runs.
// The model reports each backward stage whose parameters' gradients are final (a block, or the
// final LayerNorm + LM head: LongNetLMImpl::set_backward_stage_hook); the reducer then up-casts
// that stage's slices of the flat gradient buffers into the fp32 master gradients and starts
// their all-reduce, which on NCCL runs on the communicator's own stream beside the rest of
// backward (DDP's bucketing, with a block as the bucket). finish() reduces what no stage covered
// (the embedding, which backward reaches last anyway) and orders the compute stream after every
// reduction, so what follows (clipping, AdamW) reads the summed gradients.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "runtime/flat_parameters.h"

namespace ra {

class GradientReducer {
 public:
  // stage_params[s]: the parameters of stage s (tensors of flat.params()). `comm` must be a
  // communicator of its own (e.g. a split of the world): attention may run collectives on the
  // world's in backward, and NCCL orders one communicator's operations by issue.
  GradientReducer(FlatParameters& flat, const std::vector<std::vector<at::Tensor>>& stage_params,
                  std::shared_ptr<Communicator> comm);

  // Stage s's gradients are final: up-cast its slices and start their all-reduce. Every rank
  // must report the same stages in the same order (backward visits them the same way).
  void stage_done(size_t stage);
  // After backward: checks the gradients still alias the flat buffers, reduces the slices of the
  // stages not reported and of the parameters in no stage, and makes the compute stream wait for
  // all reductions of the step. Then the next step may begin.
  void finish();

  // How many stages were reported during the last finished step (tests).
  size_t stages_reported_last_step() const { return reported_last_step_; }
  Communicator& communicator() { return *comm_; }

 private:
  struct Slice {
    size_t group;
    int64_t begin, end;
  };
  void reduce(const std::vector<Slice>& slices);

  FlatParameters& flat_;
  std::shared_ptr<Communicator> comm_;
  std::vector<std::vector<Slice>> stage_slices_;  // per stage: contiguous runs of its parameters
  std::vector<Slice> rest_slices_;                // parameters in no stage
  std::vector<bool> reported_;                    // per stage, this step
  std::vector<std::unique_ptr<PendingTransfer>> pending_;
  size_t reported_last_step_ = 0;
};

}  // namespace ra
