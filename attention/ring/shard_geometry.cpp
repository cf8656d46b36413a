// Shard geometry: the first kept index inside a chunk is the first t with
// offset + t * rate >= chunk_start, which need not be the chunk start when the rate does not
// divide the shard length, and the chunk may keep nothing (offset beyond the kept range).
#include "attention/ring/shard_geometry.h"

#include <algorithm>

#include "runtime/error.h"

namespace ra {
namespace {

HeadRange head_range(const HeadGroup& group) {
  const auto& h = group.heads;
  RA_CHECK(!h.empty(), "shard geometry: empty head group");
  const int64_t step = h.size() > 1 ? h[1] - h[0] : 1;
  for (size_t i = 1; i < h.size(); ++i) {
    RA_CHECK(h[i] - h[i - 1] == step, "shard geometry: head group is not a strided range");
  }
  return {h.front(), h.back() + 1, step};
}

// Splits each member's one chunk into its shard halves (ids 2i, 2i + 1, the home rows) and
// lays the members out in the mirror layout, when every half keeps rows (else the task stays).
void balance_members(ShardTask& task, int64_t shard_length) {
  const int m = task.group_size;
  const int64_t half = shard_length / 2;
  std::vector<std::vector<KeptChunk>> home(m);
  for (int i = 0; i < m; ++i) {
    for (int64_t h = 0; h < 2; ++h) {
      home[i].push_back(kept_in_chunk(2 * i + h, i * shard_length + h * half, half, h * half,
                                      task.offset, task.rate, task.kept_per_segment));
      if (home[i].back().count == 0) return;
    }
  }
  for (int i = 0; i < m; ++i) task.member_chunks[i] = {home[i][0], home[m - 1 - i][1]};
  task.home_chunks = home[task.member];
}

}  // namespace

KvHeads kv_heads_of(const HeadRange& q_heads, int64_t group) {
  RA_CHECK(group >= 1, "shard geometry: k/v head group ", group);
  KvHeads kv;
  for (int64_t h = q_heads.start; h < q_heads.stop; h += q_heads.step) {
    const int64_t head = h / group;  // ascending, so repeats are adjacent
    if (kv.heads.empty() || kv.heads.back() != head) kv.heads.push_back(head);
    kv.expand.push_back(static_cast<int64_t>(kv.heads.size()) - 1);
  }
  const auto& h = kv.heads;
  const int64_t step = h.size() > 1 ? h[1] - h[0] : 1;
  bool strided = true;
  for (size_t i = 1; i < h.size(); ++i) strided = strided && h[i] - h[i - 1] == step;
  if (strided) kv.range = {h.front(), h.back() + 1, step};
  return kv;
}

namespace {
int64_t total_count(const std::vector<KeptChunk>& chunks) {
  int64_t total = 0;
  for (const KeptChunk& c : chunks) total += c.count;
  return total;
}
}  // namespace

int64_t ShardTask::kept_of(int i) const { return total_count(member_chunks[i]); }
int64_t ShardTask::home_kept() const { return total_count(my_home_chunks()); }

KeptChunk kept_in_chunk(int64_t id, int64_t chunk_start, int64_t chunk_length, int64_t local_base,
                        int64_t offset, int64_t rate, int64_t kept_per_segment) {
  KeptChunk chunk{id, 0, 0};
  const int64_t t_first = offset >= chunk_start ? 0 : (chunk_start - offset + rate - 1) / rate;
  const int64_t chunk_end = chunk_start + chunk_length;  // exclusive
  if (t_first >= kept_per_segment || offset + t_first * rate >= chunk_end) return chunk;
  const int64_t t_last = std::min(kept_per_segment - 1, (chunk_end - 1 - offset) / rate);
  chunk.first = local_base + offset + t_first * rate - chunk_start;
  chunk.count = t_last - t_first + 1;
  return chunk;
}

std::vector<ShardTask> plan_shard_tasks(const DilationPlan& plan, int64_t shard_length,
                                        int world_size, int rank, bool zigzag, int64_t kv_group,
                                        bool balance_causal) {
  std::vector<ShardTask> tasks;
  for (const BranchPlan& branch : plan.branches) {
    for (const HeadGroup& group : branch.groups) {
      ShardTask task;
      task.branch = branch.index;
      task.rate = branch.rate;
      task.offset = group.offset;
      task.heads = head_range(group);
      task.kv = kv_heads_of(task.heads, kv_group);
      task.kept_per_segment = branch.kept_per_segment(group.offset);
      if (task.kept_per_segment == 0) continue;  // this head group keeps nothing
      if (!zigzag && branch.segment <= shard_length) {
        task.local = true;
        task.segment_length = branch.segment;
        task.local_segments = shard_length / branch.segment;
      } else {
        task.local = false;
        const int m = zigzag ? world_size : static_cast<int>(branch.segment / shard_length);
        task.group_size = m;
        task.member = rank % m;
        task.member_chunks.resize(m);
        for (int i = 0; i < m; ++i) {
          if (zigzag) {
            const int64_t half = shard_length / 2;
            task.member_chunks[i] = {
                kept_in_chunk(i, i * half, half, 0, task.offset, task.rate, task.kept_per_segment),
                kept_in_chunk(2 * m - 1 - i, (2 * m - 1 - i) * half, half, half, task.offset,
                              task.rate, task.kept_per_segment)};
          } else {
            task.member_chunks[i] = {kept_in_chunk(i, i * shard_length, shard_length, 0,
                                                   task.offset, task.rate, task.kept_per_segment)};
          }
        }
        if (balance_causal && !zigzag && shard_length % 2 == 0) balance_members(task, shard_length);
      }
      tasks.push_back(std::move(task));
    }
  }
  return tasks;
}

}  // namespace ra
