// NcclComm: blocking NCCL communicators whose deadlines an NcclWatchdog enforces.
#include "comm/nccl_comm.h"

#include <unistd.h>

#include <chrono>
#include <thread>

#include "comm/mpi_check.h"
#include "comm/nccl_check.h"
#include "runtime/cuda_check.h"

namespace ra {
namespace {

using Clock = std::chrono::steady_clock;

std::string host_name() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

ncclConfig_t blocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 1;  // launches on this thread; the watchdog bounds any call that blocks
  return config;
}

// NCCL_COMM_BLOCKING=0 in the environment overrides our blocking config: calls then return
// ncclInProgress while a helper thread still works. Waiting for that here keeps the stream
// order (an event recorded before the kernels are enqueued would fire early) and costs nothing
// on a blocking communicator; the surrounding host call is under the watchdog.
void settle(ncclComm_t comm) {
  ncclResult_t state = ncclInProgress;
  while (state == ncclInProgress) {
    RA_NCCL_CHECK(ncclCommGetAsyncError(comm, &state));
    if (state == ncclInProgress) std::this_thread::yield();
  }
  RA_CHECK(state == ncclSuccess, "NCCL failed: ", ncclGetErrorString(state));
}

}  // namespace

int NcclComm::device_for_local_rank(int local_rank, int local_size) {
  int devices = 0;
  RA_CUDA_CHECK(cudaGetDeviceCount(&devices));
  RA_CHECK(local_size <= devices, "ranks on this node = ", local_size, " but it has ", devices,
           " GPUs: run at most one rank per GPU (mpirun -n <GPUs per node> per node)");
  return local_rank;
}

template <typename Call>
void NcclComm::host_call(const char* operation, Call call) {
  watchdog_->begin_host_call(operation, context_, timeout_seconds_);
  struct End {
    NcclWatchdog* watchdog;
    ~End() { watchdog->end_host_call(); }
  } end{watchdog_.get()};
  call();
}

NcclComm::NcclComm(MPI_Comm mpi_comm, int device, double timeout_seconds)
    : device_(device), timeout_seconds_(timeout_seconds) {
  RA_MPI_CHECK(MPI_Comm_rank(mpi_comm, &rank_));
  RA_MPI_CHECK(MPI_Comm_size(mpi_comm, &size_));
  RA_CUDA_CHECK(cudaSetDevice(device_));
  watchdog_ = std::make_unique<NcclWatchdog>(NcclWatchdog::Identity{rank_, size_, device_});
  ncclUniqueId id;
  if (rank_ == 0) RA_NCCL_CHECK(ncclGetUniqueId(&id));
  // Non-blocking broadcast polled under the deadline: a rank that never starts must not hang
  // the others at start-up.
  MPI_Request request;
  RA_MPI_CHECK(MPI_Ibcast(&id, sizeof(id), MPI_BYTE, 0, mpi_comm, &request));
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds_);
  for (int done = 0; !done;) {
    RA_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (!done && Clock::now() > deadline) {
      fail("unique id broadcast",
           detail::concat("did not complete within ", timeout_seconds_, " s"));
    }
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ncclConfig_t config = blocking_config();
  host_call("init", [&] {
    RA_NCCL_CHECK(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config));
    settle(comm_);
  });
  watchdog_->set_comm(comm_);
  make_stream();
}

NcclComm::NcclComm(ncclComm_t comm, int device, double timeout_seconds, std::string context)
    : comm_(comm),
      device_(device),
      timeout_seconds_(timeout_seconds),
      context_(std::move(context)) {
  RA_NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  RA_NCCL_CHECK(ncclCommCount(comm_, &size_));
  watchdog_ = std::make_unique<NcclWatchdog>(NcclWatchdog::Identity{rank_, size_, device_});
  watchdog_->set_comm(comm_);
  make_stream();
}

void NcclComm::make_stream() {
  RA_CUDA_CHECK(cudaSetDevice(device_));
  RA_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
  RA_CUDA_CHECK(cudaEventCreateWithFlags(&compute_ready_, cudaEventDisableTiming));
}

NcclComm::~NcclComm() {
  if (comm_ != nullptr && !aborted_) {
    // Finalize flushes pending work; a dead peer could block it, so it runs under the watchdog.
    // The watchdog stops polling the communicator before it is freed.
    bool finalized = false;
    try {
      host_call("finalize", [&] {
        RA_NCCL_CHECK(ncclCommFinalize(comm_));
        settle(comm_);
      });
      finalized = true;
    } catch (...) {
    }
    watchdog_->set_comm(nullptr);
    if (finalized) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
  }
  watchdog_.reset();
  if (compute_ready_) cudaEventDestroy(compute_ready_);
  if (comm_stream_) cudaStreamDestroy(comm_stream_);
}

void NcclComm::fail(const char* operation, const std::string& why) {
  if (comm_ != nullptr && !aborted_) {
    watchdog_->set_comm(nullptr);  // it must not poll a freed communicator
    ncclCommAbort(comm_);          // unblocks kernels waiting for the dead peer
    aborted_ = true;
  }
  throw CommTimeout(detail::concat("rank ", rank_, " of ", size_, " on host ", host_name(),
                                   " (GPU ", device_, "): NCCL ", operation, " ", why,
                                   context_.empty() ? "" : " (" + context_ + ")"),
                    "a peer rank is stuck or dead; look for its own error above. Raise the "
                    "deadline with --timeout (ring_train) if the step is just slow",
                    __FILE__, __LINE__);
}

void NcclComm::wait(cudaEvent_t done, const char* operation) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds_);
  auto pause = std::chrono::microseconds(1);
  while (true) {
    const cudaError_t status = cudaEventQuery(done);
    if (status == cudaSuccess) return;
    if (status != cudaErrorNotReady) RA_CUDA_CHECK(status);
    ncclResult_t state = ncclSuccess;
    RA_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
    if (state != ncclSuccess && state != ncclInProgress) {
      fail(operation, detail::concat("failed: ", ncclGetErrorString(state)));
    }
    if (Clock::now() > deadline) {
      fail(operation, detail::concat("did not complete within ", timeout_seconds_, " s"));
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(200));
  }
}

template <typename Enqueue>
void NcclComm::launch(cudaStream_t compute, cudaEvent_t done, const char* operation,
                      Enqueue enqueue) {
  RA_CHECK(!aborted_, "NCCL ", operation,
           ": the communicator was aborted after an earlier "
           "failure; end the job");
  host_call(operation, [&] {
    RA_CUDA_CHECK(cudaEventRecord(compute_ready_, compute));
    RA_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, compute_ready_, 0));
    cudaEvent_t started = watchdog_->mark_start(comm_stream_);
    RA_NCCL_CHECK(ncclGroupStart());
    enqueue();
    RA_NCCL_CHECK(ncclGroupEnd());  // may connect to a new peer: the host call is watched
    settle(comm_);                  // `done` must follow the NCCL kernels on the stream
    RA_CUDA_CHECK(cudaEventRecord(done, comm_stream_));
    watchdog_->track(started, comm_stream_, operation, context_, timeout_seconds_);
  });
}

void NcclComm::send_recv(const void* send, size_t send_count, int dst, void* recv,
                         size_t recv_count, int src, ncclDataType_t type, cudaStream_t compute,
                         cudaEvent_t done) {
  send_recv_many({{const_cast<void*>(send), send_count, type}}, dst, {{recv, recv_count, type}},
                 src, compute, done);
}

void NcclComm::send_recv_many(const std::vector<Buffer>& sends, int dst,
                              const std::vector<Buffer>& recvs, int src, cudaStream_t compute,
                              cudaEvent_t done) {
  launch(compute, done, "send_recv", [&] {
    for (const Buffer& b : sends) {
      RA_NCCL_CHECK(ncclSend(b.data, b.count, b.type, dst, comm_, comm_stream_));
    }
    for (const Buffer& b : recvs) {
      RA_NCCL_CHECK(ncclRecv(b.data, b.count, b.type, src, comm_, comm_stream_));
    }
  });
}

void NcclComm::all_reduce_sum(void* data, size_t count, ncclDataType_t type, cudaStream_t compute,
                              cudaEvent_t done) {
  launch(compute, done, "all_reduce", [&] {
    RA_NCCL_CHECK(ncclAllReduce(data, data, count, type, ncclSum, comm_, comm_stream_));
  });
}

void NcclComm::all_gather(const void* input, void* output, size_t count_per_rank,
                          ncclDataType_t type, cudaStream_t compute, cudaEvent_t done) {
  launch(compute, done, "all_gather", [&] {
    RA_NCCL_CHECK(ncclAllGather(input, output, count_per_rank, type, comm_, comm_stream_));
  });
}

void NcclComm::reduce_scatter_sum(const void* input, void* output, size_t count_per_rank,
                                  ncclDataType_t type, cudaStream_t compute, cudaEvent_t done) {
  launch(compute, done, "reduce_scatter", [&] {
    RA_NCCL_CHECK(
        ncclReduceScatter(input, output, count_per_rank, type, ncclSum, comm_, comm_stream_));
  });
}

void NcclComm::broadcast(void* data, size_t count, ncclDataType_t type, int root,
                         cudaStream_t compute, cudaEvent_t done) {
  launch(compute, done, "broadcast",
         [&] { RA_NCCL_CHECK(ncclBroadcast(data, data, count, type, root, comm_, comm_stream_)); });
}

std::unique_ptr<NcclComm> NcclComm::split(int color, int key, int max_ctas) {
  RA_CHECK(max_ctas >= 0, "NCCL split: max_ctas = ", max_ctas, "; must be >= 0 (0: NCCL's choice)");
  ncclConfig_t config = blocking_config();
  if (max_ctas > 0) {
    config.minCTAs = 1;
    config.maxCTAs = max_ctas;
  }
  ncclComm_t sub = nullptr;
  host_call("split", [&] {
    RA_NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, &config));
    settle(comm_);
    settle(sub);
  });
  return std::unique_ptr<NcclComm>(new NcclComm(sub, device_, timeout_seconds_, context_));
}

}  // namespace ra
