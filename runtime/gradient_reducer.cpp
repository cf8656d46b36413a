// Gradient all-reduce overlapped with backward, one bucket per stage (see gradient_reducer.h).
#include "runtime/gradient_reducer.h"

#include <algorithm>
#include <map>

#include "runtime/error.h"

namespace ra {
namespace {

// Contiguous runs of the parameters whose `owner` is `wanted`: parameters sit in a group's buffer
// in constructor order, so a run is a stretch of consecutive slots of one group (the alignment
// gaps between them are zero in every buffer and reduce to zero).
template <typename Slice>
std::vector<Slice> runs_of(const std::vector<FlatParameters::Slot>& slots,
                           const std::vector<int>& owner, int wanted) {
  std::vector<Slice> runs;
  std::map<size_t, std::vector<size_t>> by_group;  // group -> parameter indices, by offset
  for (size_t i = 0; i < slots.size(); ++i) by_group[slots[i].group].push_back(i);
  for (auto& [group, indices] : by_group) {
    std::sort(indices.begin(), indices.end(),
              [&](size_t a, size_t b) { return slots[a].offset < slots[b].offset; });
    bool open = false;
    for (size_t i : indices) {
      if (owner[i] != wanted) {
        open = false;
        continue;
      }
      const int64_t end = slots[i].offset + slots[i].numel;
      if (open) {
        runs.back().end = end;
      } else {
        runs.push_back({group, slots[i].offset, end});
        open = true;
      }
    }
  }
  return runs;
}

}  // namespace

GradientReducer::GradientReducer(FlatParameters& flat,
                                 const std::vector<std::vector<at::Tensor>>& stage_params,
                                 std::shared_ptr<Communicator> comm)
    : flat_(flat), comm_(std::move(comm)), reported_(stage_params.size(), false) {
  RA_CHECK(comm_ != nullptr, "GradientReducer: communicator is null");
  const std::vector<at::Tensor>& params = flat_.params();
  std::vector<int> owner(params.size(), -1);  // stage of each parameter, -1 = none
  for (size_t s = 0; s < stage_params.size(); ++s) {
    for (const at::Tensor& p : stage_params[s]) {
      auto it = std::find_if(params.begin(), params.end(),
                             [&](const at::Tensor& q) { return q.is_same(p); });
      RA_CHECK(it != params.end(), "GradientReducer: a parameter of stage ", s,
               " is not one of the flat parameters");
      const size_t i = size_t(it - params.begin());
      RA_CHECK(owner[i] == -1, "GradientReducer: parameter ", i, " is in stages ", owner[i],
               " and ", s, ": each parameter belongs to at most one stage");
      owner[i] = int(s);
    }
  }
  for (size_t s = 0; s < stage_params.size(); ++s) {
    stage_slices_.push_back(runs_of<Slice>(flat_.slots(), owner, int(s)));
  }
  rest_slices_ = runs_of<Slice>(flat_.slots(), owner, -1);
}

void GradientReducer::reduce(const std::vector<Slice>& slices) {
  for (const Slice& s : slices) {
    at::Tensor master_grad = flat_.collect_grad_slice(s.group, s.begin, s.end);
    pending_.push_back(comm_->start_all_reduce_sum(master_grad));
  }
}

void GradientReducer::stage_done(size_t stage) {
  RA_CHECK(stage < reported_.size(), "GradientReducer: stage ", stage, " of ", reported_.size());
  if (reported_[stage]) return;  // reported twice: its slices are already in flight
  reported_[stage] = true;
  reduce(stage_slices_[stage]);
}

void GradientReducer::finish() {
  flat_.check_grads_alias();
  reported_last_step_ = size_t(std::count(reported_.begin(), reported_.end(), true));
  for (size_t s = 0; s < reported_.size(); ++s) {
    if (!reported_[s]) reduce(stage_slices_[s]);
    reported_[s] = false;
  }
  reduce(rest_slices_);
  for (auto& transfer : pending_) transfer->wait();
  pending_.clear();
}

}  // namespace ra
