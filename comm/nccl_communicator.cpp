// NcclCommunicator: tensor checks, dtype mapping and stream ordering around NcclComm.
#include "comm/nccl_communicator.h"

#include <ATen/ATen.h>

#include <exception>
#include <vector>

#include "runtime/cuda_check.h"

#if RA_TORCH_HAS_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace ra {
namespace {

ncclDataType_t nccl_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kDouble:
      return ncclFloat64;
    case at::kFloat:
      return ncclFloat32;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kLong:
      return ncclInt64;
    case at::kInt:
      return ncclInt32;
    case at::kByte:
    case at::kBool:
      return ncclUint8;
    default:
      RA_THROW("NCCL backend: unsupported dtype ", t.scalar_type());
  }
}

void check_cuda_contiguous(const at::Tensor& t, const char* what, int device) {
  RA_CHECK(t.device().is_cuda() && t.device().index() == device, "NCCL backend: ", what, " is on ",
           t.device(), ": expected cuda:", device, " (use MPI for CPU tensors)");
  RA_CHECK(t.is_contiguous(), "NCCL backend: ", what, " must be contiguous");
}

// The transfer's "done" event: wait() orders the compute stream after it and returns at once
// (the NcclWatchdog bounds the transfer); the event is destroyed after that, which CUDA allows
// while it is pending.
class NcclPendingTransfer : public PendingTransfer {
 public:
  NcclPendingTransfer(cudaEvent_t done, cudaStream_t compute) : done_(done), compute_(compute) {}
  ~NcclPendingTransfer() override {
    if (!finished_) cudaStreamWaitEvent(compute_, done_, 0);  // buffers stay stream-ordered
    if (done_) cudaEventDestroy(done_);
  }
  void wait() override {
    if (finished_) return;
    finished_ = true;
    RA_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0));
  }

 private:
  cudaEvent_t done_;
  cudaStream_t compute_;
  bool finished_ = false;
};

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm mpi_comm, int device, double timeout_seconds)
    : nccl_(std::make_unique<NcclComm>(mpi_comm, device, timeout_seconds)) {
  timeout_seconds_ = timeout_seconds;
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<NcclComm> nccl) : nccl_(std::move(nccl)) {}

NcclCommunicator::~NcclCommunicator() = default;

cudaStream_t NcclCommunicator::compute_stream() const {
#if RA_TORCH_HAS_CUDA
  return c10::cuda::getCurrentCUDAStream(nccl_->device()).stream();
#else
  return cudaStreamLegacy;
#endif
}

cudaEvent_t NcclCommunicator::prepare() {
  nccl_->set_timeout_seconds(timeout_seconds_);
  nccl_->set_context(context_);
  RA_CUDA_CHECK(cudaSetDevice(nccl_->device()));
  cudaEvent_t done = nullptr;
  RA_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  return done;
}

void NcclCommunicator::finish(cudaEvent_t done) {
  NcclPendingTransfer(done, compute_stream()).wait();
}

std::unique_ptr<PendingTransfer> NcclCommunicator::start_send_recv(const at::Tensor& send, int dst,
                                                                   at::Tensor& recv, int src,
                                                                   int /*tag*/) {
  check_cuda_contiguous(send, "send tensor", nccl_->device());
  check_cuda_contiguous(recv, "recv tensor", nccl_->device());
  RA_CHECK(send.scalar_type() == recv.scalar_type(), "send_recv: dtypes differ");
  cudaEvent_t done = prepare();
  // NCCL orders point-to-point operations between a pair of ranks by issue, so no tags.
  nccl_->send_recv(send.data_ptr(), send.numel(), dst, recv.data_ptr(), recv.numel(), src,
                   nccl_type(send), compute_stream(), done);
  return std::make_unique<NcclPendingTransfer>(done, compute_stream());
}

std::unique_ptr<PendingTransfer> NcclCommunicator::start_send_recv_many(
    at::TensorList sends, int dst, at::TensorList recvs, int src, at::Device device, int /*tag*/) {
  RA_CHECK(device == at::Device(at::kCUDA, nccl_->device()), "NCCL backend: send_recv_many on ",
           device, ": expected cuda:", nccl_->device());
  auto buffers = [&](at::TensorList tensors, const char* what) {
    std::vector<NcclComm::Buffer> list;
    for (const at::Tensor& t : tensors) {
      check_cuda_contiguous(t, what, nccl_->device());
      list.push_back({t.data_ptr(), size_t(t.numel()), nccl_type(t)});
    }
    return list;
  };
  const auto send_list = buffers(sends, "send tensor"), recv_list = buffers(recvs, "recv tensor");
  cudaEvent_t done = prepare();
  nccl_->send_recv_many(send_list, dst, recv_list, src, compute_stream(), done);
  return std::make_unique<NcclPendingTransfer>(done, compute_stream());
}

void NcclCommunicator::send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) {
  start_send_recv(send, dst, recv, src)->wait();
}

void NcclCommunicator::all_reduce_sum(at::Tensor& tensor) { start_all_reduce_sum(tensor)->wait(); }

std::unique_ptr<PendingTransfer> NcclCommunicator::start_all_reduce_sum(at::Tensor& tensor) {
  check_cuda_contiguous(tensor, "all_reduce tensor", nccl_->device());
  cudaEvent_t done = prepare();
  nccl_->all_reduce_sum(tensor.data_ptr(), tensor.numel(), nccl_type(tensor), compute_stream(),
                        done);
  return std::make_unique<NcclPendingTransfer>(done, compute_stream());
}

void NcclCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  start_all_gather(input, output)->wait();
}

std::unique_ptr<PendingTransfer> NcclCommunicator::start_all_gather(const at::Tensor& input,
                                                                    at::Tensor& output) {
  check_cuda_contiguous(input, "all_gather input", nccl_->device());
  check_cuda_contiguous(output, "all_gather output", nccl_->device());
  RA_CHECK(output.numel() == input.numel() * size(), "all_gather: output has ", output.numel(),
           " elements, expected ", input.numel() * size());
  RA_CHECK(input.scalar_type() == output.scalar_type(), "all_gather: dtypes differ");
  cudaEvent_t done = prepare();
  nccl_->all_gather(input.data_ptr(), output.data_ptr(), input.numel(), nccl_type(input),
                    compute_stream(), done);
  return std::make_unique<NcclPendingTransfer>(done, compute_stream());
}

void NcclCommunicator::reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) {
  start_reduce_scatter_sum(input, output)->wait();
}

std::unique_ptr<PendingTransfer> NcclCommunicator::start_reduce_scatter_sum(const at::Tensor& input,
                                                                            at::Tensor& output) {
  check_cuda_contiguous(input, "reduce_scatter input", nccl_->device());
  check_cuda_contiguous(output, "reduce_scatter output", nccl_->device());
  RA_CHECK(input.numel() == output.numel() * size(), "reduce_scatter: input has ", input.numel(),
           " elements, expected ", output.numel() * size());
  RA_CHECK(input.scalar_type() == output.scalar_type(), "reduce_scatter: dtypes differ");
  cudaEvent_t done = prepare();
  nccl_->reduce_scatter_sum(input.data_ptr(), output.data_ptr(), output.numel(), nccl_type(input),
                            compute_stream(), done);
  return std::make_unique<NcclPendingTransfer>(done, compute_stream());
}

void NcclCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_cuda_contiguous(tensor, "broadcast tensor", nccl_->device());
  cudaEvent_t done = prepare();
  nccl_->broadcast(tensor.data_ptr(), tensor.numel(), nccl_type(tensor), root, compute_stream(),
                   done);
  finish(done);
}

void NcclCommunicator::barrier() {
  // An all-reduce of one value: NCCL has no barrier of its own.
  void* flag = nullptr;
  RA_CUDA_CHECK(cudaSetDevice(nccl_->device()));
  RA_CUDA_CHECK(cudaMalloc(&flag, sizeof(float)));
  RA_CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(float), compute_stream()));
  cudaEvent_t done = prepare();
  try {
    nccl_->all_reduce_sum(flag, 1, ncclFloat32, compute_stream(), done);
    nccl_->wait(done, "barrier");  // a barrier is a host-side promise
    cudaEventDestroy(done);
  } catch (...) {
    cudaFree(flag);
    throw;
  }
  RA_CUDA_CHECK(cudaFree(flag));
}

std::shared_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  return split_with(color, key, /*max_ctas=*/0);
}

std::shared_ptr<Communicator> NcclCommunicator::duplicate(int max_ctas) {
  return split_with(0, rank(), max_ctas);
}

std::shared_ptr<Communicator> NcclCommunicator::split_with(int color, int key, int max_ctas) {
  nccl_->set_timeout_seconds(timeout_seconds_);
  nccl_->set_context(context_);
  auto result =
      std::shared_ptr<NcclCommunicator>(new NcclCommunicator(nccl_->split(color, key, max_ctas)));
  result->set_timeout_seconds(timeout_seconds_);
  result->set_context(context_);
  return result;
}

}  // namespace ra
