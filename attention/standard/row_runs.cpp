// row_runs: cut [0, n) at every range boundary, then join neighbours with the same cover.
#include "attention/standard/row_runs.h"

#include <algorithm>

#include "runtime/error.h"

namespace ra {

std::vector<RowRun> row_runs(int64_t n, const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  std::vector<int64_t> cuts = {0, n};
  for (const auto& [start, count] : ranges) {
    RA_CHECK(start >= 0 && count >= 0 && start + count <= n, "row_runs: rows [", start, ", ",
             start + count, ") outside the ", n, " rows of the target");
    cuts.push_back(start);
    cuts.push_back(start + count);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::vector<RowRun> runs;
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    RowRun run{cuts[c], cuts[c + 1], {}};
    for (size_t i = 0; i < ranges.size(); ++i) {
      const auto& [start, count] = ranges[i];
      if (start <= run.begin && run.begin < start + count) run.cover.push_back(i);
    }
    if (!runs.empty() && runs.back().cover == run.cover) {
      runs.back().end = run.end;
    } else {
      runs.push_back(std::move(run));
    }
  }
  return runs;
}

}  // namespace ra
