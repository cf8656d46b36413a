// KernelProfiler over torch::autograd::profiler's Kineto API (same calls in LibTorch 1.13 and 2.x).
#include "runtime/kernel_profiler.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <set>

#include "runtime/error.h"

namespace ra {
namespace {
namespace tp = torch::profiler::impl;
}  // namespace

KernelProfiler::KernelProfiler(bool cuda) {
  std::set<tp::ActivityType> activities{tp::ActivityType::CPU};
  if (cuda) activities.insert(tp::ActivityType::CUDA);
  const tp::ProfilerConfig config(tp::ProfilerState::KINETO, /*report_input_shapes=*/true);
  try {
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
  } catch (const std::exception& e) {
    RA_THROW_HINT("profiling needs a LibTorch built with Kineto (the PyTorch wheel's is)",
                  "could not start the Kineto profiler: ", e.what());
  }
  active_ = true;
}

KernelProfiler::~KernelProfiler() {
  if (active_) torch::autograd::profiler::disableProfiler();
}

void KernelProfiler::ensure_available(bool cuda) {
  try {
    KernelProfiler probe(cuda);
    probe.save("/dev/null");
  } catch (const Error&) {
    RA_THROW_HINT("use a LibTorch built with Kineto (the PyTorch wheel's is), or drop the flag",
                  "profiling was requested but this LibTorch cannot record a trace (no Kineto)");
  }
}

void KernelProfiler::save(const std::string& path) {
  RA_CHECK(active_, "KernelProfiler::save called twice");
  active_ = false;
  auto result = torch::autograd::profiler::disableProfiler();
  RA_CHECK(result != nullptr, "the Kineto profiler returned no result");
  try {
    result->save(path);
  } catch (const c10::Error& e) {
    RA_THROW_HINT("profiling needs a LibTorch built with Kineto (the PyTorch wheel's is)",
                  "could not save the profiler trace to ", path, ": ", e.what_without_backtrace());
  }
}

}  // namespace ra
