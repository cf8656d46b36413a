# Finds what ringattn builds against. Required: LibTorch, MPI, Boost.Program_options.
# Optional, auto-detected: the CUDA toolkit (kernels) and NCCL (GPU communication).
# Sets RA_HAVE_CUDA, RA_HAVE_NCCL, RA_TORCH_HAS_CUDA.

find_package(Torch REQUIRED)
find_package(MPI REQUIRED COMPONENTS CXX)
find_package(Boost 1.74 REQUIRED COMPONENTS program_options)

# The CUDA kernels take raw pointers, so they build wherever nvcc is, even with a CPU LibTorch.
set(RA_HAVE_CUDA OFF)
if(NOT RA_ENABLE_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(RA_HAVE_CUDA ON)
  elseif(RA_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "RA_ENABLE_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER)")
  endif()
endif()

# The fused-attention fast path calls ATen's CUDA ops, so it needs a CUDA build of LibTorch.
set(RA_TORCH_HAS_CUDA OFF)
if(RA_HAVE_CUDA AND TARGET torch_cuda)
  set(RA_TORCH_HAS_CUDA ON)
endif()

set(RA_HAVE_NCCL OFF)
if(RA_HAVE_CUDA)
  find_package(NCCL)
  if(NCCL_FOUND)
    set(RA_HAVE_NCCL ON)
  endif()
endif()

message(STATUS "ringattn: Torch ${Torch_VERSION}, CUDA kernels ${RA_HAVE_CUDA}, "
               "Torch CUDA ${RA_TORCH_HAS_CUDA}, NCCL ${RA_HAVE_NCCL}")
