//===- DistributedNccl.cpp - The NCCL backend of data parallelism ---------===//
//
// Kept apart from Distributed.cpp: ProcessGroupNCCL.hpp needs the CUDA
// runtime's and NCCL's headers, which only a CUDA build has (CMake defines
// FWP_HAVE_NCCL and compiles this file when it finds both). The symbols come
// from the wheel's libtorch_cuda, like Gloo's from libtorch_cpu.
//
//===----------------------------------------------------------------------===//

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>

namespace fwp::train {

c10::intrusive_ptr<c10d::Backend> makeNcclBackend(const c10::intrusive_ptr<c10d::Store> &store,
                                                  int rank, int size,
                                                  std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, std::move(options));
}

} // namespace fwp::train
