// NcclComm: the NCCL core of the GPU backend, on raw device pointers and cudaStream_t (no
// LibTorch), so it compiles wherever the CUDA toolkit and NCCL headers are. Operations run on
// a dedicated comm stream, ordered after the caller's compute stream with a CUDA event, and
// signal a caller-provided event when done; the host does not wait for them. Communicators are
// blocking (the lowest launch latency: a non-blocking one hands every launch to a helper
// thread, ~3 ms per operation measured on H100), so the deadlines live in an NcclWatchdog: it
// times each operation from its start on the GPU, and each host call that may block inside
// NCCL, and ends the process with rank, host, operation and context on expiry.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/nccl_watchdog.h"

namespace ra {

class NcclComm {
 public:
  // Collective over mpi_comm: rank 0 creates the ncclUniqueId, MPI_Bcast shares it, every
  // rank initialises on `device` (the current device is set to it).
  NcclComm(MPI_Comm mpi_comm, int device, double timeout_seconds);
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }
  cudaStream_t comm_stream() const { return comm_stream_; }
  void set_timeout_seconds(double seconds) { timeout_seconds_ = seconds; }
  void set_context(std::string context) { context_ = std::move(context); }

  // One buffer of a point-to-point transfer: `count` elements of `type`.
  struct Buffer {
    void* data = nullptr;
    size_t count = 0;
    ncclDataType_t type = ncclInt8;
  };

  // Enqueue on the comm stream after the work already on `compute`; `done` is recorded after.
  // Sizes are element counts of `type`.
  void send_recv(const void* send, size_t send_count, int dst, void* recv, size_t recv_count,
                 int src, ncclDataType_t type, cudaStream_t compute, cudaEvent_t done);
  // Every buffer of `sends` to dst and of `recvs` from src in one NCCL group (one launch).
  void send_recv_many(const std::vector<Buffer>& sends, int dst, const std::vector<Buffer>& recvs,
                      int src, cudaStream_t compute, cudaEvent_t done);
  void all_reduce_sum(void* data, size_t count, ncclDataType_t type, cudaStream_t compute,
                      cudaEvent_t done);
  void all_gather(const void* input, void* output, size_t count_per_rank, ncclDataType_t type,
                  cudaStream_t compute, cudaEvent_t done);
  void reduce_scatter_sum(const void* input, void* output, size_t count_per_rank,
                          ncclDataType_t type, cudaStream_t compute, cudaEvent_t done);
  void broadcast(void* data, size_t count, ncclDataType_t type, int root, cudaStream_t compute,
                 cudaEvent_t done);

  // Blocks the host until `done` has fired, under the deadline (CommTimeout after an abort);
  // only for the rare calls whose callers need it on the host (barrier).
  void wait(cudaEvent_t done, const char* operation);

  // ncclCommSplit: the ranks with the same color, ordered by key; its kernels use at most
  // max_ctas CTAs (ncclConfig_t::maxCTAs; 0: NCCL's choice). Collective.
  std::unique_ptr<NcclComm> split(int color, int key, int max_ctas = 0);

  // Picks the GPU of this process: device = local rank; an error if the node has more ranks
  // than GPUs.
  static int device_for_local_rank(int local_rank, int local_size);

 private:
  NcclComm(ncclComm_t comm, int device, double timeout_seconds, std::string context);
  void make_stream();
  // Orders the comm stream after `compute`, then runs `enqueue` between ncclGroupStart/End,
  // tracked by the watchdog from the start of the host call and, on the GPU, of the operation.
  template <typename Enqueue>
  void launch(cudaStream_t compute, cudaEvent_t done, const char* operation, Enqueue enqueue);
  // `call` under the watchdog as a host call that may block inside NCCL (init, split, finalize).
  template <typename Call>
  void host_call(const char* operation, Call call);
  [[noreturn]] void fail(const char* operation, const std::string& why);

  ncclComm_t comm_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t compute_ready_ = nullptr;
  int rank_ = 0, size_ = 1, device_ = 0;
  double timeout_seconds_ = 300;
  std::string context_;
  bool aborted_ = false;
  std::unique_ptr<NcclWatchdog> watchdog_;  // declared last: stopped first
};

}  // namespace ra
