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
  // every member's rows are two chunks (ids 2i, 2i + 1: the halves of its shard) and member i
  // computes the queries of its first chunk and of its mirror's (m - 1 - i) second one, so
  // every member attends 2m chunk pairs' worth of keys instead of 1 (member 0) .. 2m - 1
  // (member m - 1). Only queries move (to the mirror and back with their results); K/V and
  // their gradients stay with their owners. query_chunks: the chunks whose queries this rank
  // computes, in packed order (its first, then the mirror's second); empty when not balanced.
  std::vector<KeptChunk> query_chunks;

  const std::vector<KeptChunk>& my_chunks() const { return member_chunks[member]; }
  // The query rows this rank computes: query_chunks when balanced, else its own chunks.
  const std::vector<KeptChunk>& my_query_chunks() const {
    return query_chunks.empty() ? my_chunks() : query_chunks;
  }
  int mirror() const { return group_size - 1 - member; }
  // Balanced and not the middle member of an odd group: queries go to the mirror and back.
  bool swaps_queries() const { return !query_chunks.empty() && mirror() != member; }
  int64_t kept_of(int i) const;  // total kept positions of member i
};

// The kept positions of segment-relative range [chunk_start, chunk_start + chunk_length),
// keeping offset + t * rate for t < kept_per_segment; local_base is where the range starts
// in the shard. count = 0 when none is kept there.
KeptChunk kept_in_chunk(int64_t id, int64_t chunk_start, int64_t chunk_length, int64_t local_base,
                        int64_t offset, int64_t rate, int64_t kept_per_segment);

// Tasks of this rank for a plan built on the global length: shard = S / world_size tokens,
// `zigzag` = the balanced layout (rank p holds chunks p and 2P-1-p of 2P; only for one dense
// branch w = S, r = 1, checked by validate_ring_layout); kv_group = H / H_kv;
// `balance_causal`: causal spanning tasks get query_chunks (above) where every member keeps
// rows in both halves of its shard (else they stay unbalanced). Not with zigzag.
std::vector<ShardTask> plan_shard_tasks(const DilationPlan& plan, int64_t shard_length,
                                        int world_size, int rank, bool zigzag, int64_t kv_group = 1,
                                        bool balance_causal = false);

}  // namespace ra
