// The default (synchronous) start_send_recv and start_all_reduce_sum of backends without a native
// async path.
#include "comm/communicator.h"

namespace ra {
namespace {

class CompletedTransfer : public PendingTransfer {
 public:
  void wait() override {}
};

}  // namespace

std::unique_ptr<PendingTransfer> Communicator::start_send_recv(const at::Tensor& send, int dst,
                                                               at::Tensor& recv, int src,
                                                               int /*tag*/) {
  send_recv(send, dst, recv, src);
  return std::make_unique<CompletedTransfer>();
}

std::unique_ptr<PendingTransfer> Communicator::start_all_reduce_sum(at::Tensor& tensor) {
  all_reduce_sum(tensor);
  return std::make_unique<CompletedTransfer>();
}

}  // namespace ra
