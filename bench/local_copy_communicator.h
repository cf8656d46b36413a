// LocalCopyCommunicator: a Communicator for exposure measurements. kCopy moves the same bytes
// as the real one but only as local device copies (send -> recv on this GPU, all-gather =
// replicate, reduce-scatter = take this rank's slice). kSkip copies the same way wherever the
// received values feed attention kernels (send_recv: the ring's K/V; all-gather) and drops the
// rest: the multi-tensor exchange (the allgather strategy's dK/dV pieces, which only feed
// memory-bound sums) and reduce-scatters. So with --strategy allgather it leaves the step almost
// without transfers: one local replicate of the K/V. Values matter: on a power-capped card the
// attention kernels' speed depends on them (on never-written K/V, fresh memory, the 4 x H100 step
// ran 10% faster than its own kernels alone on random data, session 16). Timing a run with
// either mode next to the real one shows what communication costs. Results are meaningless.
// barrier, split and duplicate use the real communicator (the ranks still meet).
#pragma once

#include <ATen/ATen.h>

#include <memory>

#include "comm/communicator.h"

namespace ra::bench {

class LocalCopyCommunicator : public Communicator {
 public:
  enum class Mode { kCopy, kSkip };

  explicit LocalCopyCommunicator(std::shared_ptr<Communicator> real, Mode mode = Mode::kCopy)
      : real_(std::move(real)), mode_(mode) {}

  int rank() const override { return real_->rank(); }
  int size() const override { return real_->size(); }
  std::string backend() const override {
    return mode_ == Mode::kCopy ? "local-copy" : "no-transfers";
  }

  void send_recv(const at::Tensor& send, int, at::Tensor& recv, int) override {
    recv.view(-1)
        .narrow(0, 0, std::min(send.numel(), recv.numel()))
        .copy_(send.reshape(-1).narrow(0, 0, std::min(send.numel(), recv.numel())));
  }
  // kSkip: no packing either (the base class packs the tensors into one message).
  std::unique_ptr<PendingTransfer> start_send_recv_many(at::TensorList sends, int dst,
                                                        at::TensorList recvs, int src,
                                                        at::Device device, int tag) override {
    if (mode_ == Mode::kSkip) return std::make_unique<Nothing>();
    return Communicator::start_send_recv_many(sends, dst, recvs, src, device, tag);
  }
  void all_reduce_sum(at::Tensor&) override {}
  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    output.view({size(), -1}).copy_(input.reshape({1, -1}).expand({size(), input.numel()}));
  }
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    if (mode_ == Mode::kSkip) return;
    output.view(-1).copy_(input.reshape({size(), -1})[rank()]);
  }
  void broadcast(at::Tensor&, int) override {}
  void barrier() override { real_->barrier(); }
  std::shared_ptr<Communicator> split(int color, int key) override {
    return std::make_shared<LocalCopyCommunicator>(real_->split(color, key), mode_);
  }
  std::shared_ptr<Communicator> duplicate(int max_ctas) override {
    return std::make_shared<LocalCopyCommunicator>(real_->duplicate(max_ctas), mode_);
  }

 private:
  struct Nothing : PendingTransfer {
    void wait() override {}
  };
  std::shared_ptr<Communicator> real_;
  Mode mode_;
};

}  // namespace ra::bench
