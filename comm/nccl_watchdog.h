// NcclWatchdog: the deadline on every NCCL operation without making the host wait for it.
// Operations are tracked from the moment they start on the GPU (an event recorded on the comm
// stream just before the NCCL kernels) until they finish; host calls that may block inside
// NCCL (communicator init, split, finalize, a group launch that connects to a new peer) are
// tracked from their start. A background thread polls the events and the communicator's async
// error; when an operation outlives its deadline or NCCL reports an error, it prints the rank,
// host, GPU, operation and context and ends the process with exit code 1 (a hung NCCL kernel
// cannot be unwound by an exception; the launcher then ends the other ranks, whose own
// watchdogs fire too if they are waiting on this one).
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

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
  ~NcclWatchdog();  // stops the thread; untracked operations are simply forgotten
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

  // The message an expiry prints (public for the tests and for the host-side waits).
  std::string describe(const std::string& operation, const std::string& why,
                       const std::string& context) const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Tracked {
    cudaEvent_t started = nullptr, finished = nullptr;
    bool running = false;  // `started` has fired; the clock runs from `since`
    Clock::time_point since;
    double timeout_seconds = 0;
    std::string operation, context;
  };
  struct HostCall {
    bool active = false;
    Clock::time_point since;
    double timeout_seconds = 0;
    std::string operation, context;
  };

  void run();
  void poll();  // one pass over the host call, the tracked operations and the async error
  void expire(const std::string& operation, const std::string& why, const std::string& context);
  cudaEvent_t new_event();
  void recycle(cudaEvent_t event);

  Identity identity_;
  Expire expire_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Tracked> tracked_;  // in issue order on one stream
  std::vector<cudaEvent_t> free_events_;
  HostCall host_call_;
  ncclComm_t comm_ = nullptr;
  bool stop_ = false;
  std::atomic<bool> expired_{false};
  std::thread thread_;
};

}  // namespace ra
