// DeadlineWatch, the polling core of the NCCL watchdog: an operation is timed from its start,
// not from when it was queued; one that outlives its deadline, fails, or whose communicator
// reports an async error expires exactly once with the operation and context; finished ones
// are released; a host call that blocks too long expires too.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/deadline_watch.h"

namespace ra {
namespace {

using namespace std::chrono_literals;
using State = DeadlineWatch::State;

// A flag-driven stand-in for a CUDA event.
struct FakeEvent {
  std::atomic<State> state{State::kPending};
  DeadlineWatch::Query query() {
    return [this](std::string& error) {
      const State s = state.load();
      if (s == State::kFailed) error = "device exploded";
      return s;
    };
  }
};

struct Expiry {
  std::atomic<int> count{0};
  std::string operation, why, context;  // written once, before count is raised
  DeadlineWatch::Expire callback() {
    return [this](const std::string& op, const std::string& why_, const std::string& ctx) {
      operation = op, why = why_, context = ctx;
      ++count;
    };
  }
};

// Polls `done` for up to two seconds (the watch polls every 100 us here).
template <typename Done>
bool eventually(Done done) {
  for (auto until = std::chrono::steady_clock::now() + 2s; std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(1ms)) {
    if (done()) return true;
  }
  return done();
}

TEST(DeadlineWatch, QueuedOperationIsNotTimedFinishedOneIsReleased) {
  Expiry expiry;
  FakeEvent started, finished;
  std::atomic<int> released{0};
  DeadlineWatch watch(expiry.callback(), {}, 100us);
  watch.track(
      started.query(), finished.query(), [&] { ++released; }, "send_recv", "step 3", 0.02);
  std::this_thread::sleep_for(100ms);  // 5x the deadline, but it never started
  EXPECT_EQ(expiry.count, 0);
  started.state = State::kDone;
  finished.state = State::kDone;
  EXPECT_TRUE(eventually([&] { return released == 1; }));
  EXPECT_EQ(watch.in_flight(), 0u);
  EXPECT_EQ(expiry.count, 0);
}

TEST(DeadlineWatch, StartedOperationThatNeverFinishesExpiresOnce) {
  Expiry expiry;
  FakeEvent started, finished, second_started, second_finished;
  DeadlineWatch watch(expiry.callback(), {}, 100us);
  const auto begin = std::chrono::steady_clock::now();
  started.state = State::kDone;
  watch.track(started.query(), finished.query(), {}, "all_reduce", "step 7", 0.05);
  watch.track(second_started.query(), second_finished.query(), {}, "broadcast", "step 7", 0.05);
  ASSERT_TRUE(eventually([&] { return expiry.count > 0; }));
  EXPECT_GE(std::chrono::steady_clock::now() - begin, 50ms);  // not before the deadline
  EXPECT_EQ(expiry.operation, "all_reduce");
  EXPECT_EQ(expiry.why, "did not complete within 0.05 s");
  EXPECT_EQ(expiry.context, "step 7");
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(expiry.count, 1);
  EXPECT_TRUE(watch.expired());
}

TEST(DeadlineWatch, FailedQueryAndAsyncErrorExpireWithTheReason) {
  {
    Expiry expiry;
    FakeEvent started, finished;
    DeadlineWatch watch(expiry.callback(), {}, 100us);
    started.state = State::kDone;
    watch.track(started.query(), finished.query(), {}, "send_recv", "", 60);
    finished.state = State::kFailed;
    ASSERT_TRUE(eventually([&] { return expiry.count > 0; }));
    EXPECT_EQ(expiry.why, "failed: device exploded");
  }
  {
    Expiry expiry;
    FakeEvent started, finished;
    std::atomic<bool> broken{false};
    DeadlineWatch watch(expiry.callback(), {}, 100us);
    watch.set_async_error([&]() -> std::string { return broken ? "remote process exited" : ""; });
    watch.track(started.query(), finished.query(), {}, "reduce_scatter", "step 1", 60);
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(expiry.count, 0);
    broken = true;
    ASSERT_TRUE(eventually([&] { return expiry.count > 0; }));
    EXPECT_EQ(expiry.operation, "reduce_scatter");
    EXPECT_EQ(expiry.why, "failed: remote process exited");
    EXPECT_EQ(expiry.context, "step 1");
  }
}

TEST(DeadlineWatch, HostCallThatBlocksTooLongExpiresOneThatReturnsDoesNot) {
  Expiry expiry;
  DeadlineWatch watch(expiry.callback(), {}, 100us);
  watch.begin_host_call("init", "", 0.05);
  watch.end_host_call();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(expiry.count, 0);
  watch.begin_host_call("split", "step 2", 0.05);
  ASSERT_TRUE(eventually([&] { return expiry.count > 0; }));
  EXPECT_EQ(expiry.operation, "split");
  EXPECT_EQ(expiry.why, "did not return within 0.05 s");
  EXPECT_EQ(expiry.context, "step 2");
}

TEST(DeadlineWatch, DestructionReleasesWhatIsStillTracked) {
  Expiry expiry;
  FakeEvent started, finished;
  std::atomic<int> released{0};
  std::atomic<bool> thread_started{false};
  {
    DeadlineWatch watch(
        expiry.callback(), [&] { thread_started = true; }, 100us);
    watch.track(
        started.query(), finished.query(), [&] { ++released; }, "send_recv", "", 60);
    EXPECT_TRUE(eventually([&] { return thread_started.load(); }));
  }
  EXPECT_EQ(released, 1);
  EXPECT_EQ(expiry.count, 0);
}

}  // namespace
}  // namespace ra
