// Picks the spanning strategy for RingConfig::strategy.
#include "attention/ring/spanning_strategy.h"

namespace ra {

std::unique_ptr<SpanningStrategy> make_spanning_strategy(RingStrategy kind) {
  if (kind == RingStrategy::kAllGather) return std::make_unique<AllGatherSpanning>();
  return std::make_unique<RingSpanning>();
}

}  // namespace ra
