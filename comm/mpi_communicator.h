// MpiCommunicator: the Communicator over an MPI communicator for CPU tensors. Uses
// non-blocking MPI calls and polls them against the deadline, so a dead or stuck peer turns
// into a CommTimeout instead of a hang.
#pragma once

#include <mpi.h>

#include "comm/communicator.h"

namespace ra {

class MpiCommunicator : public Communicator {
 public:
  // Duplicates `comm` (the communicator stays owned by the caller).
  explicit MpiCommunicator(MPI_Comm comm, double timeout_seconds = 300);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) override;
  std::unique_ptr<PendingTransfer> start_send_recv(const at::Tensor& send, int dst,
                                                   at::Tensor& recv, int src, int tag = 0) override;
  void all_reduce_sum(at::Tensor& tensor) override;
  void all_gather(const at::Tensor& input, at::Tensor& output) override;
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override;
  void broadcast(at::Tensor& tensor, int root) override;
  void barrier() override;
  std::shared_ptr<Communicator> split(int color, int key) override;

  MPI_Comm handle() const { return comm_; }

 private:
  friend class MpiPendingTransfer;
  // Polls the requests until all complete or the deadline passes (then throws CommTimeout).
  void wait_all(MPI_Request* requests, int count, const char* operation);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace ra
