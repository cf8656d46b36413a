// Sub-communicators by group size: color = rank / m, ordered by rank, so a group's member
// index is rank % m. The whole world is used as is.
#include "attention/ring/segment_groups.h"

#include <mutex>

namespace ra {

SegmentGroups::SegmentGroups(std::shared_ptr<Communicator> world) : world_(std::move(world)) {
  RA_CHECK(world_ != nullptr, "SegmentGroups: communicator is null");
}

std::shared_ptr<SegmentGroups> SegmentGroups::shared(const std::shared_ptr<Communicator>& world) {
  RA_CHECK(world != nullptr, "SegmentGroups: communicator is null");
  static std::mutex mutex;
  static std::map<const Communicator*, std::weak_ptr<SegmentGroups>> registry;
  std::lock_guard<std::mutex> lock(mutex);
  // A live entry keeps its communicator alive, so an address match is the same communicator.
  std::shared_ptr<SegmentGroups> groups = registry[world.get()].lock();
  if (!groups) {
    groups = std::make_shared<SegmentGroups>(world);
    registry[world.get()] = groups;
  }
  return groups;
}

RingExchange& SegmentGroups::group(int m) {
  RA_CHECK(m > 0 && world_->size() % m == 0, "segment group size = ", m,
           ": must divide the number of ranks ", world_->size());
  auto it = groups_.find(m);
  if (it == groups_.end()) {
    auto comm = m == world_->size() ? world_ : world_->split(world_->rank() / m, world_->rank());
    it = groups_.emplace(m, std::make_unique<RingExchange>(comm)).first;
  }
  return *it->second;
}

void SegmentGroups::follow_world(double timeout_seconds) {
  world_->set_timeout_seconds(timeout_seconds);
  for (auto& [m, ring] : groups_) {
    ring->set_timeout_seconds(timeout_seconds);
    ring->set_context(world_->context());
  }
}

RingExchange::Counters SegmentGroups::counters() const {
  RingExchange::Counters total;
  for (const auto& [m, ring] : groups_) {
    const auto& c = ring->counters();
    total.bytes_reserved += c.bytes_reserved;
    total.allocations += c.allocations;
    total.reuse_hits += c.reuse_hits;
    total.bytes_sent += c.bytes_sent;
    total.transfers += c.transfers;
  }
  return total;
}

}  // namespace ra
