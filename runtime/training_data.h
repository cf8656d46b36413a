// What the trainer reads each step: this rank's shard of a batch of sequences. The batch of a
// step is a pure function of (seed, step), so a resumed run sees the same data as an
// uninterrupted one, and every rank reads only its own S/P tokens of each sequence.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace ra {

struct Batch {
  at::Tensor tokens;   // [B, S/P] int64, this rank's shard
  at::Tensor targets;  // [B, S/P] int64, the token to predict at each position, -1 = ignored
};

// Where this rank's shard sits in the global sequence.
struct ShardLayout {
  int64_t batch_size = 1;
  int64_t seq_len = 0;  // global S
  int rank = 0;
  int world_size = 1;
  int64_t shard_len() const { return seq_len / world_size; }
  int64_t first_position() const { return shard_len() * rank; }
};

class TrainingData {
 public:
  virtual ~TrainingData() = default;
  virtual int64_t vocab_size() const = 0;
  // step >= 1; any step, in any order (eval uses steps past the end of training).
  virtual Batch batch(int64_t step) const = 0;
  // Whether next-token accuracy on the targets is meaningful enough to log (synthetic tasks).
  virtual bool reports_accuracy() const = 0;
  virtual std::string describe() const = 0;
};

// --data: "synthetic:<task>[:args]" (runtime/synthetic_tasks.h) or the path of a token file
// (runtime/token_dataset.h). Checks everything before any training work.
std::unique_ptr<TrainingData> make_training_data(const std::string& spec, const ShardLayout& layout,
                                                 uint64_t seed);

}  // namespace ra
