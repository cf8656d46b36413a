// Where one head group of one dilated branch lives on this rank when the sequence is sharded:
// either whole segments inside the shard (a local task, no communication) or one piece of a
// segment that spans m ranks (a spanning task). A spanning segment's kept positions
// o, o + r, ... are cut into chunks, one or more per rank, in segment order; the chunk id is
// that order (causal masking compares ids). Every rank can compute every member's chunks, so
// receive sizes are known without a handshake.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/standard/dilation_plan.h"

namespace ra {

// Kept positions of one chunk: local shard indices first, first + rate, ... (count of them).
struct KeptChunk {
  int64_t id = 0;
  int64_t first = 0;
  int64_t count = 0;
};

// Heads of a head group as a strided range (all mode: o, o + r, ...; partition: a block).
struct HeadRange {
  int64_t start = 0, stop = 0, step = 1;
  int64_t count() const { return (stop - start + step - 1) / step; }
};

struct ShardTask {
  int branch = 0;
  int64_t rate = 1;
  int64_t offset = 0;
  HeadRange heads;
  bool local = true;
  // Local task: the shard holds local_segments whole segments of segment_length tokens, each
  // keeping kept_per_segment positions starting at `offset`.
  int64_t segment_length = 0;
  int64_t local_segments = 0;
  int64_t kept_per_segment = 0;
  // Spanning task: the segment group has group_size ranks; member_chunks[i] are the chunks of
  // member i (members are ranks p .. p + group_size - 1 of one aligned block, in order).
  int group_size = 1;
  int member = 0;
  std::vector<std::vector<KeptChunk>> member_chunks;

  const std::vector<KeptChunk>& my_chunks() const { return member_chunks[member]; }
  int64_t kept_of(int i) const;  // total kept positions of member i
};

// The kept positions of segment-relative range [chunk_start, chunk_start + chunk_length),
// keeping offset + t * rate for t < kept_per_segment; local_base is where the range starts
// in the shard. count = 0 when none is kept there.
KeptChunk kept_in_chunk(int64_t id, int64_t chunk_start, int64_t chunk_length, int64_t local_base,
                        int64_t offset, int64_t rate, int64_t kept_per_segment);

// Tasks of this rank for a plan built on the global length: shard = S / world_size tokens,
// `zigzag` = the balanced layout (rank p holds chunks p and 2P-1-p of 2P; only for one dense
// branch w = S, r = 1, checked by validate_ring_layout).
std::vector<ShardTask> plan_shard_tasks(const DilationPlan& plan, int64_t shard_length,
                                        int world_size, int rank, bool zigzag);

}  // namespace ra
