// LocalCopyCommunicator: a Communicator that moves the same bytes as the real one but only as
// local device copies (send -> recv on this GPU, all-gather = replicate, reduce-scatter = take
// this rank's slice). Timing a run with it next to the real one shows how much communication
// is exposed (not hidden behind compute). The results are numerically meaningless.
#pragma once

#include <ATen/ATen.h>

#include <memory>

#include "comm/communicator.h"

namespace ra::bench {

class LocalCopyCommunicator : public Communicator {
 public:
  explicit LocalCopyCommunicator(std::shared_ptr<Communicator> real) : real_(std::move(real)) {}

  int rank() const override { return real_->rank(); }
  int size() const override { return real_->size(); }
  std::string backend() const override { return "local-copy"; }

  void send_recv(const at::Tensor& send, int, at::Tensor& recv, int) override {
    recv.view(-1)
        .narrow(0, 0, std::min(send.numel(), recv.numel()))
        .copy_(send.reshape(-1).narrow(0, 0, std::min(send.numel(), recv.numel())));
  }
  void all_reduce_sum(at::Tensor&) override {}
  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    output.view({size(), -1}).copy_(input.reshape({1, -1}).expand({size(), input.numel()}));
  }
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    output.view(-1).copy_(input.reshape({size(), -1})[rank()]);
  }
  void broadcast(at::Tensor&, int) override {}
  void barrier() override { real_->barrier(); }
  std::shared_ptr<Communicator> split(int color, int key) override {
    return std::make_shared<LocalCopyCommunicator>(real_->split(color, key));
  }
  std::shared_ptr<Communicator> duplicate(int max_ctas) override {
    return std::make_shared<LocalCopyCommunicator>(real_->duplicate(max_ctas));
  }

 private:
  std::shared_ptr<Communicator> real_;
};

}  // namespace ra::bench
