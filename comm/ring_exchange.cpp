// RingExchange: byte buffers per slot, reinterpreted as the requested dtype and shape.
#include "comm/ring_exchange.h"

#include <ATen/ATen.h>

namespace ra {

RingExchange::RingExchange(std::shared_ptr<Communicator> comm) : comm_(std::move(comm)) {
  RA_CHECK(comm_ != nullptr, "RingExchange: communicator is null");
}

at::Tensor RingExchange::buffer(int slot, at::IntArrayRef shape, const at::TensorOptions& options) {
  RA_CHECK(slot >= 0, "RingExchange: slot = ", slot, ": must be >= 0");
  if (slots_.size() <= static_cast<size_t>(slot)) slots_.resize(slot + 1);
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  const int64_t bytes =
      numel * static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
  at::Tensor& storage = slots_[slot];
  if (!storage.defined() || storage.numel() < bytes || storage.device() != options.device()) {
    if (storage.defined()) counters_.bytes_reserved -= storage.numel();
    // Round up so small growth does not reallocate every call.
    const int64_t capacity = std::max<int64_t>(bytes + bytes / 4, 256);
    storage = at::empty({capacity}, options.dtype(at::kByte));
    counters_.bytes_reserved += capacity;
    ++counters_.allocations;
  } else {
    ++counters_.reuse_hits;
  }
  return storage.narrow(0, 0, bytes).view(c10::typeMetaToScalarType(options.dtype())).view(shape);
}

void RingExchange::start(const at::Tensor& send, at::Tensor& recv, int stream) {
  RA_CHECK(stream >= 0, "RingExchange: stream = ", stream, ": must be >= 0");
  if (in_flight_.size() <= static_cast<size_t>(stream)) in_flight_.resize(stream + 1);
  RA_CHECK(!in_flight_[stream], "RingExchange: stream ", stream,
           " already has a transfer in flight; wait() for it first");
  in_flight_[stream] = comm_->start_send_recv(send, next(), recv, prev(), stream);
  count(send);
}

void RingExchange::wait(int stream) {
  RA_CHECK(static_cast<size_t>(stream) < in_flight_.size() && in_flight_[stream],
           "RingExchange: nothing in flight on stream ", stream);
  auto pending = std::move(in_flight_[stream]);
  pending->wait();
}

void RingExchange::swap(const at::Tensor& send, at::Tensor& recv, int peer) {
  RA_CHECK(peer >= 0 && peer < size() && peer != rank(), "RingExchange: swap peer = ", peer,
           ": must be another rank of this group of ", size());
  for (const auto& pending : in_flight_) {
    RA_CHECK(!pending, "RingExchange: swap while a ring transfer is in flight; wait() first");
  }
  comm_->send_recv(send, peer, recv, peer);
  count(send);
}

std::unique_ptr<PendingTransfer> RingExchange::start_send_recv(const at::Tensor& send, int dst,
                                                               at::Tensor& recv, int src, int tag) {
  check_peers(dst, src);
  auto pending = comm_->start_send_recv(send, dst, recv, src, tag);
  count(send);
  return pending;
}

std::unique_ptr<PendingTransfer> RingExchange::start_send_recv_beside_compute(
    at::TensorList sends, int dst, at::TensorList recvs, int src, at::Device device, int tag,
    int max_ctas) {
  RA_CHECK(max_ctas >= 0, "RingExchange: max_ctas = ", max_ctas,
           "; must be >= 0 (0: NCCL's choice)");
  check_peers(dst, src);
  std::shared_ptr<Communicator> comm = comm_;
  if (max_ctas > 0) {
    std::shared_ptr<Communicator>& duplicate = beside_compute_[max_ctas];
    if (!duplicate) duplicate = comm_->duplicate(max_ctas);
    duplicate->set_timeout_seconds(comm_->timeout_seconds());
    duplicate->set_context(comm_->context());
    comm = duplicate;
  }
  auto pending = comm->start_send_recv_many(sends, dst, recvs, src, device, tag);
  count(sends);
  return pending;
}

void RingExchange::set_timeout_seconds(double seconds) {
  comm_->set_timeout_seconds(seconds);
  for (auto& [ctas, comm] : beside_compute_) comm->set_timeout_seconds(seconds);
}

void RingExchange::set_context(const std::string& context) {
  comm_->set_context(context);
  for (auto& [ctas, comm] : beside_compute_) comm->set_context(context);
}

std::unique_ptr<PendingTransfer> RingExchange::start_all_gather(const at::Tensor& input,
                                                                at::Tensor& output) {
  auto pending = comm_->start_all_gather(input, output);
  count(input);
  return pending;
}

void RingExchange::check_peers(int dst, int src) const {
  for (int peer : {dst, src}) {
    RA_CHECK(peer >= 0 && peer < size(), "RingExchange: send_recv peer = ", peer,
             ": must be a rank of this group of ", size());
  }
}

void RingExchange::count(at::TensorList sent) {
  for (const at::Tensor& t : sent) {
    counters_.bytes_sent += t.numel() * static_cast<int64_t>(t.element_size());
  }
  ++counters_.transfers;
}

}  // namespace ra
