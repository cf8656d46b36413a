// NcclWatchdog (see nccl_watchdog.h).
#include "comm/nccl_watchdog.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "runtime/cuda_check.h"
#include "runtime/error.h"

namespace ra {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(1);

std::string host_name() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

void print_and_exit(const std::string& message) {
  std::fprintf(stderr, "ringattn: error: %s\n", message.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  std::_Exit(1);
}

}  // namespace

NcclWatchdog::NcclWatchdog(Identity identity, Expire expire)
    : identity_(identity), expire_(expire ? std::move(expire) : Expire(print_and_exit)) {
  thread_ = std::thread([this] { run(); });
}

NcclWatchdog::~NcclWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (auto& t : tracked_) {
    cudaEventDestroy(t.started);
    cudaEventDestroy(t.finished);
  }
  for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
}

void NcclWatchdog::set_comm(ncclComm_t comm) {
  std::lock_guard<std::mutex> lock(mutex_);
  comm_ = comm;
}

void NcclWatchdog::begin_host_call(const char* operation, const std::string& context,
                                   double timeout_seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  host_call_ = {true, Clock::now(), timeout_seconds, operation, context};
}

void NcclWatchdog::end_host_call() {
  std::lock_guard<std::mutex> lock(mutex_);
  host_call_.active = false;
}

cudaEvent_t NcclWatchdog::new_event() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
  }
  cudaEvent_t e = nullptr;
  RA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

void NcclWatchdog::recycle(cudaEvent_t event) { free_events_.push_back(event); }  // mutex held

cudaEvent_t NcclWatchdog::mark_start(cudaStream_t stream) {
  cudaEvent_t started = new_event();
  RA_CUDA_CHECK(cudaEventRecord(started, stream));
  return started;
}

void NcclWatchdog::track(cudaEvent_t started, cudaStream_t stream, const char* operation,
                         const std::string& context, double timeout_seconds) {
  cudaEvent_t finished = new_event();
  RA_CUDA_CHECK(cudaEventRecord(finished, stream));
  Tracked t;
  t.started = started;
  t.finished = finished;
  t.timeout_seconds = timeout_seconds;
  t.operation = operation;
  t.context = context;
  std::lock_guard<std::mutex> lock(mutex_);
  tracked_.push_back(std::move(t));
}

std::string NcclWatchdog::describe(const std::string& operation, const std::string& why,
                                   const std::string& context) const {
  return detail::concat("rank ", identity_.rank, " of ", identity_.size, " on host ", host_name(),
                        " (GPU ", identity_.device, "): NCCL ", operation, " ", why,
                        context.empty() ? "" : " (" + context + ")",
                        "\n  hint: a peer rank is stuck or dead; look for its own error above. "
                        "Raise the deadline with --timeout (ring_train) if the step is just slow");
}

void NcclWatchdog::expire(const std::string& operation, const std::string& why,
                          const std::string& context) {
  if (expired_.exchange(true)) return;
  expire_(describe(operation, why, context));
}

void NcclWatchdog::poll() {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto now = Clock::now();
  auto seconds_since = [&](Clock::time_point t) {
    return std::chrono::duration<double>(now - t).count();
  };
  if (host_call_.active && seconds_since(host_call_.since) > host_call_.timeout_seconds) {
    const HostCall call = host_call_;
    lock.unlock();
    expire(call.operation, detail::concat("did not return within ", call.timeout_seconds, " s"),
           call.context);
    return;
  }
  // One comm stream: operations finish in issue order, so only the oldest can be overdue.
  while (!tracked_.empty()) {
    Tracked& t = tracked_.front();
    if (!t.running) {
      const cudaError_t started = cudaEventQuery(t.started);
      if (started == cudaErrorNotReady) break;  // still queued behind compute: no clock yet
      if (started != cudaSuccess) {
        const Tracked copy = t;
        lock.unlock();
        expire(copy.operation, detail::concat("failed: ", cudaGetErrorString(started)),
               copy.context);
        return;
      }
      t.running = true;
      t.since = now;
    }
    const cudaError_t finished = cudaEventQuery(t.finished);
    if (finished == cudaSuccess) {
      recycle(t.started);
      recycle(t.finished);
      tracked_.pop_front();
      continue;
    }
    if (finished != cudaErrorNotReady || seconds_since(t.since) > t.timeout_seconds) {
      const Tracked copy = t;
      lock.unlock();
      expire(copy.operation,
             finished != cudaErrorNotReady
                 ? detail::concat("failed: ", cudaGetErrorString(finished))
                 : detail::concat("did not complete within ", copy.timeout_seconds, " s"),
             copy.context);
      return;
    }
    break;
  }
  if (comm_ != nullptr && (!tracked_.empty() || host_call_.active)) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t query = ncclCommGetAsyncError(comm_, &state);
    if (query == ncclSuccess && state != ncclSuccess && state != ncclInProgress) {
      const std::string operation =
          !tracked_.empty() ? tracked_.front().operation : host_call_.operation;
      const std::string context = !tracked_.empty() ? tracked_.front().context : host_call_.context;
      lock.unlock();
      expire(operation, detail::concat("failed: ", ncclGetErrorString(state)), context);
    }
  }
}

void NcclWatchdog::run() {
  cudaSetDevice(identity_.device);  // events belong to this device's context
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, kPollInterval);
    if (stop_ || expired_) continue;
    lock.unlock();
    poll();
    lock.lock();
  }
}

}  // namespace ra
