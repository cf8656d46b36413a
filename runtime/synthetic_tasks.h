// Synthetic tasks that need long-range attention and cannot be solved inside one shard.
//
// "kv" (key-value retrieval), synthetic:kv[:KEYS[:VALUES]] (default 8 keys, 8 values):
// each sequence draws a random map key -> value. Its first KEYS tokens are "pair" tokens (one
// token encodes (key, value)), its last KEYS tokens are "query" tokens (one per key, shuffled),
// everything else is filler. The target at a query is the value token of its key; nothing
// else is scored. The pairs sit on the first rank's shard and the queries on the last rank's,
// so with shard-local attention the values are unknowable: accuracy stays at chance 1/VALUES.
// Vocabulary: [filler 16 | pairs KEYS*VALUES | queries KEYS | values VALUES].
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/training_data.h"

namespace ra {

class KeyValueRetrievalTask : public TrainingData {
 public:
  static constexpr int64_t kFillerTokens = 16;

  KeyValueRetrievalTask(int64_t keys, int64_t values, const ShardLayout& layout, uint64_t seed);

  int64_t vocab_size() const override;
  Batch batch(int64_t step) const override;
  bool reports_accuracy() const override { return true; }
  std::string describe() const override;

  int64_t pair_token(int64_t key, int64_t value) const {
    return kFillerTokens + key * values_ + value;
  }
  int64_t query_token(int64_t key) const { return kFillerTokens + keys_ * values_ + key; }
  int64_t value_token(int64_t value) const {
    return kFillerTokens + keys_ * values_ + keys_ + value;
  }

 private:
  int64_t keys_, values_;
  ShardLayout layout_;
  uint64_t seed_;
};

// "synthetic:<task>[:args]" -> the task; errors name --data and list the tasks.
std::unique_ptr<TrainingData> make_synthetic_task(const std::string& spec,
                                                  const ShardLayout& layout, uint64_t seed);

}  // namespace ra
