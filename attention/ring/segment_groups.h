// The segment groups of a sharded sequence: a branch whose segment spans m ranks runs within
// the aligned block of m consecutive ranks that hold it. One sub-communicator (and its ring
// buffers) per m, created on first use and then reused by every call, layer and step.
// Creation is collective: every rank asks for the same m in the same order (they run the same
// plan), so the split never deadlocks.
#pragma once

#include <map>
#include <memory>

#include "comm/communicator.h"
#include "comm/ring_exchange.h"

namespace ra {

class SegmentGroups {
 public:
  explicit SegmentGroups(std::shared_ptr<Communicator> world);

  // The one SegmentGroups of `world` in this process (made on first use, kept while any
  // user holds it), so every layer reuses the same sub-communicators and ring buffers.
  static std::shared_ptr<SegmentGroups> shared(const std::shared_ptr<Communicator>& world);

  Communicator& world() { return *world_; }
  // The ring of this rank's group of m ranks (m divides the world size).
  RingExchange& group(int m);
  // Applies a deadline to the world and every group communicator made so far, and the world's
  // context (the trainer's "step 12") to the groups, so their errors name the current step.
  void follow_world(double timeout_seconds);
  // Ring buffer counters summed over the groups.
  RingExchange::Counters counters() const;

 private:
  std::shared_ptr<Communicator> world_;
  std::map<int, std::unique_ptr<RingExchange>> groups_;
};

}  // namespace ra
