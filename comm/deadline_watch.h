// DeadlineWatch: deadlines on work the host does not wait for. A background thread polls the
// tracked operations (each described by two queries: has it started, has it finished) and the
// host calls that may block, and calls `expire` once when one outlives its deadline, a query
// reports a failure, or the async-error check returns one. An operation's clock starts when it
// starts (work queued behind a long stream of compute is not late), a host call's when it
// begins. No CUDA or NCCL here: NcclWatchdog plugs in CUDA events and ncclCommGetAsyncError,
// and the unit tests plug in flags.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace ra {

class DeadlineWatch {
 public:
  enum class State { kPending, kDone, kFailed };
  // Polled on the watch thread; on kFailed, `error` says why.
  using Query = std::function<State(std::string& error)>;
  // Called once, on the watch thread: the operation, why ("did not complete within 5 s",
  // "failed: ..."), the context it was issued in.
  using Expire = std::function<void(const std::string& operation, const std::string& why,
                                    const std::string& context)>;
  // Non-empty: the communicator failed (checked while anything is tracked).
  using AsyncError = std::function<std::string()>;

  // on_thread_start runs first on the watch thread (e.g. cudaSetDevice).
  explicit DeadlineWatch(Expire expire, std::function<void()> on_thread_start = {},
                         std::chrono::microseconds interval = std::chrono::milliseconds(1));
  ~DeadlineWatch();  // stops the thread; tracked operations are released unpolled
  DeadlineWatch(const DeadlineWatch&) = delete;
  DeadlineWatch& operator=(const DeadlineWatch&) = delete;

  void set_async_error(AsyncError check);

  // A host call that may block: tracked from now until end_host_call().
  void begin_host_call(const std::string& operation, const std::string& context,
                       double timeout_seconds);
  void end_host_call();

  // Operations finish in the order they are tracked (one stream), so only the oldest unfinished
  // one is timed. `release` runs once the operation is done (or at destruction).
  void track(Query started, Query finished, std::function<void()> release,
             const std::string& operation, const std::string& context, double timeout_seconds);

  size_t in_flight();
  bool expired() const { return expired_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Tracked {
    Query started, finished;
    std::function<void()> release;
    bool running = false;  // `started` reported done; the clock runs from `since`
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

  void run(const std::function<void()>& on_thread_start);
  void poll();  // one pass; calls expire() without the mutex held
  void expire(const std::string& operation, const std::string& why, const std::string& context);

  Expire expire_;
  std::chrono::microseconds interval_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Tracked> tracked_;
  HostCall host_call_;
  AsyncError async_error_;
  bool stop_ = false;
  std::atomic<bool> expired_{false};
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace ra
