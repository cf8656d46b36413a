// DeadlineWatch (see deadline_watch.h).
#include "comm/deadline_watch.h"

#include "runtime/error.h"

namespace ra {

DeadlineWatch::DeadlineWatch(Expire expire, std::function<void()> on_thread_start,
                             std::chrono::microseconds interval)
    : expire_(std::move(expire)), interval_(interval) {
  thread_ = std::thread([this, start = std::move(on_thread_start)] { run(start); });
}

DeadlineWatch::~DeadlineWatch() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (auto& t : tracked_) {
    if (t.release) t.release();
  }
}

void DeadlineWatch::set_async_error(AsyncError check) {
  std::lock_guard<std::mutex> lock(mutex_);
  async_error_ = std::move(check);
}

void DeadlineWatch::begin_host_call(const std::string& operation, const std::string& context,
                                    double timeout_seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  host_call_ = {true, Clock::now(), timeout_seconds, operation, context};
}

void DeadlineWatch::end_host_call() {
  std::lock_guard<std::mutex> lock(mutex_);
  host_call_.active = false;
}

void DeadlineWatch::track(Query started, Query finished, std::function<void()> release,
                          const std::string& operation, const std::string& context,
                          double timeout_seconds) {
  Tracked t;
  t.started = std::move(started);
  t.finished = std::move(finished);
  t.release = std::move(release);
  t.timeout_seconds = timeout_seconds;
  t.operation = operation;
  t.context = context;
  std::lock_guard<std::mutex> lock(mutex_);
  tracked_.push_back(std::move(t));
}

size_t DeadlineWatch::in_flight() {
  std::lock_guard<std::mutex> lock(mutex_);
  return tracked_.size();
}

void DeadlineWatch::expire(const std::string& operation, const std::string& why,
                           const std::string& context) {
  if (expired_.exchange(true)) return;
  expire_(operation, why, context);
}

void DeadlineWatch::poll() {
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
  std::string error;
  while (!tracked_.empty()) {
    Tracked& t = tracked_.front();
    if (!t.running) {
      const State started = t.started(error);
      if (started == State::kPending) break;  // queued behind other work: no clock yet
      if (started == State::kFailed) {
        const std::string operation = t.operation, context = t.context;
        lock.unlock();
        expire(operation, "failed: " + error, context);
        return;
      }
      t.running = true;
      t.since = now;
    }
    const State finished = t.finished(error);
    if (finished == State::kDone) {
      if (t.release) t.release();
      tracked_.pop_front();
      continue;
    }
    if (finished == State::kFailed || seconds_since(t.since) > t.timeout_seconds) {
      const std::string operation = t.operation, context = t.context;
      const std::string why =
          finished == State::kFailed
              ? "failed: " + error
              : detail::concat("did not complete within ", t.timeout_seconds, " s");
      lock.unlock();
      expire(operation, why, context);
      return;
    }
    break;
  }
  if (async_error_ && (!tracked_.empty() || host_call_.active)) {
    const std::string failure = async_error_();
    if (!failure.empty()) {
      const std::string operation =
          !tracked_.empty() ? tracked_.front().operation : host_call_.operation;
      const std::string context = !tracked_.empty() ? tracked_.front().context : host_call_.context;
      lock.unlock();
      expire(operation, "failed: " + failure, context);
    }
  }
}

void DeadlineWatch::run(const std::function<void()>& on_thread_start) {
  if (on_thread_start) on_thread_start();
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, interval_);
    if (stop_ || expired_) continue;
    lock.unlock();
    poll();
    lock.lock();
  }
}

}  // namespace ra
