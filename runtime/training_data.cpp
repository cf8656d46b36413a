// --data dispatch: synthetic tasks or a token file.
#include "runtime/training_data.h"

#include "runtime/synthetic_tasks.h"
#include "runtime/token_dataset.h"

namespace ra {

std::unique_ptr<TrainingData> make_training_data(const std::string& spec, const ShardLayout& layout,
                                                 uint64_t seed) {
  if (spec.rfind("synthetic:", 0) == 0 || spec == "synthetic") {
    return make_synthetic_task(spec, layout, seed);
  }
  return std::make_unique<TokenFileDataset>(spec, layout, seed);
}

}  // namespace ra
