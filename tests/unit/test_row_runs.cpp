// row_runs: the runs of a target's rows with the same covering ranges tile [0, n) in order,
// neighbours with the same cover joined, uncovered rows as runs with no cover, and ranges outside
// the target refused.
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "attention/standard/row_runs.h"
#include "runtime/error.h"

namespace ra {
namespace {

using Ranges = std::vector<std::pair<int64_t, int64_t>>;

std::vector<std::vector<int64_t>> describe(const std::vector<RowRun>& runs) {
  std::vector<std::vector<int64_t>> out;
  for (const RowRun& r : runs) {
    std::vector<int64_t> row = {r.begin, r.end};
    for (size_t i : r.cover) row.push_back(int64_t(i));
    out.push_back(row);
  }
  return out;
}

TEST(RowRuns, TileTheRowsByCoveringRanges) {
  // Rows 0-1 none; 2-3 range 0; 4-7 ranges 0 and 1; 8-9 range 1 (the empty range 3 cuts at 9,
  // covers nothing, and the two sides are joined again); 10-11 none (range 2 is empty too).
  const Ranges ranges = {{2, 6}, {4, 6}, {10, 0}, {9, 0}};
  const std::vector<std::vector<int64_t>> want = {
      {0, 2}, {2, 4, 0}, {4, 8, 0, 1}, {8, 10, 1}, {10, 12}};
  EXPECT_EQ(describe(row_runs(12, ranges)), want);
}

TEST(RowRuns, JoinsNeighboursWithTheSameCover) {
  // Two ranges that both cover rows 0-5, one cut at 3 by a third that ends there: joined where
  // the cover is the same on both sides of a cut.
  const Ranges same = {{0, 6}, {0, 3}, {3, 3}};
  const std::vector<std::vector<int64_t>> want = {{0, 3, 0, 1}, {3, 6, 0, 2}};
  EXPECT_EQ(describe(row_runs(6, same)), want);
  const Ranges back_to_back = {{0, 3}, {0, 3}};
  EXPECT_EQ(describe(row_runs(5, back_to_back)),
            (std::vector<std::vector<int64_t>>{{0, 3, 0, 1}, {3, 5}}));
  EXPECT_EQ(describe(row_runs(4, {})), (std::vector<std::vector<int64_t>>{{0, 4}}));
  EXPECT_TRUE(row_runs(0, {}).empty());
}

TEST(RowRuns, RefusesRangesOutsideTheTarget) {
  EXPECT_THROW(row_runs(10, {{8, 3}}), Error);
  EXPECT_THROW(row_runs(10, {{-1, 2}}), Error);
  EXPECT_THROW(row_runs(10, {{2, -1}}), Error);
}

}  // namespace
}  // namespace ra
