//===- Distributed.h - Data parallelism over LibTorch's c10d ---*- C++ -*-===//
//
// One process per device, torchrun's conventions (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT). The processes meet at a c10d
// TCPStore served by rank 0 and talk through a c10d backend: Gloo for CPU
// tensors, NCCL for CUDA tensors (docs/training.md).
//
//   ProcessGroup      rank/size and the few collectives training needs;
//                     a one-process group does no communication at all
//   GradientReducer   sums every parameter's gradient over the ranks in
//                     flat buckets, then divides by a given total
//   launchLocalRanks  `--nproc N`: runs N copies of this program on this
//                     machine with the torchrun variables set, and ends all
//                     of them when one fails
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/train/Config.h"

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace fwp::train {

/// Where this process stands in a job: from the torchrun variables, or one
/// process alone when WORLD_SIZE is unset.
struct DistributedEnv {
  int rank = 0;
  int worldSize = 1;
  int localRank = 0;
  std::string masterAddr = "127.0.0.1";
  int masterPort = 29500;
  /// A collective (or the start-up rendezvous) that waits longer than this
  /// fails; the job then ends with an error instead of hanging.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
};

/// train.dist_timeout (seconds, default 300): how long a collective may wait.
std::chrono::milliseconds distributedTimeoutFromConfig(const Config &config);

/// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; fwp::Error
/// naming the variable when one is malformed or inconsistent.
DistributedEnv distributedEnvFromEnvironment();

class ProcessGroup {
public:
  /// A group of one: every collective returns its input.
  ProcessGroup();
  /// Joins the job of `env` (blocks until every rank has arrived or the
  /// timeout passes). `device` picks the backend: Gloo for the CPU, NCCL
  /// for CUDA.
  ProcessGroup(const DistributedEnv &env, const torch::Device &device);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup &) = delete;
  ProcessGroup &operator=(const ProcessGroup &) = delete;

  int rank() const { return env_.rank; }
  int size() const { return env_.worldSize; }
  int localRank() const { return env_.localRank; }
  bool isMain() const { return env_.rank == 0; }
  bool distributed() const { return env_.worldSize > 1; }
  std::chrono::milliseconds timeout() const { return env_.timeout; }
  /// "gloo", "nccl" or "none".
  std::string backendName() const;

  /// In place: the element-wise sum over all ranks (same shapes everywhere).
  void allReduceSum(std::vector<torch::Tensor> &tensors);
  void allReduceSum(torch::Tensor &tensor);
  /// In place: every rank gets `root`'s values.
  void broadcast(std::vector<torch::Tensor> &tensors, int root = 0);
  /// Every rank's `tensor` (same shape everywhere), in rank order.
  std::vector<torch::Tensor> allGather(const torch::Tensor &tensor);
  /// Host values summed over the ranks (one small collective).
  std::vector<double> sum(const std::vector<double> &values);
  void barrier();

private:
  struct Impl;
  DistributedEnv env_;
  std::unique_ptr<Impl> impl_;
};

/// Sums the gradients of `params` over the ranks of `group`, in buckets of
/// about `bucketBytes` (one collective per bucket, all in flight at once),
/// and divides them by `divisor`. With several ranks, a parameter without a
/// gradient takes part as zeros (it gets a zero gradient), so every rank
/// sends the same buckets; alone, such a parameter keeps no gradient.
class GradientReducer {
public:
  GradientReducer(std::vector<torch::Tensor> params, ProcessGroup &group,
                  int64_t bucketBytes = 25 << 20);
  void reduce(double divisor);
  int64_t numBuckets() const { return static_cast<int64_t>(buckets_.size()); }

private:
  std::vector<torch::Tensor> params_;
  std::vector<std::vector<size_t>> buckets_; ///< indices into params_
  ProcessGroup &group_;
};

/// `--nproc N` on one machine: starts N copies of this program (same
/// arguments, /proc/self/exe) with RANK, LOCAL_RANK = 0..N-1, WORLD_SIZE = N,
/// MASTER_ADDR = 127.0.0.1 and a free MASTER_PORT (unless set), forwards
/// SIGINT/SIGTERM to them, and waits. When one fails, the others get
/// `grace` to end on their own (their collectives fail), then SIGTERM and
/// SIGKILL. Returns 0 when all succeeded, else the first failure's status
/// (128 + signal for a killed rank).
int launchLocalRanks(int nproc, char **argv, std::chrono::milliseconds grace);

/// Whether this process was started as one rank of a job (WORLD_SIZE set).
bool launchedAsRank();

} // namespace fwp::train
