// The key-value retrieval task (see synthetic_tasks.h). Every rank draws the same per-sequence
// key->value map and query order from (seed, step, sequence), then writes only the positions
// of its own shard; filler comes from a generator keyed also by the rank.
#include "runtime/synthetic_tasks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <sstream>

#include "runtime/cli_values.h"
#include "runtime/error.h"

namespace ra {
namespace {

uint64_t mix(uint64_t a, uint64_t b) {  // splitmix64-style combination of seeds
  uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

KeyValueRetrievalTask::KeyValueRetrievalTask(int64_t keys, int64_t values,
                                             const ShardLayout& layout, uint64_t seed)
    : keys_(keys), values_(values), layout_(layout), seed_(seed) {
  RA_CHECK(keys >= 1 && values >= 2, "--data = synthetic:kv:", keys, ":", values,
           ": needs at least 1 key and 2 values");
  RA_CHECK(layout.seq_len >= 2 * keys, "--seq-len = ", layout.seq_len, ": synthetic:kv with ", keys,
           " keys needs at least ", 2 * keys, " tokens (pairs first, queries last)");
}

int64_t KeyValueRetrievalTask::vocab_size() const {
  return kFillerTokens + keys_ * values_ + keys_ + values_;
}

std::string KeyValueRetrievalTask::describe() const {
  std::ostringstream os;
  os << "synthetic:kv (" << keys_ << " keys, " << values_ << " values, chance accuracy "
     << 1.0 / double(values_) << ")";
  return os.str();
}

Batch KeyValueRetrievalTask::batch(int64_t step) const {
  const int64_t B = layout_.batch_size, n = layout_.shard_len(), first = layout_.first_position();
  const int64_t S = layout_.seq_len;
  at::Tensor tokens = at::empty({B, n}, at::kLong), targets = at::full({B, n}, -1, at::kLong);
  auto tok = tokens.accessor<int64_t, 2>();
  auto tgt = targets.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const uint64_t sequence_seed = mix(mix(seed_, uint64_t(step)), uint64_t(b));
    std::mt19937_64 shared(sequence_seed);  // same on every rank
    std::vector<int64_t> value_of(keys_), pair_order(keys_), query_order(keys_);
    std::uniform_int_distribution<int64_t> value_dist(0, values_ - 1);
    for (auto& v : value_of) v = value_dist(shared);
    std::iota(pair_order.begin(), pair_order.end(), 0);
    std::iota(query_order.begin(), query_order.end(), 0);
    std::shuffle(pair_order.begin(), pair_order.end(), shared);
    std::shuffle(query_order.begin(), query_order.end(), shared);
    std::mt19937_64 local(mix(sequence_seed, uint64_t(layout_.rank) + 1));
    std::uniform_int_distribution<int64_t> filler(0, kFillerTokens - 1);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = first + i;
      if (pos < keys_) {
        const int64_t key = pair_order[pos];
        tok[b][i] = pair_token(key, value_of[key]);
      } else if (pos >= S - keys_) {
        const int64_t key = query_order[pos - (S - keys_)];
        tok[b][i] = query_token(key);
        tgt[b][i] = value_token(value_of[key]);
      } else {
        tok[b][i] = filler(local);
      }
    }
  }
  return {tokens, targets};
}

std::unique_ptr<TrainingData> make_synthetic_task(const std::string& spec,
                                                  const ShardLayout& layout, uint64_t seed) {
  // spec = "synthetic:<task>[:a[:b]]"
  std::vector<std::string> parts;
  std::stringstream ss(spec);
  for (std::string part; std::getline(ss, part, ':');) parts.push_back(part);
  const std::string allowed = "allowed: synthetic:kv[:KEYS[:VALUES]] or a token file path";
  RA_CHECK(parts.size() >= 2 && parts[0] == "synthetic", "--data = '", spec, "': ", allowed);
  if (parts[1] == "kv" && parts.size() <= 4) {
    const int64_t keys = parts.size() > 2 ? parse_token_count(parts[2], "--data (kv keys)") : 8;
    const int64_t values = parts.size() > 3 ? parse_token_count(parts[3], "--data (kv values)") : 8;
    return std::make_unique<KeyValueRetrievalTask>(keys, values, layout, seed);
  }
  RA_THROW("--data = '", spec, "': unknown synthetic task; ", allowed);
}

}  // namespace ra
