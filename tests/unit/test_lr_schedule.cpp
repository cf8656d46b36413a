// LrSchedule: linear warmup to the peak, cosine to min_ratio * peak at the last step.
#include <gtest/gtest.h>

#include "runtime/lr_schedule.h"

namespace ra {
namespace {

TEST(LrSchedule, WarmupThenCosineToTheFloor) {
  LrSchedule s{1e-3, 10, 110, 0.1};
  EXPECT_DOUBLE_EQ(s.at(1), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(5), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(60), 1e-3 * (0.1 + 0.9 * 0.5), 1e-15);  // half way through the decay
  EXPECT_NEAR(s.at(110), 1e-4, 1e-15);
  EXPECT_NEAR(s.at(500), 1e-4, 1e-15);  // past the end: stays at the floor
  for (int64_t step = 11; step < 110; ++step) EXPECT_LT(s.at(step + 1), s.at(step));
}

TEST(LrSchedule, NoWarmupStartsAtThePeak) {
  LrSchedule s{2e-3, 0, 4, 0.0};
  EXPECT_NEAR(s.at(0), 2e-3, 1e-15);
  EXPECT_NEAR(s.at(4), 0.0, 1e-15);
}

}  // namespace
}  // namespace ra
