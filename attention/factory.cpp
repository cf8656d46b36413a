// The registry: one line per variant. Kept as a function-local table (no static registration
// objects), so nothing depends on link order or static-initialisation order.
#include "attention/factory.h"

#include <functional>
#include <utility>

#include "attention/ring/ring_dilated_attention.h"
#include "attention/sparse/sparse_dilated_attention.h"
#include "attention/standard/dilated_attention.h"
#include "runtime/error.h"

namespace ra {
namespace {

// The sequence-parallel variants: the factory name picks the strategy.
std::shared_ptr<DilatedAttentionBase> make_sequence_parallel(const AttentionSpec& s,
                                                             RingStrategy strategy) {
  RA_CHECK(s.comm != nullptr, "attention = '", to_string(strategy),
           "' needs a communicator: set AttentionSpec::comm (e.g. the world communicator)");
  RingConfig ring = s.ring;
  ring.strategy = strategy;
  return std::make_shared<RingDilatedAttention>(s.attention, ring, s.comm);
}

using Creator = std::function<std::shared_ptr<DilatedAttentionBase>(const AttentionSpec&)>;

const std::vector<std::pair<std::string, Creator>>& registry() {
  static const std::vector<std::pair<std::string, Creator>> table = {
      {"standard",
       [](const AttentionSpec& s) { return std::make_shared<DilatedAttention>(s.attention); }},
      {"sparse",
       [](const AttentionSpec& s) {
         return std::make_shared<SparseDilatedAttention>(s.attention, s.sparse, s.comm);
       }},
      {"ring",
       [](const AttentionSpec& s) { return make_sequence_parallel(s, RingStrategy::kRing); }},
      {"allgather",
       [](const AttentionSpec& s) { return make_sequence_parallel(s, RingStrategy::kAllGather); }},
  };
  return table;
}

}  // namespace

std::vector<std::string> attention_names() {
  std::vector<std::string> names;
  for (const auto& entry : registry()) names.push_back(entry.first);
  return names;
}

std::shared_ptr<DilatedAttentionBase> make_attention(const std::string& name,
                                                     const AttentionSpec& spec) {
  for (const auto& [entry_name, create] : registry()) {
    if (entry_name == name) return create(spec);
  }
  std::string valid;
  for (const auto& n : attention_names()) valid += (valid.empty() ? "" : ", ") + n;
  RA_THROW("attention = '", name, "' is not a known attention variant; allowed: ", valid);
}

}  // namespace ra
