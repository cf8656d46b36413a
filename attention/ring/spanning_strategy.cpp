// Picks the spanning strategy for RingConfig::strategy.
#include "attention/ring/spanning_strategy.h"

namespace ra {

std::unique_ptr<SpanningStrategy> make_spanning_strategy(const RingConfig& config) {
  if (config.strategy == RingStrategy::kAllGather) {
    return std::make_unique<AllGatherSpanning>(config.exchange_ctas);
  }
  return std::make_unique<RingSpanning>();
}

}  // namespace ra
