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

// GQA: the k/v heads a task's query heads read (query head h reads k/v head h / group, group
// = H / H_kv). Only these travel; they are expanded to the query heads after receipt.
struct KvHeads {
  std::vector<int64_t> heads;   // distinct k/v heads, ascending
  std::vector<int64_t> expand;  // per query head of the task: its k/v head's index in `heads`
  // `heads` as a strided range, or count() == 0 when they are not one (e.g. {0, 1, 3}).
  HeadRange range;
  // One k/v head per query head, in order (no GQA sharing inside the task): nothing to expand.
  bool identity() const { return heads.size() == expand.size(); }
};

// The k/v heads of query heads `q_heads` when `group` query heads share one k/v head.
KvHeads kv_heads_of(const HeadRange& q_heads, int64_t group);

struct ShardTask {
  int branch = 0;
  int64_t rate = 1;
  int64_t offset = 0;
  HeadRange heads;
  KvHeads kv;
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

  // Causal balance (a causal spanning task in the natural layout, RingConfig::balance_causal):
  // member i's home rows are its shard halves (chunk ids 2i, 2i + 1), but the ring computes in
  // the mirror layout: member i holds its first half and its mirror's (m - 1 - i) second half,
  // for queries and keys alike. There every pair of members attends the same amount per hop
  // (2 chunk pairs, diagonal 1/2), as in the zigzag layout: with the plain layout member i
  // attends i + 1 of the m shards and the ring's neighbours wait for the slowest hop.
  // member_chunks is then the mirror layout (a chunk's `first` is a shard index only where
  // the chunk is the rank's own) and home_chunks this rank's own rows, in order; empty
  // when not balanced (the home rows are then my_chunks()).
  std::vector<KeptChunk> home_chunks;

  // This rank's chunks in the layout the strategies compute in (ids, counts).
  const std::vector<KeptChunk>& my_chunks() const { return member_chunks[member]; }
  // This rank's own kept rows in its shard (gathers from and adds into its tensors).
  const std::vector<KeptChunk>& my_home_chunks() const {
    return home_chunks.empty() ? my_chunks() : home_chunks;
  }
  int mirror() const { return group_size - 1 - member; }
  // Balanced and not the middle member of an odd group: second halves swap with the mirror.
  bool swaps_rows() const { return !home_chunks.empty() && mirror() != member; }
  int64_t kept_of(int i) const;  // total kept positions of member i (compute layout)
  int64_t home_kept() const;     // total kept positions of this rank's home rows
};

// The kept positions of segment-relative range [chunk_start, chunk_start + chunk_length),
// keeping offset + t * rate for t < kept_per_segment; local_base is where the range starts
// in the shard. count = 0 when none is kept there.
KeptChunk kept_in_chunk(int64_t id, int64_t chunk_start, int64_t chunk_length, int64_t local_base,
                        int64_t offset, int64_t rate, int64_t kept_per_segment);

// Tasks of this rank for a plan built on the global length: shard = S / world_size tokens,
// `zigzag` = the balanced layout (rank p holds chunks p and 2P-1-p of 2P; only for one dense
// branch w = S, r = 1, checked by validate_ring_layout); kv_group = H / H_kv;
// `balance_causal`: causal spanning tasks get the mirror layout (above) where every member keeps
// rows in both halves of its shard (else they stay unbalanced). Not with zigzag.
std::vector<ShardTask> plan_shard_tasks(const DilationPlan& plan, int64_t shard_length,
                                        int world_size, int rank, bool zigzag, int64_t kv_group = 1,
                                        bool balance_causal = false);

}  // namespace ra
