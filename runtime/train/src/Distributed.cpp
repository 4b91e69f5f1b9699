//===- Distributed.cpp - Data parallelism over LibTorch's c10d -----------===//
//
// The c10d headers of the torch wheel are used as they are; the Gloo
// backend's header includes gloo's own headers, which the wheel does not
// ship: they come from Debian's libgloo-dev (headers only; every symbol is
// in libtorch_cpu.so). See docs/design.md, "Data parallelism".
//
//===----------------------------------------------------------------------===//

#include "fwp/train/Distributed.h"

#include "fwp/runtime/Layer.h"

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef FWP_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#include <arpa/inet.h>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <optional>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace fwp::train {

#ifdef FWP_HAVE_NCCL
// DistributedNccl.cpp: kept apart, it needs the CUDA and NCCL headers.
c10::intrusive_ptr<c10d::Backend> makeNcclBackend(const c10::intrusive_ptr<c10d::Store> &store,
                                                  int rank, int size,
                                                  std::chrono::milliseconds timeout);
#endif

//===----------------------------------------------------------------------===//
// The environment
//===----------------------------------------------------------------------===//

namespace {

std::optional<std::string> env(const char *name) {
  const char *value = std::getenv(name);
  if (!value || !*value)
    return std::nullopt;
  return std::string(value);
}

int envInt(const char *name, int fallback, int low, int high) {
  auto text = env(name);
  if (!text)
    return fallback;
  try {
    size_t used = 0;
    long value = std::stol(*text, &used);
    if (used == text->size() && value >= low && value <= high)
      return static_cast<int>(value);
  } catch (const std::exception &) {
  }
  throw Error("environment variable " + std::string(name) + "=" + *text +
              ": expected an integer in [" + std::to_string(low) + ", " + std::to_string(high) +
              "]");
}

std::string firstLine(const std::string &text) { return text.substr(0, text.find('\n')); }

std::string describeException(const std::exception &e) {
  if (auto *c10error = dynamic_cast<const c10::Error *>(&e))
    return firstLine(c10error->what_without_backtrace());
  return firstLine(e.what());
}

} // namespace

std::chrono::milliseconds distributedTimeoutFromConfig(const Config &config) {
  const double seconds = config.getDouble("train.dist_timeout", 300.0);
  if (!(seconds > 0))
    throw Error(config.source() + ": train.dist_timeout must be a positive number of seconds");
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

bool launchedAsRank() { return env("WORLD_SIZE").has_value(); }

DistributedEnv distributedEnvFromEnvironment() {
  DistributedEnv e;
  e.worldSize = envInt("WORLD_SIZE", 1, 1, 1 << 20);
  e.rank = envInt("RANK", 0, 0, e.worldSize - 1);
  e.localRank = envInt("LOCAL_RANK", e.rank, 0, 1 << 20);
  e.masterAddr = env("MASTER_ADDR").value_or(e.masterAddr);
  e.masterPort = envInt("MASTER_PORT", e.masterPort, 1, 65535);
  if (e.worldSize > 1 && !env("RANK"))
    throw Error("WORLD_SIZE=" + std::to_string(e.worldSize) +
                " is set but RANK is not (start ranks with torchrun or --nproc)");
  return e;
}

//===----------------------------------------------------------------------===//
// ProcessGroup
//===----------------------------------------------------------------------===//

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  torch::Device device = torch::kCPU; ///< where the backend's tensors live
  std::string name;
};

ProcessGroup::ProcessGroup(const DistributedEnv &env, const torch::Device &device) : env_(env) {
  if (env_.worldSize == 1)
    return;
  impl_ = std::make_unique<Impl>();
  const std::string where = env_.masterAddr + ":" + std::to_string(env_.masterPort);
  const std::string who =
      "rank " + std::to_string(env_.rank) + " of " + std::to_string(env_.worldSize);
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(env_.masterPort);
    options.isServer = env_.rank == 0;
    options.numWorkers = env_.worldSize;
    options.waitWorkers = true;
    options.timeout = env_.timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env_.masterAddr, options);
  } catch (const std::exception &e) {
    throw Error("distributed: " + who + " could not meet the others at " + where +
                " (MASTER_ADDR:MASTER_PORT) within " +
                std::to_string(env_.timeout.count() / 1000) + " s: " + describeException(e));
  }
  try {
    if (device.is_cuda()) {
#ifdef FWP_HAVE_NCCL
      impl_->backend = makeNcclBackend(impl_->store, env_.rank, env_.worldSize, env_.timeout);
      impl_->device = device;
      impl_->name = "nccl";
#else
      throw Error("this build has no NCCL backend (CUDA training on several processes needs "
                  "fwp built with FWP_ENABLE_CUDA and nccl.h)");
#endif
    } else {
#ifdef FWP_HAVE_GLOO
      auto options = c10d::ProcessGroupGloo::Options::create(env_.timeout);
      const bool loopback = env_.masterAddr == "localhost" ||
                            env_.masterAddr.rfind("127.", 0) == 0;
      if (auto interface = fwp::train::env("GLOO_SOCKET_IFNAME"))
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*interface));
      else if (loopback)
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(
          impl_->store, env_.rank, env_.worldSize, options);
      impl_->name = "gloo";
#else
      throw Error("this build has no Gloo backend (install libgloo-dev and rebuild fwp)");
#endif
    }
  } catch (const Error &) {
    throw;
  } catch (const std::exception &e) {
    throw Error("distributed: " + who + ": could not set up the process group at " + where +
                ": " + describeException(e));
  }
}

ProcessGroup::ProcessGroup() = default;
ProcessGroup::~ProcessGroup() = default;

std::string ProcessGroup::backendName() const { return impl_ ? impl_->name : "none"; }

namespace {

/// Waits for `work`; a failure names the operation, the rank and the timeout.
void waitFor(const c10::intrusive_ptr<c10d::Work> &work, const DistributedEnv &env,
             const char *what) {
  try {
    work->wait();
  } catch (const std::exception &e) {
    throw Error("distributed: rank " + std::to_string(env.rank) + " of " +
                std::to_string(env.worldSize) + ": " + what +
                " failed: another rank has failed, or waited longer than the timeout (" +
                std::to_string(env.timeout.count() / 1000) + " s, train.dist_timeout): " +
                describeException(e));
  }
}

} // namespace

void ProcessGroup::allReduceSum(std::vector<torch::Tensor> &tensors) {
  if (!impl_ || tensors.empty())
    return;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  try {
    for (torch::Tensor &tensor : tensors) {
      std::vector<at::Tensor> one{tensor};
      works.push_back(impl_->backend->allreduce(one));
    }
  } catch (const std::exception &e) {
    throw Error("distributed: rank " + std::to_string(env_.rank) + ": all-reduce failed: " +
                describeException(e));
  }
  for (auto &work : works)
    waitFor(work, env_, "all-reduce");
}

void ProcessGroup::allReduceSum(torch::Tensor &tensor) {
  std::vector<torch::Tensor> one{tensor};
  allReduceSum(one);
}

void ProcessGroup::broadcast(std::vector<torch::Tensor> &tensors, int root) {
  if (!impl_ || tensors.empty())
    return;
  c10d::BroadcastOptions options;
  options.rootRank = root;
  for (torch::Tensor &tensor : tensors) {
    std::vector<at::Tensor> one{tensor};
    waitFor(impl_->backend->broadcast(one, options), env_, "broadcast");
  }
}

std::vector<torch::Tensor> ProcessGroup::allGather(const torch::Tensor &tensor) {
  if (!impl_)
    return {tensor};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < env_.worldSize; ++r)
    outputs[0].push_back(torch::empty_like(tensor));
  std::vector<at::Tensor> input{tensor.contiguous()};
  waitFor(impl_->backend->allgather(outputs, input), env_, "all-gather");
  return outputs[0];
}

std::vector<double> ProcessGroup::sum(const std::vector<double> &values) {
  if (!impl_ || values.empty())
    return values;
  torch::Tensor tensor =
      torch::tensor(values, torch::kDouble).to(impl_->device);
  allReduceSum(tensor);
  tensor = tensor.cpu();
  return std::vector<double>(tensor.data_ptr<double>(), tensor.data_ptr<double>() + tensor.numel());
}

void ProcessGroup::barrier() { sum({0.0}); }

//===----------------------------------------------------------------------===//
// GradientReducer
//===----------------------------------------------------------------------===//

GradientReducer::GradientReducer(std::vector<torch::Tensor> params, ProcessGroup &group,
                                 int64_t bucketBytes)
    : params_(std::move(params)), group_(group) {
  int64_t bytes = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor &p = params_[i];
    const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
    bool fresh = buckets_.empty() || bytes + size > bucketBytes;
    if (!fresh) {
      const torch::Tensor &first = params_[buckets_.back().front()];
      fresh = first.scalar_type() != p.scalar_type() || first.device() != p.device();
    }
    if (fresh) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().push_back(i);
    bytes += size;
  }
}

void GradientReducer::reduce(double divisor) {
  torch::NoGradGuard noGrad;
  if (!group_.distributed()) {
    if (divisor != 1.0)
      for (torch::Tensor &p : params_)
        if (p.grad().defined())
          p.mutable_grad().div_(divisor);
    return;
  }
  for (torch::Tensor &p : params_)
    if (!p.grad().defined())
      p.mutable_grad() = torch::zeros_like(p);
  std::vector<torch::Tensor> flats;
  for (const auto &bucket : buckets_) {
    std::vector<torch::Tensor> pieces;
    for (size_t i : bucket)
      pieces.push_back(params_[i].grad().reshape({-1}));
    flats.push_back(torch::cat(pieces));
  }
  group_.allReduceSum(flats); // every bucket in flight at once
  for (size_t b = 0; b < buckets_.size(); ++b) {
    if (divisor != 1.0)
      flats[b].div_(divisor);
    int64_t offset = 0;
    for (size_t i : buckets_[b]) {
      torch::Tensor &grad = params_[i].mutable_grad();
      grad.copy_(flats[b].narrow(0, offset, grad.numel()).view_as(grad));
      offset += grad.numel();
    }
  }
}

//===----------------------------------------------------------------------===//
// The local launcher (--nproc)
//===----------------------------------------------------------------------===//

namespace {

std::vector<pid_t> children;
volatile std::sig_atomic_t forwardedSignals = 0;

void forwardSignal(int signal) {
  ++forwardedSignals;
  for (pid_t pid : children)
    if (pid > 0)
      ::kill(pid, signal);
}

int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw Error("--nproc: cannot open a socket to find a free port");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length) == 0)
    port = ntohs(address.sin_port);
  ::close(fd);
  if (port < 0)
    throw Error("--nproc: cannot find a free port on 127.0.0.1 (set MASTER_PORT)");
  return port;
}

std::string describeStatus(int status) {
  if (WIFSIGNALED(status))
    return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

int exitCodeOf(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

} // namespace

int launchLocalRanks(int nproc, char **argv, std::chrono::milliseconds grace) {
  if (nproc < 1)
    throw Error("--nproc must be at least 1");
  const std::string port =
      env("MASTER_PORT").value_or(std::to_string(freePort()));
  const std::string addr = env("MASTER_ADDR").value_or("127.0.0.1");
  children.assign(nproc, -1);
  std::fflush(nullptr);
  for (int rank = 0; rank < nproc; ++rank) {
    pid_t pid = ::fork();
    if (pid < 0)
      throw Error("--nproc: fork failed: " + std::string(std::strerror(errno)));
    if (pid == 0) {
      // The launcher forwards terminal signals itself, once; a rank also
      // ends when the launcher dies.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", addr.c_str(), 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      ::execv("/proc/self/exe", argv);
      std::fprintf(stderr, "error: --nproc: cannot run /proc/self/exe: %s\n", std::strerror(errno));
      ::_exit(127);
    }
    children[rank] = pid;
  }
  struct sigaction action {};
  action.sa_handler = forwardSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);

  int running = nproc;
  int result = 0;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  bool terminated = false;
  while (running > 0) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, deadline ? WNOHANG : 0);
    if (pid < 0 && errno == EINTR)
      continue;
    if (pid < 0)
      break;
    if (pid == 0) { // a failure happened; the others have `grace` to end
      auto now = std::chrono::steady_clock::now();
      if (now > *deadline) {
        const int signal = terminated ? SIGKILL : SIGTERM;
        for (pid_t child : children)
          if (child > 0)
            ::kill(child, signal);
        terminated = true;
        deadline = now + std::chrono::seconds(5);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    int rank = 0;
    while (rank < nproc && children[rank] != pid)
      ++rank;
    if (rank == nproc)
      continue;
    children[rank] = -1;
    --running;
    if (exitCodeOf(status) != 0 && result == 0) {
      result = exitCodeOf(status);
      if (running > 0 && forwardedSignals == 0) {
        std::fprintf(stderr, "fwp: rank %d of %d %s; ending the other ranks\n", rank, nproc,
                     describeStatus(status).c_str());
        deadline = std::chrono::steady_clock::now() + grace;
      }
    }
  }
  return result;
}

} // namespace fwp::train
