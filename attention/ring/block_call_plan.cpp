// Block-call planning on the grid of non-empty (query chunk, key chunk) pairs: diagonal squares
// first, then greedy rectangles of fully attended pairs. Every attended pair is covered once.
#include "attention/ring/block_call_plan.h"

#include "runtime/error.h"

namespace ra {
namespace {

enum class Pair { kSkip, kFull, kDiagonal };

struct Span {
  int64_t id, start, count;  // chunk id, packed start, kept rows
};

std::vector<Span> non_empty(const std::vector<KeptChunk>& chunks) {
  std::vector<Span> spans;
  int64_t start = 0;
  for (const KeptChunk& c : chunks) {
    if (c.count > 0) spans.push_back({c.id, start, c.count});
    start += c.count;
  }
  return spans;
}

}  // namespace

std::vector<BlockCall> plan_block_calls(const std::vector<KeptChunk>& q_chunks,
                                        const std::vector<KeptChunk>& kv_chunks, bool causal) {
  const std::vector<Span> q = non_empty(q_chunks), kv = non_empty(kv_chunks);
  const size_t nq = q.size(), nk = kv.size();
  auto pair = [&](size_t a, size_t b) {
    if (!causal || kv[b].id < q[a].id) return Pair::kFull;
    return kv[b].id == q[a].id ? Pair::kDiagonal : Pair::kSkip;
  };
  std::vector<std::vector<bool>> covered(nq, std::vector<bool>(nk, false));
  std::vector<BlockCall> calls;

  // Diagonal squares: (a, b), (a+1, b+1), ... same chunk, ids increasing along the run.
  for (size_t a = 0; a < nq; ++a) {
    for (size_t b = 0; b < nk; ++b) {
      if (covered[a][b] || pair(a, b) != Pair::kDiagonal) continue;
      size_t n = 0;
      int64_t rows = 0;
      while (a + n < nq && b + n < nk && pair(a + n, b + n) == Pair::kDiagonal &&
             (n == 0 || q[a + n].id > q[a + n - 1].id)) {
        RA_CHECK(q[a + n].count == kv[b + n].count, "block call plan: chunk ", q[a + n].id, " has ",
                 q[a + n].count, " query rows but ", kv[b + n].count, " key rows");
        rows += q[a + n].count;
        ++n;
      }
      for (size_t i = 0; i < n; ++i) {
        for (size_t j = 0; j < n; ++j) covered[a + i][b + j] = true;
      }
      calls.push_back({q[a].start, rows, kv[b].start, rows, BlockMask::kCausalDiagonal});
    }
  }

  // Rectangles of fully attended pairs: widest run in row a, then as many rows as match it.
  auto free_full = [&](size_t a, size_t b) { return !covered[a][b] && pair(a, b) == Pair::kFull; };
  for (size_t a = 0; a < nq; ++a) {
    for (size_t b = 0; b < nk; ++b) {
      if (!free_full(a, b)) continue;
      size_t b_end = b + 1;
      while (b_end < nk && free_full(a, b_end)) ++b_end;
      size_t a_end = a + 1;
      for (; a_end < nq; ++a_end) {
        bool row_ok = true;
        for (size_t j = b; j < b_end && row_ok; ++j) row_ok = free_full(a_end, j);
        if (!row_ok) break;
      }
      for (size_t i = a; i < a_end; ++i) {
        for (size_t j = b; j < b_end; ++j) covered[i][j] = true;
      }
      const int64_t q_rows = q[a_end - 1].start + q[a_end - 1].count - q[a].start;
      const int64_t kv_rows = kv[b_end - 1].start + kv[b_end - 1].count - kv[b].start;
      calls.push_back({q[a].start, q_rows, kv[b].start, kv_rows, BlockMask::kNone});
    }
  }
  return calls;
}

}  // namespace ra
