// CheckpointOffloader (see checkpoint_offload.h). Stream ordering on CUDA, per slot:
//   store:    compute --event--> side: D2H into pinned host; tensor.record_stream(side), so the
//             device buffer is not reused before the copy ends; event `copied_out` on side.
//   prefetch: compute --event--> side (the new device buffer is free to write): H2D; event
//             `copied_in` on side. D2H before H2D holds by side-stream order.
//   take:     compute waits on `copied_in` (or, not prefetched, on `copied_out` and copies
//             itself). Pinned buffers are safe to drop any time: the caching host allocator
//             records an event for every non_blocking copy that uses them.
#include "runtime/checkpoint_offload.h"

#include <ATen/ATen.h>

#include <utility>

#include "runtime/error.h"
#include "runtime/torch_compat.h"

#if RA_TORCH_HAS_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ra {

struct CheckpointOffloader::Entry {
  explicit Entry(at::Device d) : device(d) {}
  at::Device device;     // where the tensor came from and goes back to
  at::Tensor host;       // the stored copy (pinned on CUDA), until taken
  at::Tensor on_device;  // the prefetched copy, from prefetch until taken
  bool taken = false;
#if RA_TORCH_HAS_CUDA
  at::cuda::CUDAEvent copied_out;  // on the side stream: `host` is complete
  at::cuda::CUDAEvent copied_in;   // on the side stream: `on_device` is complete
#endif
};

struct CheckpointOffloader::SideStream {
#if RA_TORCH_HAS_CUDA
  explicit SideStream(c10::DeviceIndex device)
      : stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device)) {}
  c10::cuda::CUDAStream stream;
#endif
};

CheckpointOffloader::CheckpointOffloader() = default;

CheckpointOffloader::~CheckpointOffloader() {
#if RA_TORCH_HAS_CUDA
  // A prefetched copy that backward never took (a partial backward): its buffer belongs to
  // the compute stream, which never waited for the side-stream write; wait before freeing it.
  for (auto& entry : entries_) {
    if (entry->on_device.defined() && entry->device.is_cuda()) entry->copied_in.synchronize();
  }
#endif
}

int64_t CheckpointOffloader::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return int64_t(entries_.size());
}

int64_t CheckpointOffloader::store(const at::Tensor& tensor) {
  std::lock_guard<std::mutex> lock(mutex_);
  const at::Tensor source = tensor.contiguous();
  auto entry = std::make_unique<Entry>(source.device());
  if (source.is_cuda()) {
#if RA_TORCH_HAS_CUDA
    const c10::DeviceIndex index = source.device().index();
    if (!side_) side_ = std::make_unique<SideStream>(index);
    RA_CHECK(side_->stream.device_index() == index,
             "CheckpointOffloader: all stored tensors must be on one device, got cuda:",
             int(side_->stream.device_index()), " and cuda:", int(index));
    const auto compute = c10::cuda::getCurrentCUDAStream(index);
    at::cuda::CUDAEvent produced;  // `source` is complete once compute reaches this point
    produced.record(compute);
    produced.block(side_->stream);
    entry->host = at::empty(
        source.sizes(),
        at::TensorOptions().dtype(source.scalar_type()).device(at::kCPU).pinned_memory(true));
    {
      c10::cuda::CUDAStreamGuard on_side(side_->stream);
      entry->host.copy_(source, /*non_blocking=*/true);
    }
    source.record_stream(side_->stream);
    entry->copied_out.record(side_->stream);
#else
    RA_THROW("CheckpointOffloader: a CUDA tensor in a build without CUDA LibTorch");
#endif
  } else {
    entry->host = source.clone();
  }
  entries_.push_back(std::move(entry));
  return int64_t(entries_.size()) - 1;
}

void CheckpointOffloader::prefetch(int64_t slot) {
  std::lock_guard<std::mutex> lock(mutex_);
  prefetch_locked(slot);
}

void CheckpointOffloader::prefetch_locked(int64_t slot) {
  if (slot < 0 || slot >= int64_t(entries_.size())) return;
  Entry& e = *entries_[size_t(slot)];
  if (e.taken || e.on_device.defined()) return;
  if (e.device.is_cuda()) {
#if RA_TORCH_HAS_CUDA
    const auto compute = c10::cuda::getCurrentCUDAStream(e.device.index());
    e.on_device =
        at::empty(e.host.sizes(), at::TensorOptions().dtype(e.host.scalar_type()).device(e.device));
    // The new buffer came from the compute stream's pool: its previous users there must be
    // done before the side stream writes into it.
    at::cuda::CUDAEvent free_to_write;
    free_to_write.record(compute);
    free_to_write.block(side_->stream);
    {
      c10::cuda::CUDAStreamGuard on_side(side_->stream);
      e.on_device.copy_(e.host, /*non_blocking=*/true);
    }
    e.copied_in.record(side_->stream);
#endif
  } else {
    e.on_device = e.host.clone();
  }
}

at::Tensor CheckpointOffloader::take(int64_t slot) {
  std::lock_guard<std::mutex> lock(mutex_);
  RA_CHECK(slot >= 0 && slot < int64_t(entries_.size()), "CheckpointOffloader::take: slot ", slot,
           " of ", entries_.size());
  Entry& e = *entries_[size_t(slot)];
  RA_CHECK(!e.taken, "CheckpointOffloader::take: slot ", slot,
           " was already taken (a second backward through offloaded checkpoints)");
  at::Tensor result;
  if (e.device.is_cuda()) {
#if RA_TORCH_HAS_CUDA
    const auto compute = c10::cuda::getCurrentCUDAStream(e.device.index());
    if (e.on_device.defined()) {
      e.copied_in.block(compute);
      result = std::move(e.on_device);
    } else {  // not prefetched (the first slot backward takes): copy on the compute stream
      e.copied_out.block(compute);
      result = at::empty(e.host.sizes(),
                         at::TensorOptions().dtype(e.host.scalar_type()).device(e.device));
      result.copy_(e.host, /*non_blocking=*/true);
    }
#endif
  } else {
    result = e.on_device.defined() ? std::move(e.on_device) : e.host.clone();
  }
  e.on_device = at::Tensor();
  e.host = at::Tensor();
  e.taken = true;
  prefetch_locked(slot - 1);
  return result;
}

}  // namespace ra
