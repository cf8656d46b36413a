// MpiCommunicator: non-blocking MPI calls, each completed by wait_all under the deadline.
#include "comm/mpi_communicator.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "comm/mpi_check.h"

namespace ra {
namespace {

// MPI type for moving (and, where noted, reducing) a tensor's elements.
MPI_Datatype mpi_type(const at::Tensor& t, bool reduce) {
  switch (t.scalar_type()) {
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kFloat:
      return MPI_FLOAT;
    case at::kLong:
      return MPI_INT64_T;
    case at::kInt:
      return MPI_INT32_T;
    case at::kHalf:
    case at::kBFloat16:
      RA_CHECK(!reduce, "MPI backend: cannot reduce ", t.scalar_type(),
               " tensors; reduce in float32 (CPU tensors are float32/float64)");
      return MPI_UINT16_T;
    case at::kByte:
    case at::kBool:
      return MPI_UINT8_T;
    default:
      RA_THROW("MPI backend: unsupported dtype ", t.scalar_type());
  }
}

void check_cpu_contiguous(const at::Tensor& t, const char* what) {
  RA_CHECK(t.device().is_cpu(), "MPI backend: ", what, " is on ", t.device(),
           ": the MPI backend moves CPU tensors (use NCCL for CUDA)");
  RA_CHECK(t.is_contiguous(), "MPI backend: ", what, " must be contiguous");
}

std::string host_name() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, double timeout_seconds) {
  RA_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  RA_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  RA_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  timeout_seconds_ = timeout_seconds;
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void MpiCommunicator::wait_all(MPI_Request* requests, int count, const char* operation) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration<double>(timeout_seconds_);
  auto pause = std::chrono::microseconds(1);
  while (true) {
    int done = 0;
    RA_MPI_CHECK(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE));
    if (done) return;
    if (clock::now() > deadline) {
      throw CommTimeout(
          detail::concat("rank ", rank_, " of ", size_, " on host ", host_name(), ": ", operation,
                         " did not complete within ", timeout_seconds_, " s",
                         context_.empty() ? "" : " (" + context_ + ")"),
          "a peer rank is stuck or dead; look for its own error above. Raise the deadline "
          "with --timeout (ring_train) if the step is just slow",
          __FILE__, __LINE__);
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

void MpiCommunicator::send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) {
  check_cpu_contiguous(send, "send tensor");
  check_cpu_contiguous(recv, "recv tensor");
  RA_CHECK(send.scalar_type() == recv.scalar_type(), "send_recv: dtypes differ");
  MPI_Request req[2];
  RA_MPI_CHECK(MPI_Irecv(recv.data_ptr(), static_cast<int>(recv.numel()), mpi_type(recv, false),
                         src, 0, comm_, &req[0]));
  RA_MPI_CHECK(MPI_Isend(send.data_ptr(), static_cast<int>(send.numel()), mpi_type(send, false),
                         dst, 0, comm_, &req[1]));
  wait_all(req, 2, "send_recv");
}

// Irecv + Isend in flight; wait() polls them under the deadline.
class MpiPendingTransfer : public PendingTransfer {
 public:
  explicit MpiPendingTransfer(MpiCommunicator* comm) : comm_(comm) {}
  ~MpiPendingTransfer() override {
    if (!done_) wait_in_destructor();
  }
  void wait() override {
    if (done_) return;
    done_ = true;
    comm_->wait_all(requests, 2, "send_recv");
  }
  MPI_Request requests[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};

 private:
  MpiCommunicator* comm_;
  bool done_ = false;
};

std::unique_ptr<PendingTransfer> MpiCommunicator::start_send_recv(const at::Tensor& send, int dst,
                                                                  at::Tensor& recv, int src,
                                                                  int tag) {
  check_cpu_contiguous(send, "send tensor");
  check_cpu_contiguous(recv, "recv tensor");
  RA_CHECK(send.scalar_type() == recv.scalar_type(), "send_recv: dtypes differ");
  auto pending = std::make_unique<MpiPendingTransfer>(this);
  RA_MPI_CHECK(MPI_Irecv(recv.data_ptr(), static_cast<int>(recv.numel()), mpi_type(recv, false),
                         src, tag, comm_, &pending->requests[0]));
  RA_MPI_CHECK(MPI_Isend(send.data_ptr(), static_cast<int>(send.numel()), mpi_type(send, false),
                         dst, tag, comm_, &pending->requests[1]));
  return pending;
}

void MpiCommunicator::all_reduce_sum(at::Tensor& tensor) {
  check_cpu_contiguous(tensor, "all_reduce tensor");
  MPI_Request req;
  RA_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), static_cast<int>(tensor.numel()),
                              mpi_type(tensor, true), MPI_SUM, comm_, &req));
  wait_all(&req, 1, "all_reduce");
}

void MpiCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  check_cpu_contiguous(input, "all_gather input");
  check_cpu_contiguous(output, "all_gather output");
  RA_CHECK(output.numel() == input.numel() * size_, "all_gather: output has ", output.numel(),
           " elements, expected ", input.numel() * size_);
  MPI_Request req;
  RA_MPI_CHECK(MPI_Iallgather(
      input.data_ptr(), static_cast<int>(input.numel()), mpi_type(input, false), output.data_ptr(),
      static_cast<int>(input.numel()), mpi_type(output, false), comm_, &req));
  wait_all(&req, 1, "all_gather");
}

void MpiCommunicator::reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) {
  check_cpu_contiguous(input, "reduce_scatter input");
  check_cpu_contiguous(output, "reduce_scatter output");
  RA_CHECK(input.numel() == output.numel() * size_, "reduce_scatter: input has ", input.numel(),
           " elements, expected ", output.numel() * size_);
  MPI_Request req;
  RA_MPI_CHECK(MPI_Ireduce_scatter_block(input.data_ptr(), output.data_ptr(),
                                         static_cast<int>(output.numel()), mpi_type(input, true),
                                         MPI_SUM, comm_, &req));
  wait_all(&req, 1, "reduce_scatter");
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_cpu_contiguous(tensor, "broadcast tensor");
  MPI_Request req;
  RA_MPI_CHECK(MPI_Ibcast(tensor.data_ptr(), static_cast<int>(tensor.numel()),
                          mpi_type(tensor, false), root, comm_, &req));
  wait_all(&req, 1, "broadcast");
}

void MpiCommunicator::barrier() {
  MPI_Request req;
  RA_MPI_CHECK(MPI_Ibarrier(comm_, &req));
  wait_all(&req, 1, "barrier");
}

std::shared_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  // MPI_Comm_split has no timeout: meet in a deadline-checked barrier first, so a rank that
  // never arrives fails the job (CommTimeout) instead of hanging it inside the split.
  barrier();
  MPI_Comm sub;
  RA_MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
  auto result = std::make_shared<MpiCommunicator>(sub, timeout_seconds_);
  MPI_Comm_free(&sub);
  result->set_context(context_);
  return result;
}

}  // namespace ra
