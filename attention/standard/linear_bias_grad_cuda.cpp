// linear_weight_bias_grad_cuda: one cublasLtMatmul with the BGRADB epilogue on PyTorch's
// cuBLASLt handle, workspace and current stream.
#include "attention/standard/linear_bias_grad_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublasLt.h>
#include <dlfcn.h>
#include <torch/version.h>

#include <cstdint>
#include <optional>

#include "runtime/cublas_check.h"
#include "runtime/error.h"

// PyTorch keeps one cuBLASLt workspace per handle and stream from 2.9 on (the getters appeared
// mid-2025); before that, take one from the caching allocator per call, as ATen itself did.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
#define RA_TORCH_HAS_BLASLT_WORKSPACE 1
#else
#include <c10/cuda/CUDACachingAllocator.h>
#define RA_TORCH_HAS_BLASLT_WORKSPACE 0
#endif

namespace ra {
namespace {

// The cuBLASLt entry points are looked up in the process, not linked: the handle is LibTorch's,
// and a handle is only valid with the copy of libcublasLt that made it. Linking the toolkit's
// copy would make it the executable's own dependency, loaded first, so LibTorch's libcublas
// would bind to it whatever version the wheel pinned; a LibTorch archive that bundles cuBLASLt
// under a hashed soname would get a second copy.
#define RA_CUBLASLT_FUNCTIONS(X)          \
  X(cublasLtMatmulDescCreate)             \
  X(cublasLtMatmulDescDestroy)            \
  X(cublasLtMatmulDescSetAttribute)       \
  X(cublasLtMatrixLayoutCreate)           \
  X(cublasLtMatrixLayoutDestroy)          \
  X(cublasLtMatmulPreferenceCreate)       \
  X(cublasLtMatmulPreferenceDestroy)      \
  X(cublasLtMatmulPreferenceSetAttribute) \
  X(cublasLtMatmulAlgoGetHeuristic)       \
  X(cublasLtMatmul)

struct CublasLt {
#define RA_DECLARE(name) decltype(&::name) name = nullptr;
  RA_CUBLASLT_FUNCTIONS(RA_DECLARE)
#undef RA_DECLARE
};

// Call after LibTorch made its handle (the library is loaded by then). Throws when a function is
// missing, e.g. cuBLASLt loaded privately (RTLD_LOCAL) by a host program.
const CublasLt& cublaslt() {
  static const std::optional<CublasLt> api = []() -> std::optional<CublasLt> {
    CublasLt lt;
    bool found = true;
#define RA_LOOKUP(name)                                                      \
  lt.name = reinterpret_cast<decltype(&::name)>(dlsym(RTLD_DEFAULT, #name)); \
  found = found && lt.name != nullptr;
    RA_CUBLASLT_FUNCTIONS(RA_LOOKUP)
#undef RA_LOOKUP
    if (!found) return std::nullopt;
    return lt;
  }();
  RA_CHECK(api.has_value(),
           "cuBLASLt is not visible in this process: dlsym(RTLD_DEFAULT) misses one of "
           "cublasLtMatmul & co., which LibTorch's libcublas loads");
  return *api;
}

cudaDataType_t cuda_data_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    default:
      RA_THROW("linear_weight_bias_grad_cuda: dtype ", dtype, " is not fp16 or bf16");
  }
}

// The largest power of two up to 256 dividing the address. The heuristic assumes 256-byte
// aligned operands unless told otherwise, and could pick a kernel that needs more alignment than
// a view with a storage offset has.
uint32_t alignment_bytes(const void* ptr) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// Owns the descriptors, so a throw in the middle leaks nothing. Destroy statuses are ignored:
// a destructor must not throw, and they only free host memory.
struct LtDescriptors {
  const CublasLt& lt;
  cublasLtMatmulDesc_t matmul = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;

  explicit LtDescriptors(const CublasLt& api) : lt(api) {}
  LtDescriptors(const LtDescriptors&) = delete;
  LtDescriptors& operator=(const LtDescriptors&) = delete;
  ~LtDescriptors() {
    if (preference) lt.cublasLtMatmulPreferenceDestroy(preference);
    if (d) lt.cublasLtMatrixLayoutDestroy(d);
    if (b) lt.cublasLtMatrixLayoutDestroy(b);
    if (a) lt.cublasLtMatrixLayoutDestroy(a);
    if (matmul) lt.cublasLtMatmulDescDestroy(matmul);
  }

  template <typename T>
  void set(cublasLtMatmulDescAttributes_t attribute, const T& value) {
    RA_CUBLAS_CHECK(lt.cublasLtMatmulDescSetAttribute(matmul, attribute, &value, sizeof(value)));
  }

  template <typename T>
  void prefer(cublasLtMatmulPreferenceAttributes_t attribute, const T& value) {
    RA_CUBLAS_CHECK(
        lt.cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)));
  }
};

}  // namespace

bool linear_weight_bias_grad_cuda(const at::Tensor& dy, const at::Tensor& x,
                                  const at::Tensor& grad_weight, const at::Tensor& grad_bias) {
  const int64_t rows = x.size(0), in = x.size(1), out = dy.size(1);
  RA_CHECK(dy.is_cuda() && dy.dim() == 2 && x.dim() == 2 && dy.size(0) == rows && rows > 0 &&
               dy.is_contiguous() && x.is_contiguous() && x.device() == dy.device() &&
               x.scalar_type() == dy.scalar_type(),
           "linear_weight_bias_grad_cuda: dy ", dy.sizes(), " and x ", x.sizes(),
           " must be contiguous [rows > 0, out] and [rows, in] on one CUDA device, one dtype");
  RA_CHECK(grad_weight.sizes() == at::IntArrayRef({out, in}) &&
               grad_bias.sizes() == at::IntArrayRef({out}) && grad_weight.is_contiguous() &&
               grad_bias.is_contiguous() && grad_weight.scalar_type() == dy.scalar_type() &&
               grad_bias.scalar_type() == dy.scalar_type() && grad_weight.device() == dy.device() &&
               grad_bias.device() == dy.device(),
           "linear_weight_bias_grad_cuda: grad_weight ", grad_weight.sizes(), " and grad_bias ",
           grad_bias.sizes(), " must be contiguous [", out, ", ", in, "] and [", out,
           "] in dy's dtype on dy's device");
  const cudaDataType_t dtype = cuda_data_type(dy.scalar_type());
  const c10::cuda::CUDAGuard device_guard(dy.device());
  const cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  const CublasLt& lt = cublaslt();

  // Row-major tensors are column-major transposes: in cuBLAS terms the GEMM is
  //   D [in, out] = A [in, rows] * op(B) [rows, out],  A = x^T (ld in), B = dy^T (ld out), op = T,
  // and D read row-major is dW [out, in]. BGRADB sums op(B) over the GEMM's k = rows: dbias.
  LtDescriptors desc(lt);
  RA_CUBLAS_CHECK(lt.cublasLtMatmulDescCreate(&desc.matmul, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, cublasOperation_t{CUBLAS_OP_N});
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, cublasOperation_t{CUBLAS_OP_T});
  desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, cublasLtEpilogue_t{CUBLASLT_EPILOGUE_BGRADB});
  // The gradient takes the bias type, which by default is D's; set explicitly so it cannot drift.
  desc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(dtype));
  // Set before the heuristic: it reads the pointer's alignment.
  desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, grad_bias.data_ptr());
  RA_CUBLAS_CHECK(lt.cublasLtMatrixLayoutCreate(&desc.a, dtype, in, rows, in));
  RA_CUBLAS_CHECK(lt.cublasLtMatrixLayoutCreate(&desc.b, dtype, out, rows, out));
  RA_CUBLAS_CHECK(lt.cublasLtMatrixLayoutCreate(&desc.d, dtype, in, out, in));

#if RA_TORCH_HAS_BLASLT_WORKSPACE
  const size_t workspace_size = at::cuda::getCUDABlasLtWorkspaceSize();
  void* workspace = at::cuda::getCUDABlasLtWorkspace();
#else
  const size_t workspace_size = size_t(32) << 20;  // cuBLAS's recommendation for Hopper
  const at::DataPtr workspace_owner =
      c10::cuda::CUDACachingAllocator::get()->allocate(workspace_size);
  void* workspace = workspace_owner.get();
#endif
  RA_CUBLAS_CHECK(lt.cublasLtMatmulPreferenceCreate(&desc.preference));
  desc.prefer(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t{workspace_size});
  desc.prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_bytes(x.data_ptr()));
  desc.prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_bytes(dy.data_ptr()));
  desc.prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment_bytes(grad_weight.data_ptr()));
  desc.prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment_bytes(grad_weight.data_ptr()));

  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  const cublasStatus_t status = lt.cublasLtMatmulAlgoGetHeuristic(
      handle, desc.matmul, desc.a, desc.b, desc.d, desc.d, desc.preference, 1, &heuristic, &found);
  // NOT_SUPPORTED is how the heuristic reports that no algorithm fits these operands.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && found == 0)) {
    return false;
  }
  RA_CUBLAS_CHECK(status);

  const float alpha = 1.0f, beta = 0.0f;  // beta 0: D is written, never read (C = D)
  RA_CUBLAS_CHECK(lt.cublasLtMatmul(handle, desc.matmul, &alpha, x.data_ptr(), desc.a,
                                    dy.data_ptr(), desc.b, &beta, grad_weight.data_ptr(), desc.d,
                                    grad_weight.data_ptr(), desc.d, &heuristic.algo, workspace,
                                    workspace_size, at::cuda::getCurrentCUDAStream()));
  return true;
}

}  // namespace ra
