// The runs of a target's rows over which the same pieces cover every row: what the sums and
// merges of block pieces (sum_pieces_into_, merge_pieces_into_) loop over, one pass per run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace ra {

struct RowRun {
  int64_t begin = 0, end = 0;  // rows [begin, end)
  std::vector<size_t> cover;   // the ranges that cover them, in the order given
};

// ranges: (start, count) row ranges of an n-row target (an error outside it). Returns the runs
// that tile [0, n) in order, each as long as its set of covering ranges stays the same.
std::vector<RowRun> row_runs(int64_t n, const std::vector<std::pair<int64_t, int64_t>>& ranges);

}  // namespace ra
