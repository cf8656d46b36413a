// NcclWatchdog (see nccl_watchdog.h).
#include "comm/nccl_watchdog.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include "runtime/cuda_check.h"
#include "runtime/error.h"

namespace ra {
namespace {

std::string host_name() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

void print(const std::string& message) {
  std::fprintf(stderr, "ringattn: error: %s\n", message.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
}

// A CUDA event as a DeadlineWatch query.
DeadlineWatch::Query event_query(cudaEvent_t event) {
  return [event](std::string& error) {
    const cudaError_t status = cudaEventQuery(event);
    if (status == cudaSuccess) return DeadlineWatch::State::kDone;
    if (status == cudaErrorNotReady) return DeadlineWatch::State::kPending;
    error = cudaGetErrorString(status);
    return DeadlineWatch::State::kFailed;
  };
}

}  // namespace

std::string NcclWatchdog::describe(const Identity& identity, const std::string& operation,
                                   const std::string& why, const std::string& context) {
  return detail::concat("rank ", identity.rank, " of ", identity.size, " on host ", host_name(),
                        " (GPU ", identity.device, "): NCCL ", operation, " ", why,
                        context.empty() ? "" : " (" + context + ")",
                        "\n  hint: a peer rank is stuck or dead; look for its own error above. "
                        "Raise the deadline with --timeout (ring_train) if the step is just slow");
}

NcclWatchdog::NcclWatchdog(Identity identity, Expire expire) : identity_(identity) {
  if (!expire) {
    // Print first (the message is what the user needs), then abort the communicator, which
    // releases kernels stuck on a dead peer, and exit. The abort gets a few seconds on a thread
    // of its own: a watchdog must not hang in its own exit path.
    expire = [this](const std::string& message) {
      print(message);
      ncclComm_t comm = nullptr;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        std::swap(comm, comm_);  // nobody polls it any more
      }
      if (comm != nullptr) {
        auto aborted = std::make_shared<std::atomic<bool>>(false);
        std::thread([comm, aborted] {
          ncclCommAbort(comm);
          *aborted = true;
        }).detach();
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
        while (!*aborted && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
      std::_Exit(1);
    };
  }
  watch_ = std::make_unique<DeadlineWatch>(
      [identity, expire](const std::string& operation, const std::string& why,
                         const std::string& context) {
        expire(describe(identity, operation, why, context));
      },
      [device = identity.device] { cudaSetDevice(device); });  // events live on this device
  watch_->set_async_error([this]() -> std::string {
    std::lock_guard<std::mutex> lock(mutex_);
    if (comm_ == nullptr) return "";
    ncclResult_t state = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) return "";
    if (state == ncclSuccess || state == ncclInProgress) return "";
    return ncclGetErrorString(state);
  });
}

NcclWatchdog::~NcclWatchdog() {
  watch_.reset();  // joins the thread and releases (recycles) what it still tracked
  for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
}

void NcclWatchdog::set_comm(ncclComm_t comm) {
  std::lock_guard<std::mutex> lock(mutex_);
  comm_ = comm;
}

void NcclWatchdog::begin_host_call(const char* operation, const std::string& context,
                                   double timeout_seconds) {
  watch_->begin_host_call(operation, context, timeout_seconds);
}

void NcclWatchdog::end_host_call() { watch_->end_host_call(); }

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

void NcclWatchdog::recycle(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(mutex_);
  free_events_.push_back(event);
}

cudaEvent_t NcclWatchdog::mark_start(cudaStream_t stream) {
  cudaEvent_t started = new_event();
  RA_CUDA_CHECK(cudaEventRecord(started, stream));
  return started;
}

void NcclWatchdog::track(cudaEvent_t started, cudaStream_t stream, const char* operation,
                         const std::string& context, double timeout_seconds) {
  cudaEvent_t finished = new_event();
  RA_CUDA_CHECK(cudaEventRecord(finished, stream));
  watch_->track(
      event_query(started), event_query(finished),
      [this, started, finished] {
        recycle(started);
        recycle(finished);
      },
      operation, context, timeout_seconds);
}

}  // namespace ra
