// RingExchange: send a block to the next rank of a ring and receive one from the previous,
// over buffers preallocated once and reused across calls, layers and steps (the "memory
// pool" of DESIGN.md), so the compute of block t overlaps the transfer of block t+1:
//   at::Tensor incoming = ring.buffer(slot, shape, options);
//   ring.start(current, incoming);  compute(current);  ring.wait();  current = incoming;
// The allgather strategy's all-gather and dK/dV exchange go through it too, so Counters cover
// every byte the sequence-parallel attention sends. Works over any Communicator (MPI for CPU
// tensors, NCCL for CUDA tensors).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace ra {

class RingExchange {
 public:
  struct Counters {
    int64_t bytes_reserved = 0;  // total capacity of the buffers
    int64_t allocations = 0;     // times a buffer had to grow
    int64_t reuse_hits = 0;      // buffer requests served without allocating
    int64_t bytes_sent = 0;
    int64_t transfers = 0;
  };

  explicit RingExchange(std::shared_ptr<Communicator> comm);

  int rank() const { return comm_->rank(); }
  int size() const { return comm_->size(); }
  int next() const { return (comm_->rank() + 1) % comm_->size(); }
  int prev() const { return (comm_->rank() + comm_->size() - 1) % comm_->size(); }
  Communicator& comm() { return *comm_; }

  // A contiguous tensor of `shape` over preallocated buffer `slot` (grown when too small).
  // Its contents are whatever the slot last held. A slot's tensor stays valid until the
  // next buffer() call for the same slot.
  at::Tensor buffer(int slot, at::IntArrayRef shape, const at::TensorOptions& options);

  // Starts sending `send` to next() and receiving `recv` from prev(); `stream` separates
  // interleaved exchanges (e.g. K/V and dK/dV in backward). One transfer per stream in flight.
  void start(const at::Tensor& send, at::Tensor& recv, int stream = 0);
  void wait(int stream = 0);
  // Sends `send` to group rank `peer` and receives `recv` from it, at once (both contiguous);
  // counted like ring transfers. No transfer may be in flight.
  void swap(const at::Tensor& send, at::Tensor& recv, int peer);
  // Sends `send` to group rank `dst` and receives `recv` from group rank `src`, started without
  // waiting (Communicator::start_send_recv; `tag` for MPI), counted like ring transfers. Pairs
  // of ranks match their transfers in the order they start them.
  std::unique_ptr<PendingTransfer> start_send_recv(const at::Tensor& send, int dst,
                                                   at::Tensor& recv, int src, int tag = 0);
  // Several tensors each way (Communicator::start_send_recv_many: one NCCL launch), for a
  // transfer that runs beside long compute with time to spare: on the group's duplicate whose
  // NCCL kernels use at most `max_ctas` CTAs (Communicator::duplicate), made by the first such
  // call and kept, so every member must make the same calls; max_ctas 0: the group's
  // communicator. Few CTAs leave the SMs to the persistent attention kernels beside. Counted as
  // one transfer of all the sent bytes. `device`: where the tensors live (either list may be
  // empty).
  std::unique_ptr<PendingTransfer> start_send_recv_beside_compute(at::TensorList sends, int dst,
                                                                  at::TensorList recvs, int src,
                                                                  at::Device device, int tag,
                                                                  int max_ctas);
  // The group's all-gather (Communicator::start_all_gather), counted like ring transfers
  // (bytes_sent: this rank's input).
  std::unique_ptr<PendingTransfer> start_all_gather(const at::Tensor& input, at::Tensor& output);

  const Counters& counters() const { return counters_; }
  // The deadline of every blocking wait, and the label errors carry (Communicator::set_context),
  // on the group's communicator and its duplicates.
  void set_timeout_seconds(double seconds);
  void set_context(const std::string& context);

 private:
  void count(at::TensorList sent);           // one transfer
  void check_peers(int dst, int src) const;  // both ranks of this group

  std::shared_ptr<Communicator> comm_;
  std::map<int, std::shared_ptr<Communicator>> beside_compute_;  // by max_ctas
  std::vector<at::Tensor> slots_;                                // byte buffers
  std::vector<std::unique_ptr<PendingTransfer>> in_flight_;
  Counters counters_;
};

}  // namespace ra
