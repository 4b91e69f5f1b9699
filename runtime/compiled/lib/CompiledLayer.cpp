//===- CompiledLayer.cpp - Layers compiled by fwp-compile -----------------===//

#include "fwp/runtime/CompiledLayer.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <torch/autograd.h>

#include "fwp/runtime/ArtifactContainer.h"
#include "fwp/runtime/HostBufferCache.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace fwp {
namespace {

using nlohmann::json;

constexpr int kFormatVersion = kArtifactFormatVersion;

/// Reads manifest fields with errors that name the file and the field.
class ManifestReader {
public:
  explicit ManifestReader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string &field, const std::string &what) const {
    throw Error(path_ + ": manifest field '" + field + "' " + what);
  }
  const json &member(const json &object, const std::string &field,
                     const std::string &key) const {
    if (!object.is_object())
      fail(field, "must be an object");
    auto it = object.find(key);
    if (it == object.end())
      fail(field + "." + key, "is missing");
    return *it;
  }
  std::string string(const json &object, const std::string &field,
                     const std::string &key) const {
    const json &value = member(object, field, key);
    if (!value.is_string())
      fail(field + "." + key, "must be a string");
    return value.get<std::string>();
  }
  std::vector<int64_t> shape(const json &value, const std::string &field) const {
    if (!value.is_array())
      fail(field, "must be an array of integers");
    std::vector<int64_t> out;
    for (const json &entry : value) {
      if (!entry.is_number_integer())
        fail(field, "must be an array of integers");
      int64_t size = entry.get<int64_t>();
      if (size == 0 || size < -1)
        fail(field, "holds the size " + std::to_string(size));
      out.push_back(size);
    }
    return out;
  }
  const json &array(const json &object, const std::string &field,
                    const std::string &key) const {
    const json &value = member(object, field, key);
    if (!value.is_array())
      fail(field + "." + key, "must be an array");
    return value;
  }

private:
  std::string path_;
};

std::string shapeText(const std::vector<int64_t> &shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i)
    os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

/// A manifest shape written with the layer's dim names where a size is a
/// dim's value (the compiler keeps dim values distinct); scalars are [1].
TensorSpec specFromShape(const std::string &name, const std::vector<int64_t> &shape,
                         const Dims &dims) {
  TensorSpec spec{name, {}};
  for (int64_t size : shape) {
    std::string entry = std::to_string(size);
    for (const auto &[dimName, value] : dims)
      if (value == size)
        entry = dimName;
    spec.shape.push_back(entry);
  }
  if (spec.shape.empty())
    spec.shape.push_back("1");
  return spec;
}

/// A memref descriptor (MLIR's C interface) for a rank-R buffer:
/// {T *allocated, T *aligned, int64_t offset, int64_t sizes[R], int64_t strides[R]}.
class Descriptor {
public:
  Descriptor(void *data, const std::vector<int64_t> &sizes) {
    words_.resize(3 + 2 * sizes.size());
    auto address = reinterpret_cast<int64_t>(data);
    words_[0] = address;
    words_[1] = address;
    words_[2] = 0;
    int64_t stride = 1;
    for (size_t i = sizes.size(); i-- > 0;) {
      words_[3 + i] = sizes[i];
      words_[3 + sizes.size() + i] = stride;
      stride *= sizes[i];
    }
  }
  void *get() { return words_.data(); }

private:
  std::vector<int64_t> words_;
};

/// Elements of one sequence's block of `arg` when it holds `steps` steps
/// (the manifest writes the time dim of a time-major argument as -1).
int64_t blockElements(const KernelArg &arg, int64_t steps) {
  int64_t elements = 1;
  for (int64_t size : arg.shape)
    elements *= size == -1 ? steps : size;
  return elements;
}

bool timeMajor(const KernelArg &arg) { return !arg.shape.empty() && arg.shape[0] == -1; }

/// Where the values of one kernel argument live: a contiguous tensor of one
/// block per (batch, head) pair ([B, H, ...]) or per head ([H, ...],
/// params), where a time-major block holds `steps` steps (-1: the call's)
/// and a call may start at any of them; or one block that every call uses
/// from its start (a thread's scratch).
struct Buffer {
  enum class Index { Pair, Head, Shared };
  torch::Tensor tensor;
  Index index = Index::Pair;
  int64_t steps = -1;

  /// Where `arg`'s values for sequence `pair` start at step `firstStep`.
  char *at(const KernelArg &arg, int64_t pair, int64_t heads, int64_t callSteps,
           int64_t firstStep = 0) const {
    int64_t block = blockElements(arg, steps == -1 ? callSteps : steps);
    int64_t offset = 0;
    if (index != Index::Shared) {
      offset = (index == Index::Pair ? pair : pair % heads) * block;
      if (timeMajor(arg))
        offset += firstStep * blockElements(arg, 1);
    }
    return static_cast<char *>(tensor.data_ptr()) + offset * tensor.element_size();
  }
};

/// The buffer of a seq input or a param (per head), or none for other roles.
std::optional<Buffer> inputBuffer(const KernelArg &arg, const TensorMap &inputs) {
  if (arg.role != "seq" && arg.role != "param")
    return std::nullopt;
  return Buffer{inputs.at(arg.name).detach().contiguous(),
                arg.role == "param" ? Buffer::Index::Head : Buffer::Index::Pair};
}

/// Calls `kernel` on one sequence for `steps` steps; `data[i]` is where
/// argument i's values start.
void callKernel(const CpuKernel &kernel, const std::vector<char *> &data, int64_t steps) {
  std::vector<Descriptor> descriptors;
  descriptors.reserve(kernel.args.size());
  std::vector<void *> pointers;
  for (size_t i = 0; i < kernel.args.size(); ++i) {
    std::vector<int64_t> sizes = kernel.args[i].shape;
    for (int64_t &size : sizes)
      if (size == -1)
        size = steps;
    descriptors.emplace_back(data[i], sizes);
    pointers.push_back(descriptors.back().get());
  }
  kernel.entry(steps, pointers.data());
}

/// Runs `kernel` over every (batch, head) pair in parallel.
void runKernel(const CpuKernel &kernel, const std::vector<Buffer> &buffers,
               int64_t batch, int64_t heads, int64_t steps) {
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<char *> data(kernel.args.size());
    for (int64_t pair = begin; pair < end; ++pair) {
      for (size_t i = 0; i < kernel.args.size(); ++i)
        data[i] = buffers[i].at(kernel.args[i], pair, heads, steps);
      callKernel(kernel, data, steps);
    }
  });
}

/// Shape of a [B, H, T, ...] / [B, H, ...] / [H, ...] tensor for a kernel
/// argument of manifest shape `shape`; scalars per step are [.., T, 1].
std::vector<int64_t> tensorShape(const KernelArg &arg, int64_t batch,
                                 int64_t heads, int64_t steps) {
  std::vector<int64_t> out;
  if (arg.role != "param" && arg.role != "grad_param")
    out.push_back(batch);
  out.push_back(heads);
  for (int64_t size : arg.shape)
    out.push_back(size == -1 ? steps : size);
  if (arg.shape.size() == 1 && arg.shape[0] == -1)
    out.push_back(1); // a scalar per step
  return out;
}

/// The buffers of a forward kernel's call (forward or forward_train) over
/// the whole sequence; `results` gets "final.<state>" (in/out: a copy of the
/// initial state, overwritten with the final one) and every output and tape
/// entry by name.
std::vector<Buffer> forwardBuffers(const Artifact &artifact, const CpuKernel &kernel,
                                   const TensorMap &inputs, int64_t batch, int64_t heads,
                                   int64_t steps, TensorMap &results,
                                   const TensorMap &grads = {}) {
  auto options = torch::TensorOptions().dtype(artifact.dtype());
  for (const TensorSpec &state : artifact.signature().states) {
    std::vector<int64_t> shape{batch, heads};
    for (int64_t size : resolveShape(state, artifact.dims()))
      shape.push_back(size);
    results[finalName(state.name)] = initialState(inputs, state.name, shape, options);
  }
  std::vector<Buffer> buffers;
  for (const KernelArg &arg : kernel.args) {
    Buffer buffer;
    if (std::optional<Buffer> input = inputBuffer(arg, inputs)) {
      buffer = *input;
    } else if (arg.role == "state") {
      buffer.tensor = results.at(finalName(arg.name));
    } else if (arg.role == "output" || arg.role == "tape") {
      buffer.tensor = emptyReusingMemory(tensorShape(arg, batch, heads, steps), options);
      results[arg.name] = buffer.tensor;
    } else if (arg.role == "grad_output") {
      // The energy form's training forward reads the output gradients.
      auto grad = grads.find("grad." + arg.name);
      buffer.tensor = grad != grads.end() && grad->second.defined()
                          ? contiguousReusingMemory(grad->second.detach().to(artifact.dtype()))
                          : torch::zeros(tensorShape(arg, batch, heads, steps), options);
    } else {
      throw Error(artifact.path() + ": kernel " + kernel.symbol +
                  " has an argument of role '" + arg.role + "' in a forward kernel");
    }
    buffers.push_back(std::move(buffer));
  }
  return buffers;
}

/// The forward pass on CPU: runs `kernel` (forward or forward_train) and
/// returns "y", "final.<state>" and, for forward_train, the tape by name.
TensorMap runCpuForward(const Artifact &artifact, const CpuKernel &kernel,
                        const TensorMap &inputs, int64_t batch, int64_t heads,
                        int64_t steps, const TensorMap &grads) {
  TensorMap results;
  std::vector<Buffer> buffers =
      forwardBuffers(artifact, kernel, inputs, batch, heads, steps, results, grads);
  runKernel(kernel, buffers, batch, heads, steps);
  return results;
}

/// The energy form's deferred products over a whole call on CPU
/// (Artifact::backwardDeferred): the weight starts from the call's initial
/// state, `results` holds the backward's `deferred.*`; adds the kernel's
/// gradients into `results`.
void runDeferredCpu(const Artifact &artifact, const CpuKernel &kernel, const TensorMap &inputs,
                    TensorMap &results, int64_t batch, int64_t heads, int64_t steps) {
  auto options = torch::TensorOptions().dtype(artifact.dtype());
  std::vector<Buffer> buffers;
  std::vector<std::pair<std::string, torch::Tensor>> gradients;
  for (const KernelArg &arg : kernel.args) {
    Buffer buffer;
    std::vector<int64_t> shape = tensorShape(arg, batch, heads, steps);
    if (std::optional<Buffer> input = inputBuffer(arg, inputs)) {
      buffer = *input;
    } else if (arg.role == "state") {
      buffer.tensor = initialState(inputs, arg.name, shape, options);
    } else if (arg.role == "deferred") {
      buffer.tensor = results.at(arg.name);
    } else if (arg.role == "grad_seq") {
      buffer.tensor = torch::empty(shape, options);
      gradients.emplace_back("grad." + arg.name, buffer.tensor);
    } else {
      throw Error(artifact.path() + ": role '" + arg.role + "' in the deferred kernel");
    }
    buffers.push_back(std::move(buffer));
  }
  runKernel(kernel, buffers, batch, heads, steps);
  for (const auto &[name, gradient] : gradients)
    results.at(name).add_(gradient);
}

/// The backward pass on CPU (see runCompiledBackward); `forwardResults` and
/// `grads` are already checked and in the artifact's dtype.
TensorMap runCpuBackward(const Artifact &artifact, const TensorMap &inputs,
                         const TensorMap &forwardResults, const TensorMap &grads,
                         int64_t batch, int64_t heads, int64_t steps) {
  auto options = torch::TensorOptions().dtype(artifact.dtype());
  TensorMap results;
  std::vector<Buffer> buffers;
  const CpuKernel &kernel = artifact.backward();
  for (const KernelArg &arg : kernel.args) {
    Buffer buffer;
    std::vector<int64_t> shape = tensorShape(arg, batch, heads, steps);
    if (std::optional<Buffer> input = inputBuffer(arg, inputs)) {
      buffer = *input;
    } else if (arg.role == "tape") {
      buffer.tensor = forwardResults.at(arg.name).contiguous();
    } else if (arg.role == "grad_output") {
      auto grad = grads.find("grad." + arg.name);
      buffer.tensor = grad != grads.end() ? contiguousReusingMemory(grad->second)
                                          : torch::zeros(shape, options);
    } else if (arg.role == "state") {
      // The backward rebuilds the states in place: start from a copy.
      buffer.tensor =
          forwardResults.at(finalName(arg.name)).clone(at::MemoryFormat::Contiguous);
    } else if (arg.role == "grad_state") {
      // In/out: the final state's gradient in, the initial state's out.
      auto grad = grads.find("grad." + finalName(arg.name));
      buffer.tensor = grad != grads.end()
                          ? grad->second.clone(at::MemoryFormat::Contiguous).view(shape)
                          : torch::zeros(shape, options);
      results["grad." + initName(arg.name)] = buffer.tensor;
    } else if (arg.role == "grad_param") {
      // One accumulator per (batch, head); summed over the batch below.
      std::vector<int64_t> accumulatorShape{batch, heads};
      accumulatorShape.insert(accumulatorShape.end(), arg.shape.begin(), arg.shape.end());
      buffer.tensor = torch::zeros(accumulatorShape, options);
      results["grad." + arg.name] = buffer.tensor;
    } else if (arg.role == "grad_seq") {
      buffer.tensor = emptyReusingMemory(shape, options);
      results["grad." + arg.name] = buffer.tensor;
    } else if (arg.role == "energy") {
      buffer.tensor = initialEnergy(arg.name, shape, forwardResults, grads);
    } else if (arg.role == "deferred") {
      buffer.tensor = torch::empty(shape, options);
      results[arg.name] = buffer.tensor;
    } else {
      throw Error(artifact.path() + ": role '" + arg.role + "' in the backward kernel");
    }
    buffers.push_back(std::move(buffer));
  }
  runKernel(kernel, buffers, batch, heads, steps);
  for (const KernelArg &arg : kernel.args)
    if (arg.role == "grad_param")
      results["grad." + arg.name] = results["grad." + arg.name].sum(0);
  if (const CpuKernel *deferred = artifact.backwardDeferred())
    runDeferredCpu(artifact, *deferred, inputs, results, batch, heads, steps);
  return results;
}

/// Validates one call's inputs against the artifact and picks its kernels:
/// the CUDA kernels for the tensors' device (null on CPU).
struct PreparedCall {
  CallShape shape;
  const cuda::KernelBundle *cuda = nullptr;
};

PreparedCall prepareCall(const Artifact &artifact, const TensorMap &inputs) {
  PreparedCall prepared;
  prepared.shape = validateInputs(artifact.signature(), artifact.dims(), inputs);
  const CallShape &call = prepared.shape;
  if (call.dtype != artifact.dtype())
    throw Error(artifact.path() + ": the layer was compiled for " +
                (artifact.dtype() == torch::kFloat ? "float32" : "float64") +
                " tensors, got " + c10::toString(call.dtype));
  if (call.device.is_cuda()) {
    if (!artifact.hasCuda())
      throw Error(artifact.path() + ": this artifact has CPU kernels only; got tensors on " +
                  call.device.str() + " (recompile it with fwp-compile --cuda=on)");
    prepared.cuda = &artifact.cudaKernels(cuda::deviceLimits(call.device.index()).chip);
  } else if (!call.device.is_cpu()) {
    throw Error(artifact.path() + ": compiled layers run on CPU or CUDA tensors, got " +
                call.device.str());
  }
  return prepared;
}

/// The call's artifact and the order of its autograd inputs.
struct CallContext {
  std::shared_ptr<const Artifact> artifact;
  std::vector<std::string> inputNames;
  std::vector<std::string> savedNames; ///< what the forward kept (tape or checkpoints)
};

/// Carries the call's context through the autograd graph (IValue capsule).
struct CallHolder : torch::CustomClassHolder {
  explicit CallHolder(std::shared_ptr<CallContext> call) : call(std::move(call)) {}
  std::shared_ptr<CallContext> call;
};

/// The inputs of steps [begin, end): seq tensors sliced in time, params as
/// they are, the given states as initial states.
TensorMap segmentInputs(const Artifact &artifact, const TensorMap &inputs, int64_t begin,
                        int64_t end, const TensorMap &states) {
  TensorMap out;
  for (const TensorSpec &spec : artifact.signature().seq)
    out[spec.name] = inputs.at(spec.name).narrow(2, begin, end - begin).contiguous();
  for (const TensorSpec &spec : artifact.signature().params)
    if (auto it = inputs.find(spec.name); it != inputs.end())
      out[spec.name] = it->second;
  for (const auto &[name, state] : states)
    out[initName(name)] = state;
  return out;
}

/// Checkpoint names in the saved map: the states at the start of segment k.
std::string checkpointName(size_t segment, const std::string &state) {
  return "checkpoint." + std::to_string(segment) + "." + state;
}

/// The training forward of a checkpointed layer on CPU: the plain forward
/// kernel, one (batch, head) sequence at a time through all its segments,
/// copying the states at each segment's start into the checkpoints. The
/// inputs and outputs are read and written in place (no per-segment slices).
TensorMap checkpointedForwardCpu(const Artifact &artifact, const TensorMap &inputs,
                                 const CallShape &shape, std::vector<std::string> &savedNames) {
  const CpuKernel &kernel = artifact.forward();
  int64_t every = artifact.checkpointEvery();
  int64_t segments = (shape.steps + every - 1) / every;
  TensorMap out;
  std::vector<Buffer> buffers =
      forwardBuffers(artifact, kernel, inputs, shape.batch, shape.heads, shape.steps, out);
  // Per state, one [B, H, ...] tensor per segment (separate tensors: the
  // torch.ops.fwp operators return them, and outputs must not alias).
  std::map<std::string, std::vector<torch::Tensor>> checkpoints;
  for (const KernelArg &arg : kernel.args)
    if (arg.role == "state") {
      const torch::Tensor &final = out.at(finalName(arg.name));
      for (int64_t segment = 0; segment < segments; ++segment)
        checkpoints[arg.name].push_back(torch::empty_like(final));
    }
  at::parallel_for(0, shape.batch * shape.heads, 1, [&](int64_t first, int64_t last) {
    std::vector<char *> data(kernel.args.size());
    for (int64_t pair = first; pair < last; ++pair)
      for (int64_t segment = 0; segment < segments; ++segment) {
        int64_t begin = segment * every, steps = std::min(shape.steps, begin + every) - begin;
        for (size_t i = 0; i < kernel.args.size(); ++i) {
          const KernelArg &arg = kernel.args[i];
          data[i] = buffers[i].at(arg, pair, shape.heads, shape.steps, begin);
          if (arg.role == "state") {
            const torch::Tensor &checkpoint = checkpoints.at(arg.name)[segment];
            int64_t bytes = blockElements(arg, 0) * checkpoint.element_size();
            std::memcpy(static_cast<char *>(checkpoint.data_ptr()) + pair * bytes, data[i],
                        bytes);
          }
        }
        callKernel(kernel, data, steps);
      }
  });
  for (const auto &[state, storage] : checkpoints)
    for (int64_t segment = 0; segment < segments; ++segment) {
      out[checkpointName(segment, state)] = storage[segment];
      savedNames.push_back(checkpointName(segment, state));
    }
  return out;
}

/// The backward of a checkpointed layer on CPU, one (batch, head) sequence
/// at a time from its last segment to its first: forward_train recomputes
/// the segment from its checkpoint into a scratch tape of this thread, and
/// the backward kernel runs over it at once, while the tape is in cache.
/// The states' gradients and the params' accumulators carry over from
/// segment to segment in place; the sequences' gradients are written in
/// place.
TensorMap checkpointedBackwardCpu(const Artifact &artifact, const TensorMap &inputs,
                                  const CallShape &shape, const TensorMap &saved,
                                  const TensorMap &grads) {
  const CpuKernel &train = artifact.forwardTrain(), &backward = artifact.backward();
  auto options = torch::TensorOptions().dtype(artifact.dtype());
  int64_t every = artifact.checkpointEvery();
  int64_t segments = (shape.steps + every - 1) / every;
  TensorMap out;
  // What every thread shares: the inputs, the gradients in and out.
  auto shared = [&](const KernelArg &arg) -> std::optional<Buffer> {
    Buffer buffer;
    if (std::optional<Buffer> input = inputBuffer(arg, inputs)) {
      buffer = *input;
    } else if (arg.role == "grad_output") {
      torch::Tensor &grad = out["grad_output." + arg.name];
      if (!grad.defined()) {
        auto given = grads.find("grad." + arg.name);
        grad = given != grads.end() && given->second.defined()
                   ? contiguousReusingMemory(given->second.detach().to(artifact.dtype()))
                   : torch::zeros(tensorShape(arg, shape.batch, shape.heads, shape.steps),
                                  options);
      }
      buffer.tensor = grad;
    } else if (arg.role == "grad_state") {
      // In/out across the segments: the final state's gradient in, the
      // initial state's out.
      torch::Tensor &grad = out["grad." + initName(arg.name)];
      std::vector<int64_t> size = tensorShape(arg, shape.batch, shape.heads, shape.steps);
      auto given = grads.find("grad." + finalName(arg.name));
      grad = given != grads.end() && given->second.defined()
                 ? given->second.detach().to(artifact.dtype()).clone(
                       at::MemoryFormat::Contiguous).view(size)
                 : torch::zeros(size, options);
      buffer.tensor = grad;
    } else if (arg.role == "grad_param") {
      // One accumulator per (batch, head); summed over the batch below.
      std::vector<int64_t> size{shape.batch, shape.heads};
      size.insert(size.end(), arg.shape.begin(), arg.shape.end());
      buffer.tensor = out["grad." + arg.name] = torch::zeros(size, options);
    } else if (arg.role == "grad_seq") {
      buffer.tensor = out["grad." + arg.name] = emptyReusingMemory(
          tensorShape(arg, shape.batch, shape.heads, shape.steps), options);
    } else {
      return std::nullopt;
    }
    return buffer;
  };
  std::vector<std::optional<Buffer>> trainShared, backwardShared;
  for (const KernelArg &arg : train.args)
    trainShared.push_back(arg.role == "grad_output" ? shared(arg) : inputBuffer(arg, inputs));
  for (const KernelArg &arg : backward.args)
    backwardShared.push_back(shared(arg));
  // Energy form: per "energy" argument of the backward, the indices of its
  // weight's gradient (backward) and state (forward_train) arguments.
  struct EnergyArgs {
    size_t energy, grad, state;
  };
  std::vector<EnergyArgs> energyArgs;
  for (size_t i = 0; i < backward.args.size(); ++i) {
    if (backward.args[i].role != "energy")
      continue;
    auto find = [&](const CpuKernel &kernel, const std::string &role) {
      for (size_t j = 0; j < kernel.args.size(); ++j)
        if (kernel.args[j].role == role && kernel.args[j].name == backward.args[i].name)
          return j;
      throw Error(artifact.path() + ": energy '" + backward.args[i].name + "' has no " + role +
                  " argument in kernel " + kernel.symbol);
    };
    energyArgs.push_back({i, find(backward, "grad_state"), find(train, "state")});
  }

  // The deferred products' kernel (Artifact::backwardDeferred): per
  // gradient it yields, its argument and the backward's of the same input.
  const CpuKernel *deferred = artifact.backwardDeferred();
  struct DeferredGradient {
    size_t deferred, backward;
  };
  std::vector<DeferredGradient> deferredGradients;
  if (deferred)
    for (size_t i = 0; i < deferred->args.size(); ++i) {
      if (deferred->args[i].role != "grad_seq")
        continue;
      size_t j = 0;
      while (j < backward.args.size() && !(backward.args[j].role == "grad_seq" &&
                                           backward.args[j].name == deferred->args[i].name))
        ++j;
      if (j == backward.args.size())
        throw Error(artifact.path() + ": the deferred kernel's gradient '" +
                    deferred->args[i].name + "' is not one of the backward's");
      deferredGradients.push_back({i, j});
    }
  // A state at the start of `segment` for sequence `pair`: its checkpoint.
  auto copyCheckpoint = [&](const KernelArg &arg, char *into, int64_t elementSize,
                            int64_t segment, int64_t pair) {
    int64_t bytes = blockElements(arg, 0) * elementSize;
    auto checkpoint = saved.find(checkpointName(segment, arg.name));
    if (checkpoint == saved.end())
      std::memset(into, 0, bytes);
    else
      std::memcpy(into, static_cast<const char *>(checkpoint->second.data_ptr()) + pair * bytes,
                  bytes);
  };

  // The energy form's E starts each span from rowsum(G (.) W_end): with a
  // gradient of the final state, G is of order 1 at the last step while
  // a (.) da is of the order of the decay there, and the cancellation
  // between them in f32 would stay in E for the whole last segment. The
  // last step runs as a span of its own, so that it stays in that step's
  // decay gradient (docs/design.md, "Accuracy").
  bool splitLastStep = false;
  if (!energyArgs.empty())
    for (const KernelArg &arg : backward.args)
      if (arg.role == "grad_state")
        if (auto grad = grads.find("grad." + finalName(arg.name));
            grad != grads.end() && grad->second.defined())
          splitLastStep = true;

  at::parallel_for(0, shape.batch * shape.heads, 1, [&](int64_t first, int64_t last) {
    // This thread's scratch, one segment long: forward_train's states,
    // outputs and tape ("<role>.<name>"), and the states the backward
    // rebuilds in place.
    TensorMap scratch;
    auto local = [&](const KernelArg &arg, const std::string &role) {
      torch::Tensor &tensor = scratch[role + "." + arg.name];
      if (!tensor.defined())
        tensor = torch::empty({blockElements(arg, every)}, options);
      return Buffer{tensor, Buffer::Index::Shared, every};
    };
    std::vector<Buffer> trainBuffers, backwardBuffers;
    for (size_t i = 0; i < train.args.size(); ++i)
      trainBuffers.push_back(trainShared[i] ? *trainShared[i]
                                            : local(train.args[i], train.args[i].role));
    for (size_t i = 0; i < backward.args.size(); ++i) {
      const KernelArg &arg = backward.args[i];
      if (backwardShared[i])
        backwardBuffers.push_back(*backwardShared[i]);
      else if (arg.role == "tape")
        backwardBuffers.push_back(local(arg, "tape"));
      else if (arg.role == "state")
        backwardBuffers.push_back(local(arg, "rebuilt"));
      else if (arg.role == "energy")
        backwardBuffers.push_back(local(arg, "energy"));
      else if (arg.role == "deferred")
        backwardBuffers.push_back(local(arg, "deferred"));
      else
        throw Error(artifact.path() + ": role '" + arg.role + "' in the backward kernel");
    }
    // The deferred products' kernel: the segment's checkpoint, the
    // backward's `deferred.*`, gradients to add to the backward's.
    std::vector<Buffer> deferredBuffers;
    if (deferred)
      for (const KernelArg &arg : deferred->args) {
        if (std::optional<Buffer> input = inputBuffer(arg, inputs))
          deferredBuffers.push_back(*input);
        else if (arg.role == "state" || arg.role == "deferred" || arg.role == "grad_seq")
          deferredBuffers.push_back(local(arg, arg.role == "grad_seq" ? "deferred_grad"
                                              : arg.role == "state" ? "deferred_state"
                                                                    : "deferred"));
        else
          throw Error(artifact.path() + ": role '" + arg.role + "' in the deferred kernel");
      }
    std::vector<char *> deferredData(deferred ? deferred->args.size() : 0);
    std::vector<char *> trainData(train.args.size()), backwardData(backward.args.size());
    // Fills a kernel's state argument with the state at a span's start.
    using StateSource = std::function<void(const KernelArg &, char *, int64_t)>;
    // forward_train over `steps` steps from `begin`, from `initial`.
    auto runTrain = [&](int64_t pair, int64_t begin, int64_t steps, const StateSource &initial) {
      for (size_t i = 0; i < train.args.size(); ++i) {
        const KernelArg &arg = train.args[i];
        trainData[i] = trainBuffers[i].at(arg, pair, shape.heads, shape.steps, begin);
        if (arg.role == "state")
          initial(arg, trainData[i], trainBuffers[i].tensor.element_size());
      }
      callKernel(train, trainData, steps);
    };
    // One span: its tape (forward_train), the backward over it, then the
    // deferred products.
    auto runSpan = [&](int64_t pair, int64_t begin, int64_t steps, const StateSource &initial) {
      runTrain(pair, begin, steps, initial);
      for (size_t i = 0; i < backward.args.size(); ++i) {
        const KernelArg &arg = backward.args[i];
        backwardData[i] = backwardBuffers[i].at(arg, pair, shape.heads, shape.steps, begin);
        if (arg.role == "state")
          std::memcpy(backwardData[i],
                      scratch.at("state." + arg.name).data_ptr(),
                      blockElements(arg, 0) * backwardBuffers[i].tensor.element_size());
      }
      // E = rowsum(adj(W) (.) W) at the span's end: the gradient carried in
      // from the later spans and forward_train's final state (initialEnergy's
      // sum, here on this thread's buffers: torch calls per sequence and
      // segment would cost more than the kernels at d = 16).
      for (const EnergyArgs &e : energyArgs)
        AT_DISPATCH_FLOATING_TYPES(artifact.dtype(), "fwp_energy", [&] {
          auto *energy = reinterpret_cast<scalar_t *>(backwardData[e.energy]);
          auto *grad = reinterpret_cast<const scalar_t *>(backwardData[e.grad]);
          auto *weight = reinterpret_cast<const scalar_t *>(trainData[e.state]);
          int64_t rows = blockElements(backward.args[e.energy], 0);
          int64_t columns = blockElements(backward.args[e.grad], 0) / rows;
          for (int64_t row = 0; row < rows; ++row) {
            scalar_t sum = 0;
            for (int64_t column = 0; column < columns; ++column)
              sum += grad[row * columns + column] * weight[row * columns + column];
            energy[row] = sum;
          }
        });
      callKernel(backward, backwardData, steps);
      if (!deferred)
        return;
      for (size_t i = 0; i < deferred->args.size(); ++i) {
        const KernelArg &arg = deferred->args[i];
        deferredData[i] = deferredBuffers[i].at(arg, pair, shape.heads, shape.steps, begin);
        if (arg.role == "state")
          initial(arg, deferredData[i], deferredBuffers[i].tensor.element_size());
      }
      callKernel(*deferred, deferredData, steps);
      for (const DeferredGradient &g : deferredGradients)
        AT_DISPATCH_FLOATING_TYPES(artifact.dtype(), "fwp_deferred", [&] {
          const KernelArg &arg = deferred->args[g.deferred];
          auto *into = reinterpret_cast<scalar_t *>(backwardShared[g.backward]->at(
              backward.args[g.backward], pair, shape.heads, shape.steps, begin));
          auto *from = reinterpret_cast<const scalar_t *>(deferredData[g.deferred]);
          for (int64_t i = 0, n = blockElements(arg, steps); i < n; ++i)
            into[i] += from[i];
        });
    };
    for (int64_t pair = first; pair < last; ++pair)
      for (int64_t segment = segments - 1; segment >= 0; --segment) {
        int64_t begin = segment * every, steps = std::min(shape.steps, begin + every) - begin;
        StateSource fromCheckpoint = [&](const KernelArg &arg, char *into, int64_t size) {
          copyCheckpoint(arg, into, size, segment, pair);
        };
        if (segment == segments - 1 && splitLastStep && steps > 1) {
          // The last step as a span of its own, from the state before it
          // (forward_train's final state over the other steps).
          runTrain(pair, begin, steps - 1, fromCheckpoint);
          for (size_t i = 0; i < train.args.size(); ++i)
            if (train.args[i].role == "state") {
              torch::Tensor &kept = scratch["split." + train.args[i].name];
              int64_t bytes = blockElements(train.args[i], 0) *
                              trainBuffers[i].tensor.element_size();
              if (!kept.defined())
                kept = torch::empty({bytes}, torch::kUInt8);
              std::memcpy(kept.data_ptr(), trainData[i], bytes);
            }
          runSpan(pair, begin + steps - 1, 1, [&](const KernelArg &arg, char *into, int64_t size) {
            std::memcpy(into, scratch.at("split." + arg.name).data_ptr(),
                        blockElements(arg, 0) * size);
          });
          --steps;
        }
        runSpan(pair, begin, steps, fromCheckpoint);
      }
  });
  for (const KernelArg &arg : backward.args)
    if (arg.role == "grad_param")
      out["grad." + arg.name] = out["grad." + arg.name].sum(0);
  TensorMap gradients;
  for (const auto &[name, tensor] : inputs)
    gradients["grad." + name] = out.at("grad." + name);
  return gradients;
}

/// The forward of a call that needs gradients: "y", "final.<state>" and
/// what the backward needs kept. Without checkpoints: forward_train and its
/// tape. With checkpoints every C steps: the plain forward segment by
/// segment, keeping only the states at each segment's start (the backward
/// recomputes one segment's tape at a time): on CPU one sequence at a time
/// (checkpointedForwardCpu), on CUDA all sequences a segment at a time.
TensorMap trainForward(const Artifact &artifact, const TensorMap &inputs, int64_t steps,
                       std::vector<std::string> &savedNames) {
  const LayerSignature &signature = artifact.signature();
  int64_t every = artifact.checkpointEvery();
  if (every <= 0) {
    TensorMap results = runCompiledForward(artifact, inputs, /*train=*/true);
    for (const TensorSpec &spec : artifact.tape())
      savedNames.push_back(spec.name);
    return results;
  }
  PreparedCall call = prepareCall(artifact, inputs);
  if (!call.cuda)
    return checkpointedForwardCpu(artifact, inputs, call.shape, savedNames);
  // Every segment's start is kept, the first one too (zero without an
  // initial state); a copy, so that no kept tensor aliases an input.
  TensorMap states, out;
  auto shapes = compiledForwardShapes(artifact, call.shape.batch, call.shape.heads, steps, false);
  auto options = inputs.at(signature.seq.front().name).options();
  for (size_t i = 0; i < signature.states.size(); ++i) {
    const std::string &name = signature.states[i].name;
    auto init = inputs.find(initName(name));
    states[name] = init != inputs.end() ? init->second.detach().clone()
                                        : torch::zeros(shapes[1 + i].second, options);
  }
  std::vector<torch::Tensor> ys;
  for (int64_t begin = 0, segment = 0; begin < steps; begin += every, ++segment) {
    int64_t end = std::min(steps, begin + every);
    for (const auto &[name, state] : states) {
      out[checkpointName(segment, name)] = state;
      savedNames.push_back(checkpointName(segment, name));
    }
    TensorMap results = runCompiledForward(
        artifact, segmentInputs(artifact, inputs, begin, end, states), /*train=*/false);
    ys.push_back(results.at("y"));
    for (const TensorSpec &state : signature.states)
      states[state.name] = results.at(finalName(state.name));
  }
  out["y"] = ys.size() == 1 ? ys[0] : torch::cat(ys, 2);
  for (const TensorSpec &state : signature.states)
    out[finalName(state.name)] = states.at(state.name);
  return out;
}

/// The backward of a call: `saved` holds "final.<state>" and what
/// trainForward kept, `grads` "grad.y" and "grad.final.<state>". Returns
/// "grad.<input>" for every tensor of `inputs`.
TensorMap trainBackward(const Artifact &artifact, const TensorMap &inputs, int64_t steps,
                        const TensorMap &saved, const TensorMap &grads) {
  const LayerSignature &signature = artifact.signature();
  int64_t every = artifact.checkpointEvery();
  if (every <= 0)
    return runCompiledBackward(artifact, inputs, saved, grads);
  if (PreparedCall call = prepareCall(artifact, inputs); !call.cuda)
    return checkpointedBackwardCpu(artifact, inputs, call.shape, saved, grads);
  // CUDA: segments from the last to the first, all sequences at once:
  // recompute the segment's tape from its checkpoint (forward_train), then
  // run the backward over it, carrying the states' gradients into the
  // segment before.
  int64_t segments = (steps + every - 1) / every;
  TensorMap carried; // "grad.final.<state>"
  for (const TensorSpec &state : signature.states)
    if (auto grad = grads.find("grad." + finalName(state.name)); grad != grads.end())
      carried[grad->first] = grad->second;
  // As on CPU (checkpointedBackwardCpu): with the energy form and a gradient
  // of the final state, the last step is a span of its own.
  bool energyForm = std::any_of(artifact.backward().args.begin(), artifact.backward().args.end(),
                                [](const KernelArg &arg) { return arg.role == "energy"; });
  bool splitLastStep = false;
  for (const auto &[name, grad] : carried)
    splitLastStep = splitLastStep || (energyForm && grad.defined());
  std::vector<TensorMap> seqGrads; // per span, from the last to the first
  TensorMap out;
  // One span [begin, end) from `states`: its tape (forward_train), then the
  // backward over it, carrying the states' gradients into the span before.
  auto runSpan = [&](int64_t begin, int64_t end, const TensorMap &states) {
    TensorMap segmentIn = segmentInputs(artifact, inputs, begin, end, states);
    TensorMap segmentGrads = carried;
    if (auto gradY = grads.find("grad.y"); gradY != grads.end() && gradY->second.defined())
      segmentGrads["grad.y"] = gradY->second.narrow(2, begin, end - begin).contiguous();
    // The energy form's forward_train reads the output gradients.
    TensorMap forwardResults =
        runCompiledForward(artifact, segmentIn, /*train=*/true, segmentGrads);
    forwardResults.erase("y");
    TensorMap results = runCompiledBackward(artifact, segmentIn, forwardResults, segmentGrads);
    TensorMap &spanGrads = seqGrads.emplace_back();
    for (const TensorSpec &spec : signature.seq)
      spanGrads["grad." + spec.name] = results.at("grad." + spec.name);
    for (const TensorSpec &spec : signature.params) {
      auto part = results.find("grad." + spec.name);
      if (part == results.end())
        continue;
      torch::Tensor &total = out["grad." + spec.name];
      total = total.defined() ? total + part->second : part->second;
    }
    carried.clear();
    for (const TensorSpec &state : signature.states)
      if (auto grad = results.find("grad." + initName(state.name)); grad != results.end())
        carried["grad." + finalName(state.name)] = grad->second;
  };
  for (int64_t segment = segments - 1; segment >= 0; --segment) {
    int64_t begin = segment * every, end = std::min(steps, begin + every);
    TensorMap states;
    for (const TensorSpec &state : signature.states)
      if (auto it = saved.find(checkpointName(segment, state.name)); it != saved.end())
        states[state.name] = it->second;
    if (segment == segments - 1 && splitLastStep && end - begin > 1) {
      TensorMap before = runCompiledForward(
          artifact, segmentInputs(artifact, inputs, begin, end - 1, states), /*train=*/false);
      TensorMap last;
      for (const TensorSpec &state : signature.states)
        last[state.name] = before.at(finalName(state.name));
      runSpan(end - 1, end, last);
      --end;
    }
    runSpan(begin, end, states);
  }
  std::reverse(seqGrads.begin(), seqGrads.end());
  for (const TensorSpec &spec : signature.seq) {
    std::vector<torch::Tensor> parts;
    for (const TensorMap &segment : seqGrads)
      parts.push_back(segment.at("grad." + spec.name));
    out["grad." + spec.name] = parts.size() == 1 ? parts[0] : torch::cat(parts, 2);
  }
  for (const TensorSpec &state : signature.states)
    if (inputs.count(initName(state.name)))
      out["grad." + initName(state.name)] = carried.at("grad." + finalName(state.name));
  return out;
}

// The inputs travel as an at::TensorList: autograd tracks the tensors of a
// TensorList argument, but not those of a std::vector. The forward keeps the
// tape (or, for a checkpointed layer, the states at each segment's start);
// backward rebuilds the states from the final ones.
class CompiledScanFunction : public torch::autograd::Function<CompiledScanFunction> {
public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext *ctx,
                                                at::TensorList inputs,
                                                std::shared_ptr<CallContext> call) {
    const Artifact &artifact = *call->artifact;
    TensorMap named;
    for (size_t i = 0; i < inputs.size(); ++i)
      named[call->inputNames[i]] = inputs[i].detach();
    int64_t steps = validateInputs(artifact.signature(), artifact.dims(), named).steps;
    TensorMap results = trainForward(artifact, named, steps, call->savedNames);
    torch::autograd::variable_list outputs{results.at("y")}, saved(inputs.begin(), inputs.end());
    for (const TensorSpec &state : artifact.signature().states) {
      outputs.push_back(results.at(finalName(state.name)));
      saved.push_back(outputs.back().detach());
    }
    for (const std::string &name : call->savedNames)
      saved.push_back(results.at(name));
    ctx->save_for_backward(saved);
    ctx->saved_data["call"] =
        c10::IValue::make_capsule(c10::make_intrusive<CallHolder>(std::move(call)));
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list gradOutputs) {
    std::shared_ptr<CallContext> call =
        c10::static_intrusive_pointer_cast<CallHolder>(ctx->saved_data["call"].toCapsule())
            ->call;
    const Artifact &artifact = *call->artifact;
    const LayerSignature &signature = artifact.signature();
    auto saved = ctx->get_saved_variables();
    size_t next = 0;
    TensorMap inputs, forwardResults, grads;
    for (const std::string &name : call->inputNames)
      inputs[name] = saved[next++].detach();
    for (const TensorSpec &state : signature.states)
      forwardResults[finalName(state.name)] = saved[next++].detach();
    for (const std::string &name : call->savedNames)
      forwardResults[name] = saved[next++].detach();
    if (gradOutputs[0].defined())
      grads["grad.y"] = gradOutputs[0];
    for (size_t i = 0; i < signature.states.size(); ++i)
      if (gradOutputs[1 + i].defined())
        grads["grad." + finalName(signature.states[i].name)] = gradOutputs[1 + i];
    int64_t steps = validateInputs(signature, artifact.dims(), inputs).steps;
    TensorMap results = trainBackward(artifact, inputs, steps, forwardResults, grads);

    torch::autograd::variable_list gradInputs;
    for (const std::string &name : call->inputNames) {
      const torch::Tensor &input = inputs.at(name);
      gradInputs.push_back(results.at("grad." + name).view(input.sizes()).to(input.dtype()));
    }
    gradInputs.emplace_back(); // the CallContext argument
    return gradInputs;
  }
};
/// The CPU features (LLVM's names) that this process can check, and whether
/// the host has them. Features LLVM lists that are not here (tuning flags
/// such as "fast-gather", and rarer instructions) are not checked.
std::optional<bool> hostHasFeature(const std::string &feature) {
#define FWP_FEATURE(llvmName, gccName)                                                        \
  if (feature == llvmName)                                                                   \
    return __builtin_cpu_supports(gccName) != 0;
  FWP_FEATURE("cmov", "cmov")
  FWP_FEATURE("mmx", "mmx")
  FWP_FEATURE("popcnt", "popcnt")
  FWP_FEATURE("sse", "sse")
  FWP_FEATURE("sse2", "sse2")
  FWP_FEATURE("sse3", "sse3")
  FWP_FEATURE("ssse3", "ssse3")
  FWP_FEATURE("sse4.1", "sse4.1")
  FWP_FEATURE("sse4.2", "sse4.2")
  FWP_FEATURE("avx", "avx")
  FWP_FEATURE("avx2", "avx2")
  FWP_FEATURE("fma", "fma")
  FWP_FEATURE("bmi", "bmi")
  FWP_FEATURE("bmi2", "bmi2")
  FWP_FEATURE("aes", "aes")
  FWP_FEATURE("pclmul", "pclmul")
  FWP_FEATURE("avx512f", "avx512f")
  FWP_FEATURE("avx512vl", "avx512vl")
  FWP_FEATURE("avx512bw", "avx512bw")
  FWP_FEATURE("avx512dq", "avx512dq")
  FWP_FEATURE("avx512cd", "avx512cd")
#undef FWP_FEATURE
  return std::nullopt;
}

/// Whether the host has `feature` for the choice of a CPU image: what
/// hostHasFeature says, except that FWP_HIDE_CPU_FEATURES (a comma-separated
/// list of LLVM feature names) makes features count as missing, to try a
/// smaller machine's choice here (it can only make the choice stricter).
std::optional<bool> hostOffersFeature(const std::string &feature) {
  if (const char *hidden = std::getenv("FWP_HIDE_CPU_FEATURES")) {
    std::stringstream list(hidden);
    for (std::string name; std::getline(list, name, ',');)
      if (name == feature)
        return false;
  }
  return hostHasFeature(feature);
}

/// One entry of the manifest's "targets": a CPU image and what it needs.
struct CpuTarget {
  std::string cpu;
  std::string section;
  std::vector<std::string> features;
};

/// The manifest's "targets", in order of preference: each names a distinct
/// CPU section, and every CPU section is named.
std::vector<CpuTarget> readTargets(const ManifestReader &reader,
                                   const ArtifactContainer &container) {
  // Format 2: one image, section "cpu", described by "target".
  const bool format2 = container.manifest.value("version", 0) == 2;
  const json &list =
      format2 ? json::array({reader.member(container.manifest, "manifest", "target")})
              : reader.array(container.manifest, "manifest", "targets");
  if (list.empty())
    reader.fail("targets", "must list at least one CPU image");
  std::vector<CpuTarget> targets;
  std::set<std::string> named;
  for (size_t i = 0; i < list.size(); ++i) {
    std::string field = format2 ? "target" : "targets[" + std::to_string(i) + "]";
    CpuTarget target;
    std::string triple = reader.string(list[i], field, "triple");
    if (triple.rfind("x86_64-", 0) != 0)
      reader.fail(field + ".triple", "is '" + triple + "'; this runtime runs x86-64 code");
    target.cpu = reader.string(list[i], field, "cpu");
    target.section =
        format2 ? kFormat2CpuSectionName : reader.string(list[i], field, "section");
    const ArtifactSection *section = container.section(target.section);
    if (!section || section->kind != "elf")
      reader.fail(field + ".section", "names '" + target.section + "', which is not a CPU "
                                      "section (kind elf)");
    if (!named.insert(target.section).second)
      reader.fail(field + ".section", "names the section '" + target.section + "' a second time");
    for (const json &feature : reader.array(list[i], field, "features")) {
      if (!feature.is_string())
        reader.fail(field + ".features", "must be an array of strings");
      target.features.push_back(feature.get<std::string>());
    }
    targets.push_back(std::move(target));
  }
  for (const ArtifactSection &section : container.sections)
    if (section.kind == "elf" && !named.count(section.name))
      reader.fail("targets", "names no entry for the CPU section '" + section.name + "'");
  return targets;
}

/// The first target whose features this host has; none: an error naming
/// every image and the features it lacks.
size_t chooseTarget(const std::string &path, const std::vector<CpuTarget> &targets) {
  std::string missingAll;
  for (size_t i = 0; i < targets.size(); ++i) {
    std::string missing;
    for (const std::string &feature : targets[i].features) {
      std::optional<bool> has = hostOffersFeature(feature);
      if (has && !*has)
        missing += (missing.empty() ? "" : ", ") + feature;
    }
    if (missing.empty())
      return i;
    missingAll += "; '" + targets[i].section + "' (processor " + targets[i].cpu +
                  ") needs " + missing;
  }
  throw Error(path + ": none of its CPU images runs on this machine, which lacks features "
              "each needs" + missingAll +
              " (recompile with fwp-compile --cpu=native or an older processor in --cpu)");
}

/// Every CPU image carries the manifest it was compiled with, less the CPU
/// sections' entries (an image cannot hold its own digest): a manifest
/// cannot be paired with other code.
void checkCodeMatchesManifest(const ArtifactContainer &container, const CpuImageInfo &image,
                              const std::string &sectionName) {
  json expected = container.manifest;
  json sections = json::array();
  for (const json &entry : expected["sections"])
    if (entry.value("kind", "") != "elf")
      sections.push_back(entry);
  expected["sections"] = sections;
  if (image.embeddedManifest == expected)
    return;
  std::string fields;
  if (!image.embeddedManifest.is_object())
    fields = "all";
  else
    for (const auto &[key, value] : expected.items())
      if (!image.embeddedManifest.contains(key) || image.embeddedManifest[key] != value)
        fields += (fields.empty() ? "" : ", ") + key;
  std::string hint;
  if (image.embeddedManifest.is_object())
    hint = " (the code is for layer " + image.embeddedManifest.value("layer", std::string("?")) +
           " with dims " + image.embeddedManifest.value("dims", json::object()).dump() + ", " +
           image.embeddedManifest.value("dtype", std::string("?")) + ")";
  throw Error(container.path + ": the manifest does not describe the CPU code it holds (section '" +
              sectionName + "'): fields that differ: " + fields + hint);
}

/// Maps a verified CPU image: written to a sealed memfd and loaded from
/// there, so what runs is exactly the verified bytes, and no library search
/// is involved. The image has been checked to run no code when loaded.
void *mapImage(const std::string &image, const std::string &path, int &fdOut) {
  int fd = memfd_create("fwpk", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    throw Error(path + ": cannot load the artifact: memfd_create: " + std::strerror(errno));
  size_t done = 0;
  while (done < image.size()) {
    ssize_t wrote = ::write(fd, image.data() + done, image.size() - done);
    if (wrote < 0 && errno == EINTR)
      continue;
    if (wrote <= 0) {
      ::close(fd);
      throw Error(path + ": cannot load the artifact: writing its code to memory failed");
    }
    done += size_t(wrote);
  }
  fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  std::string name = "/proc/self/fd/" + std::to_string(fd);
  // RTLD_LOCAL: two artifacts define the same helper symbols.
  void *handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    ::close(fd);
    throw Error(path + ": cannot load the artifact: " + (why ? why : "unknown error"));
  }
  fdOut = fd;
  return handle;
}

/// Whether `address` lies in a mapping of the file open as `fd` (so that a
/// stale library of the same /proc/self/fd name can never be called).
bool mappedFrom(const void *address, int fd) {
  struct stat info {};
  if (fstat(fd, &info) != 0)
    return false;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  auto target = reinterpret_cast<uintptr_t>(address);
  while (std::getline(maps, line)) {
    std::istringstream fields(line);
    std::string range, perms, offset, device;
    unsigned long long inode = 0;
    fields >> range >> perms >> offset >> device >> inode;
    size_t dash = range.find('-');
    if (dash == std::string::npos)
      continue;
    uintptr_t begin = std::stoull(range.substr(0, dash), nullptr, 16);
    uintptr_t end = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (target >= begin && target < end)
      return inode == info.st_ino;
  }
  return false;
}

void parseKernel(const ManifestReader &reader, const json &kernels,
                 const std::string &role, const std::vector<std::string> &functions,
                 CpuKernel &kernel) {
  std::string field = "kernels.cpu." + role;
  const json &entry = reader.member(kernels, "kernels.cpu", role);
  kernel.symbol = reader.string(entry, field, "symbol");
  if (auto chunk = entry.find("chunk"); chunk != entry.end()) {
    if (!chunk->is_number_integer() || chunk->get<int64_t>() < 0)
      reader.fail(field + ".chunk", "must be a non-negative integer");
    kernel.chunk = chunk->get<int64_t>();
  }
  if (auto stages = entry.find("stages"); stages != entry.end()) {
    if (!stages->is_number_integer() || stages->get<int64_t>() < 1)
      reader.fail(field + ".stages", "must be a positive integer");
    kernel.stages = stages->get<int64_t>();
  }
  const json &args = reader.array(entry, field, "args");
  for (size_t i = 0; i < args.size(); ++i) {
    std::string argField = field + ".args[" + std::to_string(i) + "]";
    KernelArg arg;
    arg.role = reader.string(args[i], argField, "role");
    if (!cuda::knownArgRoles().count(arg.role))
      reader.fail(argField + ".role", "is '" + arg.role + "', not a known role");
    arg.name = reader.string(args[i], argField, "name");
    arg.shape = reader.shape(reader.member(args[i], argField, "shape"),
                             argField + ".shape");
    kernel.args.push_back(std::move(arg));
  }
  if (std::find(functions.begin(), functions.end(), kernel.symbol) == functions.end())
    reader.fail(field + ".symbol", "names '" + kernel.symbol +
                                       "', which the CPU code does not export");
}

/// Resolves a kernel's entry point in the mapped image.
void resolveKernel(void *handle, int fd, const std::string &path, CpuKernel &kernel) {
  dlerror();
  void *symbol = dlsym(handle, kernel.symbol.c_str());
  if (!symbol || !mappedFrom(symbol, fd))
    throw Error(path + ": the loaded CPU code does not provide '" + kernel.symbol + "'");
  kernel.entry = reinterpret_cast<void (*)(int64_t, void **)>(symbol);
}

/// The CUDA half of an artifact: the kernels with their PTX, and with their
/// cubins when every kernel has one.
struct CudaImages {
  std::optional<cuda::KernelBundle> ptx, cubin;
  std::string chip;
};

CudaImages loadCudaKernels(const ManifestReader &reader, const json &cuda,
                           const ArtifactContainer &container, torch::ScalarType dtype) {
  if (!cuda.is_object())
    reader.fail("kernels.cuda", "must be an object");
  std::map<std::string, std::string> ptx, cubins;
  std::set<std::string> used;
  std::string chip;
  bool allCubins = true;
  // The PTX and cubin images are sections; "ptx_symbol" and "cubin_symbol"
  // name them (the names the symbols of format version 1 had).
  auto sectionOf = [&](const std::string &field, const std::string &name,
                       const std::string &kind) -> const ArtifactSection & {
    const ArtifactSection *section = container.section(name);
    if (!section || section->kind != kind)
      reader.fail(field, "names '" + name + "', which is not a " + kind + " section");
    if (!used.insert(name).second)
      reader.fail(field, "names the section '" + name + "' a second time");
    return *section;
  };
  std::vector<std::string> roles{"forward", "forward_train", "backward"};
  if (cuda.contains("backward_deferred")) // the energy form's deferred products
    roles.push_back("backward_deferred");
  for (const std::string &role : roles) {
    std::string field = "kernels.cuda." + role;
    const json &entry = reader.member(cuda, "kernels.cuda", role);
    std::string kernel = reader.string(entry, field, "kernel");
    std::string symbol = reader.string(entry, field, "ptx_symbol");
    const std::string &text = sectionOf(field + ".ptx_symbol", symbol, "ptx").bytes;
    if (text.find('\0') != std::string::npos ||
        text.find(".entry " + kernel + "(") == std::string::npos)
      reader.fail(field + ".ptx_symbol",
                  "names PTX without the entry '" + kernel + "'");
    ptx[kernel] = text;
    chip = reader.string(entry, field, "chip");
    auto cubinSymbol = entry.find("cubin_symbol");
    if (cubinSymbol == entry.end()) {
      allCubins = false;
      continue;
    }
    if (!cubinSymbol->is_string())
      reader.fail(field + ".cubin_symbol", "must be a string");
    const ArtifactSection &cubin =
        sectionOf(field + ".cubin_symbol", cubinSymbol->get<std::string>(), "cubin");
    const json &bytes = reader.member(entry, field, "cubin_bytes");
    if (!bytes.is_number_unsigned() || bytes.get<uint64_t>() != cubin.bytes.size())
      reader.fail(field + ".cubin_bytes", "is not the size of the section '" + cubin.name + "'");
    if (cubin.bytes.compare(0, 4, ELFMAG) != 0)
      reader.fail(field + ".cubin_symbol", "does not name an ELF image");
    cubins[kernel] = cubin.bytes;
  }
  for (const ArtifactSection &section : container.sections)
    if (section.kind != "elf" && !used.count(section.name))
      reader.fail("sections", "lists '" + section.name + "', which no kernel uses");
  CudaImages images;
  images.ptx = cuda::KernelBundle::fromManifest(cuda, std::move(ptx), container.path);
  if (allCubins)
    images.cubin = cuda::KernelBundle::fromManifest(cuda, std::move(cubins), container.path);
  images.chip = chip;
  for (const cuda::KernelSpec *spec :
       {&images.ptx->forward, &images.ptx->forwardTrain, &images.ptx->backward})
    if (spec->dtype != dtype)
      reader.fail("kernels.cuda", "kernel " + spec->kernel + " computes in " +
                                      c10::toString(spec->dtype) +
                                      ", not in the layer's dtype");
  return images;
}

} // namespace

const cuda::KernelBundle &Artifact::cudaKernels(const std::string &chip) const {
  if (!cudaPtx_)
    throw Error(path_ + ": this artifact has CPU kernels only (compile it with an f32 "
                        "dtype, or fwp-compile --cuda=on, for CUDA tensors)");
  if (cudaCubin_ && chip == cudaChip_)
    return *cudaCubin_;
  return *cudaPtx_;
}

std::shared_ptr<const Artifact> Artifact::load(const std::string &path) {
  return loadImpl(path, /*mapCode=*/true);
}

std::string describeArtifact(const std::string &path, std::string *cpuSection) {
  std::shared_ptr<Artifact> artifact = Artifact::loadImpl(path, /*mapCode=*/false);
  if (cpuSection)
    *cpuSection = artifact->cpuSection_;
  return readArtifactContainer(path).manifestText;
}

std::shared_ptr<Artifact> Artifact::loadImpl(const std::string &path, bool mapCode) {
  // Everything is verified before any code is mapped: the container (header,
  // digests, layout), the CPU image (runs nothing when loaded), that the
  // image was compiled with this manifest, the manifest's schema and every
  // cross-reference.
  const ArtifactContainer container = readArtifactContainer(path);
  ManifestReader reader(path);
  const std::vector<CpuTarget> targets = readTargets(reader, container);
  std::vector<CpuImageInfo> images;
  for (const CpuTarget &target : targets) {
    images.push_back(checkCpuImage(container.section(target.section)->bytes,
                                   path + " (section '" + target.section + "')"));
    checkCodeMatchesManifest(container, images.back(), target.section);
  }
  const json &manifest = container.manifest;
  std::shared_ptr<Artifact> artifact(new Artifact());
  artifact->path_ = path;

  if (reader.string(manifest, "manifest", "format") != "fwpk")
    reader.fail("format", "is not \"fwpk\"");
  const json &version = reader.member(manifest, "manifest", "version");
  if (!version.is_number_integer() || version.get<int>() > kFormatVersion ||
      version.get<int>() < kOldestArtifactFormatVersion)
    reader.fail("version", "is " + version.dump() + "; this runtime reads versions " +
                               std::to_string(kOldestArtifactFormatVersion) + " to " +
                               std::to_string(kFormatVersion) +
                               " (recompile the layer with this fwp-compile)");
  std::string dtype = reader.string(manifest, "manifest", "dtype");
  if (dtype == "f32")
    artifact->dtype_ = torch::kFloat;
  else if (dtype == "f64")
    artifact->dtype_ = torch::kDouble;
  else
    reader.fail("dtype", "is '" + dtype + "', not f32 or f64");

  const json &dims = reader.member(manifest, "manifest", "dims");
  if (!dims.is_object())
    reader.fail("dims", "must be an object");
  for (const auto &[name, value] : dims.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() <= 0)
      reader.fail("dims." + name, "must be a positive integer");
    artifact->dims_[name] = value.get<int64_t>();
  }

  LayerSignature &signature = artifact->signature_;
  signature.layer = reader.string(manifest, "manifest", "layer");
  auto readSpecs = [&](const std::string &key, std::vector<TensorSpec> &into) {
    const json &list = reader.array(manifest, "manifest", key);
    for (size_t i = 0; i < list.size(); ++i) {
      std::string field = key + "[" + std::to_string(i) + "]";
      std::string name = reader.string(list[i], field, "name");
      std::vector<int64_t> shape =
          reader.shape(reader.member(list[i], field, "shape"), field + ".shape");
      if (std::find(shape.begin(), shape.end(), -1) != shape.end())
        reader.fail(field + ".shape", "holds -1 outside a kernel argument");
      into.push_back(specFromShape(name, shape, artifact->dims_));
    }
  };
  std::vector<TensorSpec> outputs;
  readSpecs("seq", signature.seq);
  readSpecs("params", signature.params);
  const json &paramList = reader.array(manifest, "manifest", "params");
  for (size_t i = 0; i < paramList.size(); ++i)
    if (auto init = paramList[i].find("init"); init != paramList[i].end()) {
      std::string field = "params[" + std::to_string(i) + "].init";
      if (!init->is_string())
        reader.fail(field, "must be a string");
      try {
        initialParam(init->get<std::string>(), 1, {1});
      } catch (const Error &error) {
        reader.fail(field, error.what());
      }
      artifact->paramInits_[signature.params[i].name] = init->get<std::string>();
    }
  readSpecs("states", signature.states);
  readSpecs("outputs", outputs);
  readSpecs("tape", artifact->tape_);
  // Optional (older artifacts invert every write): the per-state backward
  // strategies and, for checkpointed layers, the segment length.
  if (auto backward = manifest.find("backward"); backward != manifest.end()) {
    if (!backward->is_object())
      reader.fail("backward", "must be an object from state names to strategies");
    for (const auto &[state, strategy] : backward->items()) {
      if (!strategy.is_string() ||
          !std::set<std::string>{"invert", "store", "checkpoint"}.count(strategy.get<std::string>()))
        reader.fail("backward." + state, "must be \"invert\", \"store\" or \"checkpoint\"");
      artifact->backwardStrategies_[state] = strategy.get<std::string>();
    }
  }
  if (auto every = manifest.find("checkpoint_every"); every != manifest.end()) {
    if (!every->is_number_integer() || every->get<int64_t>() < 0)
      reader.fail("checkpoint_every", "must be a non-negative integer");
    artifact->checkpointEvery_ = every->get<int64_t>();
  }
  if (outputs.size() != 1 || outputs[0].name != "y")
    reader.fail("outputs", "must list exactly one output, 'y' (the runtime's layer contract)");
  signature.output = outputs[0];

  const json &kernels = reader.member(manifest, "manifest", "kernels");
  const json &cpu = reader.member(kernels, "kernels", "cpu");
  parseKernel(reader, cpu, "forward", images[0].functions, artifact->forward_);
  parseKernel(reader, cpu, "forward_train", images[0].functions, artifact->forwardTrain_);
  parseKernel(reader, cpu, "backward", images[0].functions, artifact->backward_);
  if (cpu.contains("backward_deferred"))
    parseKernel(reader, cpu, "backward_deferred", images[0].functions,
                artifact->backwardDeferred_.emplace());
  std::vector<CpuKernel *> allKernels{&artifact->forward_, &artifact->forwardTrain_,
                                      &artifact->backward_};
  if (artifact->backwardDeferred_)
    allKernels.push_back(&*artifact->backwardDeferred_);
  // Every image exports every kernel; the host runs the first it can.
  for (size_t i = 1; i < images.size(); ++i)
    for (const CpuKernel *kernel : allKernels)
      if (std::find(images[i].functions.begin(), images[i].functions.end(), kernel->symbol) ==
          images[i].functions.end())
        reader.fail("kernels.cpu", "symbol " + kernel->symbol + " is not exported by the CPU "
                                   "section '" + targets[i].section + "'");
  const size_t chosen = chooseTarget(path, targets);
  artifact->cpuSection_ = targets[chosen].section;

  if (auto cuda = kernels.find("cuda"); cuda != kernels.end()) {
    CudaImages images = loadCudaKernels(reader, *cuda, container, artifact->dtype_);
    artifact->cudaPtx_ = std::move(images.ptx);
    artifact->cudaCubin_ = std::move(images.cubin);
    artifact->cudaChip_ = std::move(images.chip);
  }

  // Every kernel argument must agree with the layer's tensors.
  auto specShape = [&](const std::vector<TensorSpec> &specs,
                       const std::string &name) -> std::optional<std::vector<int64_t>> {
    for (const TensorSpec &spec : specs)
      if (spec.name == name)
        return resolveShape(spec, artifact->dims_);
    return std::nullopt;
  };
  for (const CpuKernel *kernel : allKernels) {
    for (const KernelArg &arg : kernel->args) {
      const std::string &role = arg.role;
      std::optional<std::vector<int64_t>> expected;
      bool perStep = false;
      if (role == "seq" || role == "grad_seq") {
        expected = specShape(signature.seq, arg.name);
        perStep = true;
      } else if (role == "param" || role == "grad_param") {
        expected = specShape(signature.params, arg.name);
      } else if (role == "state" || role == "grad_state") {
        expected = specShape(signature.states, arg.name);
      } else if (role == "output" || role == "grad_output") {
        expected = arg.name == "y" ? std::optional(resolveShape(signature.output, artifact->dims_))
                                   : std::nullopt;
        perStep = true;
      } else if (role == "tape") {
        expected = specShape(artifact->tape_, arg.name);
        perStep = true;
      } else if (role == "energy") {
        // rowsum(adj(W) (.) W): one number per row of the fast weight.
        expected = specShape(signature.states, arg.name);
        if (expected && expected->size() == 2)
          expected->resize(1);
        else
          expected = std::nullopt;
      } else if (role == "deferred" && arg.name.rfind("deferred.", 0) == 0) {
        // deferred.<W>.<i>: per step, a vector of the fast weight's columns.
        std::string rest = arg.name.substr(std::string("deferred.").size());
        expected = specShape(signature.states, rest.substr(0, rest.find('.')));
        if (expected && expected->size() == 2)
          expected = std::vector<int64_t>{(*expected)[1]};
        else
          expected = std::nullopt;
        perStep = true;
      }
      if (!expected)
        reader.fail("kernels.cpu", "symbol " + kernel->symbol + ": " + role + " '" +
                                       arg.name + "' is not a tensor of the layer");
      std::vector<int64_t> want;
      if (perStep)
        want.push_back(-1);
      bool scalar = expected->size() == 1 && (*expected)[0] == 1 &&
                    arg.shape.size() == (perStep ? 1u : 1u) &&
                    (perStep ? arg.shape[0] == -1 : arg.shape[0] == 1);
      if (!scalar)
        want.insert(want.end(), expected->begin(), expected->end());
      else if (!perStep)
        want.push_back(1);
      if (arg.shape != want)
        reader.fail("kernels.cpu", "symbol " + kernel->symbol + ": " + role + " '" +
                                       arg.name + "' has shape " + shapeText(arg.shape) +
                                       " but the layer's tensor needs " + shapeText(want));
    }
  }
  if (kernels.find("cuda") == kernels.end())
    for (const ArtifactSection &section : container.sections)
      if (section.kind != "elf")
        reader.fail("sections", "lists '" + section.name + "', which no kernel uses");

  if (!mapCode)
    return artifact;
  // Verified: map the code and resolve the entry points.
  artifact->handle_ =
      mapImage(container.section(artifact->cpuSection_)->bytes, path, artifact->imageFd_);
  for (CpuKernel *kernel : allKernels)
    resolveKernel(artifact->handle_, artifact->imageFd_, path, *kernel);
  return artifact;
}

Artifact::~Artifact() {
  if (handle_)
    dlclose(handle_);
  if (imageFd_ >= 0)
    ::close(imageFd_);
}

CompiledLayer::CompiledLayer(std::shared_ptr<const Artifact> artifact)
    : artifact_(std::move(artifact)) {}

const LayerSignature &CompiledLayer::signature() const { return artifact_->signature(); }
const Dims &CompiledLayer::dims() const { return artifact_->dims(); }

TensorMap CompiledLayer::forward(const TensorMap &inputs) const {
  // bfloat16 tensors meet f32 kernels at the boundary: the layer computes
  // and keeps its state in f32 and hands back bfloat16 (autograd casts the
  // gradients back the same way).
  if (artifact_->dtype() == torch::kFloat && !inputs.empty() &&
      std::all_of(inputs.begin(), inputs.end(), [](const auto &entry) {
        return entry.second.scalar_type() == torch::kBFloat16;
      })) {
    TensorMap widened;
    for (const auto &[name, tensor] : inputs)
      widened[name] = tensor.to(torch::kFloat);
    TensorMap outputs = forward(widened);
    for (auto &[name, tensor] : outputs)
      tensor = tensor.to(torch::kBFloat16);
    return outputs;
  }
  const LayerSignature &signature = artifact_->signature();
  auto context = std::make_shared<CallContext>();
  context->artifact = artifact_;
  torch::autograd::variable_list autogradInputs;
  bool needsGrad = false;
  auto add = [&](const std::string &name) {
    auto it = inputs.find(name);
    if (it == inputs.end())
      return;
    context->inputNames.push_back(name);
    autogradInputs.push_back(it->second);
    needsGrad |= it->second.defined() && it->second.requires_grad();
  };
  for (const TensorSpec &spec : signature.seq)
    add(spec.name);
  for (const TensorSpec &spec : signature.params)
    add(spec.name);
  for (const TensorSpec &spec : signature.states)
    add(initName(spec.name));

  if (!needsGrad || !torch::GradMode::is_enabled())
    return runCompiledForward(*artifact_, inputs, /*train=*/false);
  torch::autograd::variable_list results =
      CompiledScanFunction::apply(at::TensorList(autogradInputs), context);
  TensorMap outputs;
  outputs["y"] = results[0];
  for (size_t i = 0; i < signature.states.size(); ++i)
    outputs[finalName(signature.states[i].name)] = results[1 + i];
  return outputs;
}

TensorMap runCompiledForward(const Artifact &artifact, const TensorMap &inputs, bool train,
                             const TensorMap &grads) {
  PreparedCall call = prepareCall(artifact, inputs);
  TensorMap results;
  if (call.cuda) {
    TensorMap all = cuda::runForward(*call.cuda, inputs, train, grads);
    for (const auto &[name, shape] : compiledForwardShapes(
             artifact, call.shape.batch, call.shape.heads, call.shape.steps, train))
      results[name] = all.at(name);
    return results;
  }
  return runCpuForward(artifact, train ? artifact.forwardTrain() : artifact.forward(), inputs,
                       call.shape.batch, call.shape.heads, call.shape.steps, grads);
}

namespace {
/// The saved forward results and the output gradients of a backward call,
/// checked against `shapes` (what the training forward returns: "y",
/// "final.<state>", then what it kept) and converted to the layer's dtype:
/// the kernels trust every buffer's size. Fills `results` (everything after
/// "y", all required) and `checkedGrads` ("grad.y", "grad.final.<state>",
/// each optional).
void checkBackwardArgs(const Artifact &artifact, const CallShape &shape,
                       const std::vector<std::pair<std::string, std::vector<int64_t>>> &shapes,
                       const TensorMap &forwardResults, const TensorMap &grads,
                       TensorMap &results, TensorMap &checkedGrads) {
  auto check = [&](const TensorMap &map, const std::string &name,
                   const std::vector<int64_t> &want, bool required) -> std::optional<torch::Tensor> {
    auto it = map.find(name);
    if (it == map.end() || !it->second.defined()) {
      if (required)
        throw Error(artifact.path() + ": the backward needs the forward result '" + name + "'");
      return std::nullopt;
    }
    const torch::Tensor &tensor = it->second;
    if (tensor.sizes().vec() != want)
      throw Error(artifact.path() + ": tensor '" + name + "' has shape " +
                  shapeText(tensor.sizes().vec()) + " but the backward needs " + shapeText(want));
    if (tensor.device() != shape.device)
      throw Error(artifact.path() + ": tensor '" + name + "' is on " + tensor.device().str() +
                  " but the inputs are on " + shape.device.str());
    if (!tensor.is_floating_point())
      throw Error(artifact.path() + ": tensor '" + name + "' has dtype " +
                  c10::toString(tensor.scalar_type()) + "; expected a floating-point dtype");
    return tensor.detach().to(artifact.dtype()).contiguous();
  };
  bool hasY = false;
  for (const auto &[name, want] : shapes) {
    hasY = hasY || name == "y";
    if (name != "y")
      results[name] = *check(forwardResults, name, want, /*required=*/true);
    std::string gradName = "grad." + name;
    if (name == "y" || name.rfind("final.", 0) == 0)
      if (auto grad = check(grads, gradName, want, /*required=*/false))
        checkedGrads[gradName] = *grad;
  }
  if (!hasY) { // a checkpointed layer's forward_train computes no y
    auto forward = compiledForwardShapes(artifact, shape.batch, shape.heads, shape.steps, false);
    if (auto grad = check(grads, "grad.y", forward.front().second, /*required=*/false))
      checkedGrads["grad.y"] = *grad;
  }
  for (const auto &[name, tensor] : grads)
    if (!checkedGrads.count(name) && tensor.defined())
      throw Error(artifact.path() + ": unexpected gradient '" + name +
                  "' (expected grad.y and grad.final.<state>)");
}

/// "grad.<input>" for every tensor of `inputs`, in the input's shape.
TensorMap inputGradients(const TensorMap &inputs, const TensorMap &all) {
  TensorMap gradients;
  for (const auto &[name, tensor] : inputs)
    gradients["grad." + name] = all.at("grad." + name).view(tensor.sizes());
  return gradients;
}
} // namespace

TensorMap runCompiledBackward(const Artifact &artifact, const TensorMap &inputs,
                              const TensorMap &forwardResults, const TensorMap &grads) {
  PreparedCall call = prepareCall(artifact, inputs);
  const CallShape &shape = call.shape;
  TensorMap results, checkedGrads;
  checkBackwardArgs(
      artifact, shape,
      compiledForwardShapes(artifact, shape.batch, shape.heads, shape.steps, /*train=*/true),
      forwardResults, grads, results, checkedGrads);
  TensorMap all = call.cuda ? cuda::runBackward(*call.cuda, inputs, results, checkedGrads)
                            : runCpuBackward(artifact, inputs, results, checkedGrads,
                                             shape.batch, shape.heads, shape.steps);
  return inputGradients(inputs, all);
}

std::vector<std::pair<std::string, std::vector<int64_t>>>
trainingForwardShapes(const Artifact &artifact, int64_t batch, int64_t heads, int64_t steps) {
  int64_t every = artifact.checkpointEvery();
  if (every <= 0)
    return compiledForwardShapes(artifact, batch, heads, steps, /*train=*/true);
  auto shapes = compiledForwardShapes(artifact, batch, heads, steps, /*train=*/false);
  const LayerSignature &signature = artifact.signature();
  for (int64_t segment = 0; segment * every < steps; ++segment)
    for (size_t i = 0; i < signature.states.size(); ++i)
      shapes.emplace_back(checkpointName(segment, signature.states[i].name), shapes[1 + i].second);
  return shapes;
}

TensorMap runTrainingForward(const Artifact &artifact, const TensorMap &inputs) {
  CallShape shape = prepareCall(artifact, inputs).shape;
  std::vector<std::string> savedNames;
  return trainForward(artifact, inputs, shape.steps, savedNames);
}

TensorMap runTrainingBackward(const Artifact &artifact, const TensorMap &inputs,
                              const TensorMap &forwardResults, const TensorMap &grads) {
  if (artifact.checkpointEvery() <= 0)
    return runCompiledBackward(artifact, inputs, forwardResults, grads);
  const CallShape shape = prepareCall(artifact, inputs).shape;
  TensorMap results, checkedGrads;
  checkBackwardArgs(artifact, shape,
                    trainingForwardShapes(artifact, shape.batch, shape.heads, shape.steps),
                    forwardResults, grads, results, checkedGrads);
  return inputGradients(inputs,
                        trainBackward(artifact, inputs, shape.steps, results, checkedGrads));
}

std::vector<std::pair<std::string, std::vector<int64_t>>>
compiledForwardShapes(const Artifact &artifact, int64_t batch, int64_t heads, int64_t steps,
                      bool train) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  const CpuKernel &kernel = train ? artifact.forwardTrain() : artifact.forward();
  auto argShape = [&](const std::string &role, const std::string &name) {
    for (const KernelArg &arg : kernel.args)
      if (arg.role == role && arg.name == name)
        return tensorShape(arg, batch, heads, steps);
    throw Error(artifact.path() + ": kernel " + kernel.symbol + " has no " + role + " '" +
                name + "'");
  };
  // A checkpointed layer's forward_train computes no "y": it only rebuilds
  // a segment's tape inside the backward.
  if (!train || artifact.checkpointEvery() <= 0)
    shapes.emplace_back("y", argShape("output", "y"));
  for (const TensorSpec &state : artifact.signature().states) {
    std::vector<int64_t> shape{batch, heads};
    for (int64_t size : resolveShape(state, artifact.dims()))
      shape.push_back(size);
    shapes.emplace_back(finalName(state.name), shape);
  }
  if (train)
    for (const TensorSpec &spec : artifact.tape())
      shapes.emplace_back(spec.name, argShape("tape", spec.name));
  return shapes;
}

torch::Tensor initialParam(const std::string &init, int64_t heads,
                           const std::vector<int64_t> &shape) {
  std::vector<int64_t> full{heads};
  full.insert(full.end(), shape.begin(), shape.end());
  auto number = [&](const std::string &text) {
    size_t used = 0;
    double value = 0;
    try {
      value = std::stod(text, &used);
    } catch (const std::exception &) {
      used = 0;
    }
    if (used == 0 || used != text.size())
      throw Error("param initialiser '" + init + "': '" + text + "' is not a number");
    return value;
  };
  if (init == "zeros")
    return torch::zeros(full);
  if (init == "ones")
    return torch::ones(full);
  if (init.rfind("constant:", 0) == 0)
    return torch::full(full, number(init.substr(9)));
  if (init.rfind("linspace:", 0) == 0) {
    std::string range = init.substr(9);
    size_t colon = range.find(':');
    if (colon == std::string::npos)
      throw Error("param initialiser '" + init + "': expected linspace:A:B");
    double first = number(range.substr(0, colon)), last = number(range.substr(colon + 1));
    torch::Tensor perHead = torch::linspace(first, heads > 1 ? last : first, heads);
    std::vector<int64_t> view(full.size(), 1);
    view[0] = heads;
    return perHead.view(view).expand(full).clone();
  }
  throw Error("param initialiser '" + init +
              "' is not zeros, ones, constant:V or linspace:A:B");
}

std::unique_ptr<FastWeightLayer> loadCompiledLayer(const std::string &path) {
  return std::make_unique<CompiledLayer>(Artifact::load(path));
}

} // namespace fwp
