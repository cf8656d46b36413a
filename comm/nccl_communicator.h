// NcclCommunicator: the Communicator for CUDA tensors, a thin Torch layer over NcclComm.
// Transfers are ordered after the current Torch CUDA stream (the compute stream) and run on
// NcclComm's comm stream; wait() makes the compute stream wait for them, so work queued after
// it (including reuse of freed memory by the caching allocator) runs after the transfer.
// Without a CUDA build of LibTorch (RA_TORCH_HAS_CUDA) the compute stream is CUDA's legacy
// default stream.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <memory>

#include "comm/communicator.h"
#include "comm/nccl_comm.h"

namespace ra {

class NcclCommunicator : public Communicator {
 public:
  // Collective over mpi_comm; `device` is this rank's GPU (NcclComm::device_for_local_rank).
  NcclCommunicator(MPI_Comm mpi_comm, int device, double timeout_seconds = 300);
  ~NcclCommunicator() override;

  int rank() const override { return nccl_->rank(); }
  int size() const override { return nccl_->size(); }
  std::string backend() const override { return "nccl"; }

  void send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) override;
  std::unique_ptr<PendingTransfer> start_send_recv(const at::Tensor& send, int dst,
                                                   at::Tensor& recv, int src, int tag = 0) override;
  std::unique_ptr<PendingTransfer> start_send_recv_many(at::TensorList sends, int dst,
                                                        at::TensorList recvs, int src,
                                                        at::Device device, int tag = 0) override;
  void all_reduce_sum(at::Tensor& tensor) override;
  std::unique_ptr<PendingTransfer> start_all_reduce_sum(at::Tensor& tensor) override;
  void all_gather(const at::Tensor& input, at::Tensor& output) override;
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override;
  std::unique_ptr<PendingTransfer> start_all_gather(const at::Tensor& input,
                                                    at::Tensor& output) override;
  std::unique_ptr<PendingTransfer> start_reduce_scatter_sum(const at::Tensor& input,
                                                            at::Tensor& output) override;
  void broadcast(at::Tensor& tensor, int root) override;
  void barrier() override;
  std::shared_ptr<Communicator> split(int color, int key) override;
  std::shared_ptr<Communicator> duplicate(int max_ctas) override;

  NcclComm& core() { return *nccl_; }

 private:
  explicit NcclCommunicator(std::unique_ptr<NcclComm> nccl);
  std::shared_ptr<Communicator> split_with(int color, int key, int max_ctas);
  cudaStream_t compute_stream() const;
  // Pushes the deadline and context to the core, and makes a fresh "done" event.
  cudaEvent_t prepare();
  // Orders the compute stream after `done` (no host wait: the watchdog bounds the operation)
  // and destroys the event.
  void finish(cudaEvent_t done);

  std::unique_ptr<NcclComm> nccl_;
};

}  // namespace ra
