// The default (synchronous) start_* operations of backends without a native async path.
#include "comm/communicator.h"

#include <ATen/ATen.h>

#include <exception>
#include <vector>

namespace ra {
namespace {

class CompletedTransfer : public PendingTransfer {
 public:
  void wait() override {}
};

// One transfer of several tensors packed into byte buffers; wait() unpacks what arrived.
class PackedTransfer : public PendingTransfer {
 public:
  // The packed buffers stay alive until the transfer is done.
  PackedTransfer(std::unique_ptr<PendingTransfer> transfer, at::Tensor packed_send,
                 at::Tensor packed_recv, std::vector<at::Tensor> recvs)
      : transfer_(std::move(transfer)),
        packed_send_(std::move(packed_send)),
        packed_recv_(std::move(packed_recv)),
        recvs_(std::move(recvs)) {}
  ~PackedTransfer() override {
    if (!done_) wait_in_destructor();
  }
  void wait() override {
    if (done_) return;
    done_ = true;
    transfer_->wait();
    int64_t at = 0;
    for (at::Tensor& r : recvs_) {
      const int64_t bytes = r.numel() * int64_t(r.element_size());
      as_bytes(r).copy_(packed_recv_.narrow(0, at, bytes));
      at += bytes;
    }
  }
  // A contiguous tensor's storage as a 1-D byte view.
  static at::Tensor as_bytes(const at::Tensor& t) { return t.reshape({-1}).view(at::kByte); }

 private:
  std::unique_ptr<PendingTransfer> transfer_;
  at::Tensor packed_send_, packed_recv_;
  std::vector<at::Tensor> recvs_;
  bool done_ = false;
};
}  // namespace

void PendingTransfer::wait_in_destructor() noexcept {
  if (std::uncaught_exceptions() > 0) return;
  try {
    wait();
  } catch (...) {
  }
}

std::unique_ptr<PendingTransfer> Communicator::start_send_recv(const at::Tensor& send, int dst,
                                                               at::Tensor& recv, int src,
                                                               int /*tag*/) {
  send_recv(send, dst, recv, src);
  return std::make_unique<CompletedTransfer>();
}

std::unique_ptr<PendingTransfer> Communicator::start_send_recv_many(at::TensorList sends, int dst,
                                                                    at::TensorList recvs, int src,
                                                                    at::Device device, int tag) {
  // One message each way (the two sides may hold different numbers of tensors): the sends
  // packed into one byte buffer, the receives unpacked from one when the transfer is done.
  const auto options = at::TensorOptions().device(device).dtype(at::kByte);
  std::vector<at::Tensor> send_bytes;
  for (const at::Tensor& t : sends) {
    RA_CHECK(t.is_contiguous(), "send_recv_many: send tensors must be contiguous");
    send_bytes.push_back(PackedTransfer::as_bytes(t));
  }
  at::Tensor packed_send = send_bytes.empty() ? at::empty({0}, options) : at::cat(send_bytes);
  int64_t recv_bytes = 0;
  std::vector<at::Tensor> recv_list;
  for (const at::Tensor& t : recvs) {
    RA_CHECK(t.is_contiguous(), "send_recv_many: recv tensors must be contiguous");
    recv_bytes += t.numel() * int64_t(t.element_size());
    recv_list.push_back(t);
  }
  at::Tensor packed_recv = at::empty({recv_bytes}, options);
  auto transfer = start_send_recv(packed_send, dst, packed_recv, src, tag);
  return std::make_unique<PackedTransfer>(std::move(transfer), packed_send, packed_recv,
                                          std::move(recv_list));
}

std::unique_ptr<PendingTransfer> Communicator::start_all_reduce_sum(at::Tensor& tensor) {
  all_reduce_sum(tensor);
  return std::make_unique<CompletedTransfer>();
}

std::unique_ptr<PendingTransfer> Communicator::start_all_gather(const at::Tensor& input,
                                                                at::Tensor& output) {
  all_gather(input, output);
  return std::make_unique<CompletedTransfer>();
}

std::unique_ptr<PendingTransfer> Communicator::start_reduce_scatter_sum(const at::Tensor& input,
                                                                        at::Tensor& output) {
  reduce_scatter_sum(input, output);
  return std::make_unique<CompletedTransfer>();
}

std::shared_ptr<Communicator> Communicator::duplicate(int /*max_ctas*/) { return split(0, rank()); }

}  // namespace ra
