// NcclWatchdog: the deadline on every NCCL operation without making the host wait for it.
// Operations are tracked from the moment they start on the GPU (an event recorded on the comm
// stream just before the NCCL kernels) until they finish; host calls that may block inside
// NCCL (communicator init, split, finalize, a group launch that connects to a new peer) are
// tracked from their start. The polling thread is a DeadlineWatch; this class adds the CUDA
// events (pooled), ncclCommGetAsyncError and the message. On expiry it prints the rank, host,
// GPU, operation and context, aborts the communicator (given 3 s on a thread of its own) and
// ends the process with exit code 1 (a hung NCCL kernel cannot be unwound by an exception; the
// launcher then ends the other ranks, whose own watchdogs fire too if they wait on this one).
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm/deadline_watch.h"

namespace ra {

class NcclWatchdog {
 public:
  // Who this is, for the message: "rank 1 of 4 on host h (GPU 1)".
  struct Identity {
    int rank = 0, size = 1, device = 0;
  };
  // What happens on expiry; the default prints `message` to stderr and calls std::_Exit(1).
  using Expire = std::function<void(const std::string& message)>;

  explicit NcclWatchdog(Identity identity, Expire expire = {});
  ~NcclWatchdog();
  NcclWatchdog(const NcclWatchdog&) = delete;
  NcclWatchdog& operator=(const NcclWatchdog&) = delete;

  // Once the communicator exists, its async error state is polled too (nullptr: stop).
  void set_comm(ncclComm_t comm);

  // A host call that may block inside NCCL: tracked from now until end_host_call().
  void begin_host_call(const char* operation, const std::string& context, double timeout_seconds);
  void end_host_call();

  // Records a "started" event on `stream` now: call before enqueueing the operation.
  cudaEvent_t mark_start(cudaStream_t stream);
  // Records a "finished" event on `stream` and tracks [started, finished] with the deadline.
  void track(cudaEvent_t started, cudaStream_t stream, const char* operation,
             const std::string& context, double timeout_seconds);

  // The message an expiry prints: rank, host, GPU, operation, why, context and a hint.
  static std::string describe(const Identity& identity, const std::string& operation,
                              const std::string& why, const std::string& context);

 private:
  cudaEvent_t new_event();
  void recycle(cudaEvent_t event);

  Identity identity_;
  std::mutex mutex_;  // guards free_events_ and comm_
  std::vector<cudaEvent_t> free_events_;
  ncclComm_t comm_ = nullptr;
  std::unique_ptr<DeadlineWatch> watch_;  // last: its thread stops before the rest goes
};

}  // namespace ra
