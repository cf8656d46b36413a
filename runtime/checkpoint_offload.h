// CheckpointOffloader: keeps the saved inputs of checkpointed blocks in host memory between
// forward and backward, so the GPU holds only the one or two being recomputed. One instance per
// forward pass; inputs are numbered in the order forward stores them, and backward takes them
// in reverse: taking input i starts bringing input i-1 back while block i recomputes.
// On CUDA: pinned host buffers, copies on a side stream ordered with events (the compute stream
// never waits for a copy-out, and waits for a copy-in only if the prefetch is still running).
// On CPU the "host buffer" is another CPU tensor: the same bookkeeping, testable without a GPU.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace ra {

class CheckpointOffloader {
 public:
  CheckpointOffloader();
  ~CheckpointOffloader();
  CheckpointOffloader(const CheckpointOffloader&) = delete;
  CheckpointOffloader& operator=(const CheckpointOffloader&) = delete;

  // Starts copying `tensor` to host memory and returns its slot. The caller may drop `tensor`
  // right away: its device memory is not reused before the copy has finished.
  int64_t store(const at::Tensor& tensor);

  // The stored tensor back on its device, ready for use on the current stream; then starts the
  // prefetch of slot - 1 (what backward needs next). Each slot can be taken once.
  at::Tensor take(int64_t slot);

  // Starts bringing `slot` back to its device (no-op if out of range, taken or under way).
  void prefetch(int64_t slot);

  int64_t size() const;

 private:
  struct Entry;
  struct SideStream;
  void prefetch_locked(int64_t slot);

  mutable std::mutex mutex_;  // backward may run on the autograd engine's device thread
  std::vector<std::unique_ptr<Entry>> entries_;
  std::unique_ptr<SideStream> side_;  // CUDA only, created with the first CUDA tensor
};

}  // namespace ra
