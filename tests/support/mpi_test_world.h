// What the multi-rank tests share, on CPU (MPI) or, built with RA_TEST_ON_CUDA, on one GPU per
// rank (NCCL): why a job cannot run on its device here, and the world communicator.
#pragma once

#include <c10/core/DeviceType.h>

#include <memory>
#include <string>

#include "comm/communicator.h"

namespace ra::testing {

// Empty when the job can run on `device`; for CUDA, fewer GPUs than ranks on this node says why.
std::string device_skip_reason(c10::DeviceType device);

// The world communicator for `device` (MPI for CPU, NCCL for CUDA; 60 s deadline), made once
// per process. MPI must already be initialised (mpi_test_main does it).
std::shared_ptr<Communicator> test_world(c10::DeviceType device);

// The device a multi-rank test file runs on: CUDA when built with RA_TEST_ON_CUDA.
#if defined(RA_TEST_ON_CUDA)
constexpr auto kDevice = c10::DeviceType::CUDA;
#else
constexpr auto kDevice = c10::DeviceType::CPU;
#endif

// test_world(kDevice).
inline std::shared_ptr<Communicator> world() { return test_world(kDevice); }

}  // namespace ra::testing

// Skips the current test when the job cannot run on kDevice.
#define SKIP_WITHOUT_DEVICE()                                                            \
  if (const std::string why = ::ra::testing::device_skip_reason(::ra::testing::kDevice); \
      !why.empty())                                                                      \
  GTEST_SKIP() << why
