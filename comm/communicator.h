// Communicator: the collective and point-to-point operations the runtime needs over a group of
// ranks, one interface for two backends: MPI for CPU tensors (CI, tests) and NCCL for CUDA
// tensors. Every blocking wait has a deadline; on expiry the call throws CommTimeout naming
// the rank, host, operation and context, and the caller ends the job (MpiContext::abort_job).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "runtime/error.h"

namespace ra {

// A wait passed its deadline or a peer failed. Derives from ra::Error.
class CommTimeout : public Error {
 public:
  using Error::Error;
};

// A send/receive or all-reduce in flight (Communicator::start_send_recv, start_all_reduce_sum).
// On MPI (CPU) wait() blocks until both sides are done, under the communicator's deadline
// (CommTimeout on expiry). On NCCL it orders the caller's compute stream after the transfer and
// returns at once; the deadline is the NcclWatchdog's. The destructor of an unfinished transfer
// does the same, so buffers are never reused while a peer still writes to them.
class PendingTransfer {
 public:
  virtual ~PendingTransfer() = default;
  virtual void wait() = 0;

 protected:
  // For the destructors of transfers that must finish before their buffers go: wait() unless an
  // exception is unwinding (the job is ending: no second deadline). A destructor cannot throw;
  // the failure was or will be reported by an explicit wait.
  void wait_in_destructor() noexcept;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "mpi" or "nccl"

  // Sends `send` to rank `dst` and receives `recv` from rank `src` (ranks of this group),
  // both at once, so a ring shift cannot deadlock. Tensors contiguous, same dtype.
  virtual void send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) = 0;
  // The same, started without waiting, so the caller computes while the data moves. `send`
  // must stay unchanged and `recv` untouched until wait(). Transfers between one pair of ranks
  // match in the order they are started; `tag` separates interleaved streams (MPI tags; NCCL
  // orders them by issue). The default runs send_recv at once and returns a finished handle.
  virtual std::unique_ptr<PendingTransfer> start_send_recv(const at::Tensor& send, int dst,
                                                           at::Tensor& recv, int src, int tag = 0);
  // Several tensors each way as one transfer: sends[i] lands in the peer's recvs[i] (each
  // contiguous, on `device`; a pair's dtypes and sizes agree across the two ranks; either list may
  // be empty, and every rank of a pair still makes the call). On NCCL one group, so one kernel
  // launch: a second one queued behind a persistent compute kernel would wait for it to end. The
  // default packs each side into one byte buffer on `device` for one start_send_recv.
  virtual std::unique_ptr<PendingTransfer> start_send_recv_many(at::TensorList sends, int dst,
                                                                at::TensorList recvs, int src,
                                                                at::Device device, int tag = 0);
  // In place, sum over ranks.
  virtual void all_reduce_sum(at::Tensor& tensor) = 0;
  // The same, started without waiting: `tensor` stays untouched by the caller until wait(). On
  // NCCL it runs after the work queued so far on the compute stream and beside what is queued
  // next (gradient buckets during backward). The default reduces at once.
  virtual std::unique_ptr<PendingTransfer> start_all_reduce_sum(at::Tensor& tensor);
  // output = concatenation of every rank's input along dim 0 (output.size(0) = size * input's).
  virtual void all_gather(const at::Tensor& input, at::Tensor& output) = 0;
  // output = this rank's slice (along dim 0) of the sum over ranks of input.
  virtual void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) = 0;
  // all_gather and reduce_scatter_sum started without waiting, so the caller computes while the
  // data moves: input stays unchanged and output untouched until wait(). On NCCL they run after
  // the work queued so far on the compute stream. The defaults run at once.
  virtual std::unique_ptr<PendingTransfer> start_all_gather(const at::Tensor& input,
                                                            at::Tensor& output);
  virtual std::unique_ptr<PendingTransfer> start_reduce_scatter_sum(const at::Tensor& input,
                                                                    at::Tensor& output);
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  virtual void barrier() = 0;

  // The ranks with the same color, ordered by key (MPI_Comm_split). Collective over this group.
  virtual std::shared_ptr<Communicator> split(int color, int key) = 0;
  // The same ranks as a new communicator for transfers that run beside long compute: its NCCL
  // kernels use at most `max_ctas` CTAs (ncclConfig_t::maxCTAs; 0: NCCL's choice), so they take
  // few SMs from the kernels they run beside, at a lower bandwidth. Collective over this group.
  // The default (MPI) is split(0, rank()): CPU transfers take no SMs.
  virtual std::shared_ptr<Communicator> duplicate(int max_ctas);

  // Deadline for every blocking wait, and a label ("step 12") that error messages carry.
  void set_timeout_seconds(double seconds) { timeout_seconds_ = seconds; }
  double timeout_seconds() const { return timeout_seconds_; }
  void set_context(std::string context) { context_ = std::move(context); }
  const std::string& context() const { return context_; }

 protected:
  double timeout_seconds_ = 300;
  std::string context_;
};

}  // namespace ra
