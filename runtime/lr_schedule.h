// Learning-rate schedule: linear warmup to the peak, then cosine decay to min_ratio * peak at
// the last step. A pure function of the step, so a resumed run gets the same rates.
#pragma once

#include <cstdint>

namespace ra {

struct LrSchedule {
  double peak = 3e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_ratio = 0.1;

  // step: 1-based number of the update about to be applied.
  double at(int64_t step) const;
};

}  // namespace ra
