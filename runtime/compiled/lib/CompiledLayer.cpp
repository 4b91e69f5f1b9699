//===- CompiledLayer.cpp - Layers compiled by fwp-compile -----------------===//

#include "fwp/runtime/CompiledLayer.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <torch/autograd.h>

#include <dlfcn.h>
#include <elf.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace fwp {
namespace {

using nlohmann::json;

constexpr int kFormatVersion = 1;

const std::set<std::string> &knownRoles() {
  static const std::set<std::string> roles = {
      "seq",  "param",       "state",      "output",     "tape",
      "grad_output", "grad_state", "grad_param", "grad_seq"};
  return roles;
}

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

/// Where each buffer of a kernel call lives: a contiguous tensor whose
/// leading dims are [B, H] (per batch and head) or [H] (params).
struct Buffer {
  torch::Tensor tensor;
  bool perHead = false; ///< [H, ...] rather than [B, H, ...]
};

/// Runs `kernel` over every (batch, head) pair in parallel.
void runKernel(const CpuKernel &kernel, const std::vector<Buffer> &buffers,
               int64_t batch, int64_t heads, int64_t steps) {
  std::vector<std::vector<int64_t>> sizes;
  std::vector<int64_t> strides; // elements between consecutive pairs
  std::vector<char *> bases;
  for (size_t i = 0; i < kernel.args.size(); ++i) {
    std::vector<int64_t> shape = kernel.args[i].shape;
    int64_t elements = 1;
    for (int64_t &size : shape) {
      if (size == -1)
        size = steps;
      elements *= size;
    }
    sizes.push_back(shape);
    strides.push_back(elements * buffers[i].tensor.element_size());
    bases.push_back(static_cast<char *>(buffers[i].tensor.data_ptr()));
  }
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t pair = begin; pair < end; ++pair) {
      int64_t head = pair % heads;
      std::vector<Descriptor> descriptors;
      descriptors.reserve(kernel.args.size());
      std::vector<void *> pointers;
      for (size_t i = 0; i < kernel.args.size(); ++i) {
        int64_t index = buffers[i].perHead ? head : pair;
        descriptors.emplace_back(bases[i] + index * strides[i], sizes[i]);
        pointers.push_back(descriptors.back().get());
      }
      kernel.entry(steps, pointers.data());
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

struct CallContext;

/// Carries the call's context through the autograd graph (IValue capsule).
struct CallHolder : torch::CustomClassHolder {
  explicit CallHolder(std::shared_ptr<CallContext> call) : call(std::move(call)) {}
  std::shared_ptr<CallContext> call;
};

struct CallContext {
  std::shared_ptr<const Artifact> artifact;
  /// The artifact's CUDA kernels for the call's device (CUDA calls only).
  const cuda::KernelBundle *cuda = nullptr;
  std::vector<std::string> inputNames; ///< order of the autograd inputs
  std::vector<std::string> savedNames; ///< what the forward kept (tape or checkpoints)
  int64_t batch = 0, heads = 0, steps = 0;
};

/// The forward pass: runs `kernel` (forward or forward_train) and returns
/// y, final states (in signature order) and, for forward_train, the tape.
struct ForwardResult {
  torch::Tensor y;
  std::vector<torch::Tensor> finals;
  TensorMap tape;
};

ForwardResult runForward(const Artifact &artifact, const CpuKernel &kernel,
                         const TensorMap &inputs, int64_t batch, int64_t heads,
                         int64_t steps) {
  auto options = torch::TensorOptions().dtype(artifact.dtype());
  ForwardResult result;
  TensorMap finals;
  for (const TensorSpec &state : artifact.signature().states) {
    auto init = inputs.find(initName(state.name));
    std::vector<int64_t> shape{batch, heads};
    for (int64_t size : resolveShape(state, artifact.dims()))
      shape.push_back(size);
    finals[state.name] = init != inputs.end()
                             ? init->second.detach().contiguous().clone().view(shape)
                             : torch::zeros(shape, options);
  }
  std::vector<Buffer> buffers;
  for (const KernelArg &arg : kernel.args) {
    Buffer buffer;
    if (arg.role == "seq") {
      buffer.tensor = inputs.at(arg.name).detach().contiguous();
    } else if (arg.role == "param") {
      buffer.tensor = inputs.at(arg.name).detach().contiguous();
      buffer.perHead = true;
    } else if (arg.role == "state") {
      buffer.tensor = finals.at(arg.name);
    } else if (arg.role == "output") {
      result.y = torch::empty(tensorShape(arg, batch, heads, steps), options);
      buffer.tensor = result.y;
    } else if (arg.role == "tape") {
      buffer.tensor = torch::empty(tensorShape(arg, batch, heads, steps), options);
      result.tape[arg.name] = buffer.tensor;
    } else {
      throw Error(artifact.path() + ": kernel " + kernel.symbol +
                  " has an argument of role '" + arg.role + "' in a forward kernel");
    }
    buffers.push_back(std::move(buffer));
  }
  runKernel(kernel, buffers, batch, heads, steps);
  for (const TensorSpec &state : artifact.signature().states)
    result.finals.push_back(finals.at(state.name));
  return result;
}

/// The backward kernel on CPU tensors, with the same contract as
/// cuda::runBackward: `forwardResults` holds the tape and "final.<state>",
/// `grads` "grad.y" and "grad.final.<state>" (missing ones are zeros); the
/// result "grad.<seq>", "grad.<param>" (summed over the batch) and
/// "grad.init.<state>".
TensorMap runCpuBackward(const Artifact &artifact, const TensorMap &inputs,
                         const TensorMap &forwardResults, const TensorMap &grads,
                         int64_t batch, int64_t heads, int64_t steps) {
  auto options = torch::TensorOptions().dtype(artifact.dtype());
  TensorMap results;
  std::vector<Buffer> buffers;
  const CpuKernel &kernel = artifact.backward();
  auto find = [&](const TensorMap &map, const std::string &name) -> const torch::Tensor & {
    auto it = map.find(name);
    if (it == map.end())
      throw Error(artifact.path() + ": the backward kernel needs '" + name + "'");
    return it->second;
  };
  for (const KernelArg &arg : kernel.args) {
    Buffer buffer;
    std::vector<int64_t> shape = tensorShape(arg, batch, heads, steps);
    if (arg.role == "seq") {
      buffer.tensor = find(inputs, arg.name).contiguous();
    } else if (arg.role == "param") {
      buffer.tensor = find(inputs, arg.name).contiguous();
      buffer.perHead = true;
    } else if (arg.role == "tape") {
      buffer.tensor = find(forwardResults, arg.name).contiguous();
    } else if (arg.role == "grad_output") {
      auto grad = grads.find("grad." + arg.name);
      buffer.tensor = grad != grads.end() && grad->second.defined()
                          ? grad->second.to(artifact.dtype()).contiguous()
                          : torch::zeros(shape, options);
    } else if (arg.role == "state") {
      // The backward rebuilds the states in place: start from a copy.
      buffer.tensor = find(forwardResults, finalName(arg.name)).contiguous().clone();
    } else if (arg.role == "grad_state") {
      std::vector<int64_t> stateShape{batch, heads};
      for (int64_t size : arg.shape)
        stateShape.push_back(size);
      auto grad = grads.find("grad." + finalName(arg.name));
      buffer.tensor = grad != grads.end() && grad->second.defined()
                          ? grad->second.to(artifact.dtype()).contiguous().clone().view(stateShape)
                          : torch::zeros(stateShape, options);
      results["grad." + initName(arg.name)] = buffer.tensor;
    } else if (arg.role == "grad_param") {
      // One accumulator per (batch, head); summed over the batch below.
      std::vector<int64_t> accumulatorShape{batch, heads};
      for (int64_t size : arg.shape)
        accumulatorShape.push_back(size);
      buffer.tensor = torch::zeros(accumulatorShape, options);
      results["grad." + arg.name] = buffer.tensor;
    } else if (arg.role == "grad_seq") {
      buffer.tensor = torch::empty(shape, options);
      results["grad." + arg.name] = buffer.tensor;
    } else {
      throw Error(artifact.path() + ": role '" + arg.role + "' in the backward kernel");
    }
    buffers.push_back(std::move(buffer));
  }
  runKernel(kernel, buffers, batch, heads, steps);
  for (const KernelArg &arg : kernel.args)
    if (arg.role == "grad_param")
      results["grad." + arg.name] = results["grad." + arg.name].sum(0);
  return results;
}

/// Runs one call's kernels on its device: forward (train: forward_train,
/// which also returns the tape) and backward, both over inputs whose seq
/// tensors may cover any number of steps (the segments of a checkpointed
/// backward).
struct Kernels {
  const CallContext &call;

  int64_t stepsOf(const TensorMap &inputs) const {
    for (const TensorSpec &spec : call.artifact->signature().seq)
      if (auto it = inputs.find(spec.name); it != inputs.end())
        return it->second.size(2);
    return call.steps;
  }
  /// y, "final.<state>" and, for train, the tape.
  TensorMap forward(const TensorMap &inputs, bool train) const {
    if (call.cuda)
      return cuda::runForward(*call.cuda, inputs, train);
    const Artifact &artifact = *call.artifact;
    ForwardResult result =
        runForward(artifact, train ? artifact.forwardTrain() : artifact.forward(), inputs,
                   call.batch, call.heads, stepsOf(inputs));
    TensorMap out = std::move(result.tape);
    out["y"] = result.y;
    for (size_t i = 0; i < artifact.signature().states.size(); ++i)
      out[finalName(artifact.signature().states[i].name)] = result.finals[i];
    return out;
  }
  TensorMap backward(const TensorMap &inputs, const TensorMap &forwardResults,
                     const TensorMap &grads) const {
    if (call.cuda)
      return cuda::runBackward(*call.cuda, inputs, forwardResults, grads);
    return runCpuBackward(*call.artifact, inputs, forwardResults, grads, call.batch,
                          call.heads, stepsOf(inputs));
  }
};

/// The inputs of steps [begin, end): seq tensors sliced in time, params as
/// they are, the given states as initial states.
TensorMap segmentInputs(const Artifact &artifact, const TensorMap &inputs, int64_t begin,
                        int64_t end, const TensorMap &states) {
  TensorMap out;
  for (const TensorSpec &spec : artifact.signature().seq)
    out[spec.name] = inputs.at(spec.name).narrow(2, begin, end - begin).contiguous();
  for (const TensorSpec &spec : artifact.signature().params)
    out[spec.name] = inputs.at(spec.name);
  for (const auto &[name, state] : states)
    out[initName(name)] = state;
  return out;
}

/// Checkpoint names in the saved map: the states at the start of segment k.
std::string checkpointName(size_t segment, const std::string &state) {
  return "checkpoint." + std::to_string(segment) + "." + state;
}

/// The forward of a call that needs gradients. Without checkpoints:
/// forward_train, saving its tape. With checkpoints every C steps: the
/// plain forward segment by segment, saving only the states at each
/// segment's start (the backward recomputes the tape of one segment at a
/// time).
struct TrainForward {
  torch::Tensor y;
  std::vector<torch::Tensor> finals; ///< signature order
  TensorMap saved;                   ///< tape or checkpoints
};

TrainForward trainForward(const Kernels &kernels, const TensorMap &inputs) {
  const Artifact &artifact = *kernels.call.artifact;
  const LayerSignature &signature = artifact.signature();
  TrainForward out;
  int64_t every = artifact.checkpointEvery();
  if (every <= 0) {
    TensorMap results = kernels.forward(inputs, /*train=*/true);
    out.y = results.at("y");
    for (const TensorSpec &state : signature.states)
      out.finals.push_back(results.at(finalName(state.name)));
    for (const TensorSpec &spec : artifact.tape())
      out.saved[spec.name] = results.at(spec.name);
    return out;
  }
  int64_t steps = kernels.call.steps;
  TensorMap states;
  for (const TensorSpec &state : signature.states)
    if (auto init = inputs.find(initName(state.name)); init != inputs.end())
      states[state.name] = init->second.detach();
  std::vector<torch::Tensor> ys;
  for (int64_t begin = 0, segment = 0; begin < steps; begin += every, ++segment) {
    int64_t end = std::min(steps, begin + every);
    for (const auto &[name, state] : states)
      out.saved[checkpointName(segment, name)] = state;
    TensorMap results =
        kernels.forward(segmentInputs(artifact, inputs, begin, end, states), /*train=*/false);
    ys.push_back(results.at("y"));
    for (const TensorSpec &state : signature.states)
      states[state.name] = results.at(finalName(state.name));
  }
  out.y = ys.size() == 1 ? ys[0] : torch::cat(ys, 2);
  for (const TensorSpec &state : signature.states)
    out.finals.push_back(states.at(state.name));
  return out;
}

/// The backward of a call: `grads` holds "grad.y" and "grad.final.<state>".
/// Returns "grad.<input>" for the seq inputs, params and initial states.
TensorMap trainBackward(const Kernels &kernels, const TensorMap &inputs,
                        const std::vector<torch::Tensor> &finals, const TensorMap &saved,
                        const TensorMap &grads) {
  const Artifact &artifact = *kernels.call.artifact;
  const LayerSignature &signature = artifact.signature();
  int64_t every = artifact.checkpointEvery();
  if (every <= 0) {
    TensorMap forwardResults = saved;
    for (size_t i = 0; i < signature.states.size(); ++i)
      forwardResults[finalName(signature.states[i].name)] = finals[i];
    return kernels.backward(inputs, forwardResults, grads);
  }
  // Segments from the last to the first: recompute the segment's tape from
  // its checkpoint (forward_train), then run the backward over it, carrying
  // the states' gradients into the segment before.
  int64_t steps = kernels.call.steps;
  int64_t segments = (steps + every - 1) / every;
  TensorMap carried; // "grad.final.<state>"
  for (const TensorSpec &state : signature.states)
    if (auto grad = grads.find("grad." + finalName(state.name)); grad != grads.end())
      carried[grad->first] = grad->second;
  std::vector<std::map<std::string, torch::Tensor>> seqGrads(segments);
  TensorMap out;
  for (int64_t segment = segments - 1; segment >= 0; --segment) {
    int64_t begin = segment * every, end = std::min(steps, begin + every);
    TensorMap states;
    for (const TensorSpec &state : signature.states)
      if (auto it = saved.find(checkpointName(segment, state.name)); it != saved.end())
        states[state.name] = it->second;
    TensorMap segmentIn = segmentInputs(artifact, inputs, begin, end, states);
    TensorMap forwardResults = kernels.forward(segmentIn, /*train=*/true);
    TensorMap segmentGrads = carried;
    if (auto gradY = grads.find("grad.y"); gradY != grads.end() && gradY->second.defined())
      segmentGrads["grad.y"] = gradY->second.narrow(2, begin, end - begin).contiguous();
    TensorMap results = kernels.backward(segmentIn, forwardResults, segmentGrads);
    for (const TensorSpec &spec : signature.seq)
      seqGrads[segment]["grad." + spec.name] = results.at("grad." + spec.name);
    for (const TensorSpec &spec : signature.params) {
      torch::Tensor &total = out["grad." + spec.name];
      const torch::Tensor &part = results.at("grad." + spec.name);
      total = total.defined() ? total + part : part;
    }
    for (const TensorSpec &state : signature.states)
      carried["grad." + finalName(state.name)] = results.at("grad." + initName(state.name));
  }
  for (const TensorSpec &spec : signature.seq) {
    std::vector<torch::Tensor> parts;
    for (const auto &segment : seqGrads)
      parts.push_back(segment.at("grad." + spec.name));
    out["grad." + spec.name] = parts.size() == 1 ? parts[0] : torch::cat(parts, 2);
  }
  for (const TensorSpec &state : signature.states)
    out["grad." + initName(state.name)] = carried.at("grad." + finalName(state.name));
  return out;
}

/// The compiled layer as a torch autograd function, on CPU or CUDA tensors.
// The inputs travel as an at::TensorList: autograd tracks the tensors of a
// TensorList argument, but not those of a std::vector.
class CompiledScanFunction : public torch::autograd::Function<CompiledScanFunction> {
public:
  static torch::autograd::variable_list
  forward(torch::autograd::AutogradContext *ctx, at::TensorList inputs,
          std::shared_ptr<CallContext> call) {
    TensorMap named;
    for (size_t i = 0; i < inputs.size(); ++i)
      named[call->inputNames[i]] = inputs[i].detach();
    TrainForward result = trainForward(Kernels{*call}, named);
    torch::autograd::variable_list outputs{result.y};
    for (const torch::Tensor &final : result.finals)
      outputs.push_back(final);
    // Saved: the inputs, the final states, then what the forward kept.
    torch::autograd::variable_list saved(inputs.begin(), inputs.end());
    for (const torch::Tensor &final : result.finals)
      saved.push_back(final.detach());
    for (const auto &[name, tensor] : result.saved) {
      call->savedNames.push_back(name);
      saved.push_back(tensor);
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["call"] =
        c10::IValue::make_capsule(c10::make_intrusive<CallHolder>(std::move(call)));
    return outputs;
  }

  static torch::autograd::variable_list
  backward(torch::autograd::AutogradContext *ctx,
           torch::autograd::variable_list gradOutputs) {
    std::shared_ptr<CallContext> call =
        c10::static_intrusive_pointer_cast<CallHolder>(ctx->saved_data["call"].toCapsule())
            ->call;
    const Artifact &artifact = *call->artifact;
    const LayerSignature &signature = artifact.signature();
    auto savedVariables = ctx->get_saved_variables();
    size_t next = 0;
    TensorMap inputs, saved;
    std::vector<torch::Tensor> finals;
    for (const std::string &name : call->inputNames)
      inputs[name] = savedVariables[next++].detach();
    for (size_t i = 0; i < signature.states.size(); ++i)
      finals.push_back(savedVariables[next++].detach());
    for (const std::string &name : call->savedNames)
      saved[name] = savedVariables[next++].detach();

    TensorMap grads;
    if (gradOutputs[0].defined())
      grads["grad.y"] = gradOutputs[0].to(artifact.dtype()).contiguous();
    for (size_t i = 0; i < signature.states.size(); ++i)
      if (gradOutputs[1 + i].defined())
        grads["grad." + finalName(signature.states[i].name)] =
            gradOutputs[1 + i].to(artifact.dtype()).contiguous();
    TensorMap results = trainBackward(Kernels{*call}, inputs, finals, saved, grads);

    torch::autograd::variable_list gradInputs;
    for (const std::string &name : call->inputNames) {
      const torch::Tensor &input = inputs.at(name);
      gradInputs.push_back(results.at("grad." + name).view(input.sizes()).to(input.dtype()));
    }
    gradInputs.emplace_back(); // the CallContext argument
    return gradInputs;
  }
};

/// Checks that `path` is a complete x86-64 ELF shared library before it is
/// handed to dlopen: the loader maps segments past the end of a truncated
/// file and dies of SIGBUS instead of failing. Returns the file's size.
uint64_t checkElfFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path + ": cannot open the artifact");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto fail = [&](const std::string &why) -> void {
    throw Error(path + ": not a .fwpk artifact (" + why + ")");
  };
  if (bytes.size() < 4 || bytes.compare(0, 4, "\x7f" "ELF") != 0)
    fail("no ELF header");
  if (bytes.size() < sizeof(Elf64_Ehdr))
    fail("truncated ELF header");
  Elf64_Ehdr header;
  std::memcpy(&header, bytes.data(), sizeof header);
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_ident[EI_DATA] != ELFDATA2LSB ||
      header.e_machine != EM_X86_64)
    fail("not a 64-bit x86-64 ELF file");
  if (header.e_type != ET_DYN)
    fail("not a shared library");
  uint64_t size = bytes.size();
  uint64_t tableEnd = header.e_phoff + uint64_t(header.e_phnum) * sizeof(Elf64_Phdr);
  if (header.e_phentsize != sizeof(Elf64_Phdr) || tableEnd > size)
    fail("program headers past the end of the file: truncated?");
  for (unsigned i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr segment;
    std::memcpy(&segment, bytes.data() + header.e_phoff + i * sizeof segment, sizeof segment);
    if (segment.p_type == PT_LOAD && segment.p_offset + segment.p_filesz > size)
      fail("segment " + std::to_string(i) + " ends at byte " +
           std::to_string(segment.p_offset + segment.p_filesz) + " but the file has " +
           std::to_string(size) + ": truncated?");
  }
  if (header.e_shoff + uint64_t(header.e_shnum) * header.e_shentsize > size)
    fail("section headers past the end of the file: truncated?");
  return size;
}

void parseKernel(const ManifestReader &reader, const json &kernels,
                 const std::string &role, void *handle, CpuKernel &kernel) {
  std::string field = "kernels.cpu." + role;
  const json &entry = reader.member(kernels, "kernels.cpu", role);
  kernel.symbol = reader.string(entry, field, "symbol");
  const json &args = reader.array(entry, field, "args");
  for (size_t i = 0; i < args.size(); ++i) {
    std::string argField = field + ".args[" + std::to_string(i) + "]";
    KernelArg arg;
    arg.role = reader.string(args[i], argField, "role");
    if (!knownRoles().count(arg.role))
      reader.fail(argField + ".role", "is '" + arg.role + "', not a known role");
    arg.name = reader.string(args[i], argField, "name");
    arg.shape = reader.shape(reader.member(args[i], argField, "shape"),
                             argField + ".shape");
    kernel.args.push_back(std::move(arg));
  }
  dlerror();
  void *symbol = dlsym(handle, kernel.symbol.c_str());
  if (!symbol)
    reader.fail(field + ".symbol", "names '" + kernel.symbol +
                                       "', which the library does not export");
  kernel.entry = reinterpret_cast<void (*)(int64_t, void **)>(symbol);
}

/// The CUDA half of an artifact: the kernels with their PTX, and with their
/// cubins when every kernel has one.
struct CudaImages {
  std::optional<cuda::KernelBundle> ptx, cubin;
  std::string chip;
};

CudaImages loadCudaKernels(const ManifestReader &reader, const json &cuda,
                           void *handle, const std::string &path, uint64_t fileSize,
                           torch::ScalarType dtype) {
  if (!cuda.is_object())
    reader.fail("kernels.cuda", "must be an object");
  std::map<std::string, std::string> ptx, cubins;
  std::string chip;
  bool allCubins = true;
  for (const char *role : {"forward", "forward_train", "backward"}) {
    std::string field = std::string("kernels.cuda.") + role;
    const json &entry = reader.member(cuda, "kernels.cuda", role);
    std::string kernel = reader.string(entry, field, "kernel");
    std::string symbol = reader.string(entry, field, "ptx_symbol");
    dlerror();
    auto *text = static_cast<const char *>(dlsym(handle, symbol.c_str()));
    if (!text)
      reader.fail(field + ".ptx_symbol",
                  "names '" + symbol + "', which the library does not export");
    ptx[kernel] = text;
    if (ptx[kernel].find(".entry " + kernel) == std::string::npos)
      reader.fail(field + ".ptx_symbol",
                  "names PTX without the entry '" + kernel + "'");
    chip = reader.string(entry, field, "chip");
    auto cubinSymbol = entry.find("cubin_symbol");
    if (cubinSymbol == entry.end()) {
      allCubins = false;
      continue;
    }
    const json &bytes = reader.member(entry, field, "cubin_bytes");
    if (!cubinSymbol->is_string() || !bytes.is_number_integer() || bytes.get<int64_t>() <= 0 ||
        bytes.get<uint64_t>() > fileSize)
      reader.fail(field + ".cubin_symbol",
                  "must be a symbol name with a cubin_bytes between 1 and the file's size");
    auto *image = static_cast<const char *>(
        dlsym(handle, cubinSymbol->get<std::string>().c_str()));
    if (!image)
      reader.fail(field + ".cubin_symbol", "names '" + cubinSymbol->get<std::string>() +
                                               "', which the library does not export");
    std::string cubin(image, image + bytes.get<int64_t>());
    if (cubin.compare(0, 4, ELFMAG) != 0)
      reader.fail(field + ".cubin_symbol", "does not name an ELF image");
    cubins[kernel] = std::move(cubin);
  }
  CudaImages images;
  images.ptx = cuda::KernelBundle::fromManifest(cuda, std::move(ptx), path);
  if (allCubins)
    images.cubin = cuda::KernelBundle::fromManifest(cuda, std::move(cubins), path);
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
  const uint64_t fileSize = checkElfFile(path);
  std::shared_ptr<Artifact> artifact(new Artifact());
  artifact->path_ = path;
  // RTLD_LOCAL: two artifacts define the same helper symbols.
  artifact->handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!artifact->handle_) {
    const char *why = dlerror();
    throw Error(path + ": cannot load the artifact: " + (why ? why : "unknown error"));
  }
  auto *text = static_cast<const char *>(dlsym(artifact->handle_, "fwp_manifest"));
  if (!text)
    throw Error(path + ": not a .fwpk artifact (no fwp_manifest symbol)");
  json manifest = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded())
    throw Error(path + ": the manifest is not valid JSON");

  ManifestReader reader(path);
  if (reader.string(manifest, "manifest", "format") != "fwpk")
    reader.fail("format", "is not \"fwpk\"");
  const json &version = reader.member(manifest, "manifest", "version");
  if (!version.is_number_integer() || version.get<int>() != kFormatVersion)
    reader.fail("version", "is " + version.dump() + "; this runtime reads version " +
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
  parseKernel(reader, cpu, "forward", artifact->handle_, artifact->forward_);
  parseKernel(reader, cpu, "forward_train", artifact->handle_, artifact->forwardTrain_);
  parseKernel(reader, cpu, "backward", artifact->handle_, artifact->backward_);

  if (auto cuda = kernels.find("cuda"); cuda != kernels.end()) {
    CudaImages images =
        loadCudaKernels(reader, *cuda, artifact->handle_, path, fileSize, artifact->dtype_);
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
  for (const CpuKernel *kernel :
       {&artifact->forward_, &artifact->forwardTrain_, &artifact->backward_}) {
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
  return artifact;
}

Artifact::~Artifact() {
  if (handle_)
    dlclose(handle_);
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
  CallShape call = validateInputs(signature, artifact_->dims(), inputs);
  if (call.dtype != artifact_->dtype())
    throw Error(artifact_->path() + ": the layer was compiled for " +
                (artifact_->dtype() == torch::kFloat ? "float32" : "float64") +
                " tensors, got " + c10::toString(call.dtype));
  auto context = std::make_shared<CallContext>();
  context->artifact = artifact_;
  if (call.device.is_cuda()) {
    if (!artifact_->hasCuda())
      throw Error(artifact_->path() + ": this artifact has CPU kernels only; got tensors on " +
                  call.device.str() + " (recompile it with fwp-compile --cuda=on)");
    context->cuda =
        &artifact_->cudaKernels(cuda::deviceLimits(call.device.index()).chip);
  } else if (!call.device.is_cpu()) {
    throw Error(artifact_->path() + ": compiled layers run on CPU or CUDA tensors, got " +
                call.device.str());
  }
  context->batch = call.batch;
  context->heads = call.heads;
  context->steps = call.steps;
  torch::autograd::variable_list autogradInputs;
  bool needsGrad = false;
  auto add = [&](const std::string &name) {
    auto it = inputs.find(name);
    if (it == inputs.end())
      return;
    context->inputNames.push_back(name);
    autogradInputs.push_back(it->second);
    needsGrad |= it->second.requires_grad();
  };
  for (const TensorSpec &spec : signature.seq)
    add(spec.name);
  for (const TensorSpec &spec : signature.params)
    add(spec.name);
  for (const TensorSpec &spec : signature.states)
    add(initName(spec.name));

  TensorMap outputs;
  if (needsGrad && torch::GradMode::is_enabled()) {
    torch::autograd::variable_list results =
        CompiledScanFunction::apply(at::TensorList(autogradInputs), context);
    outputs["y"] = results[0];
    for (size_t i = 0; i < signature.states.size(); ++i)
      outputs[finalName(signature.states[i].name)] = results[1 + i];
    return outputs;
  }
  if (context->cuda) {
    TensorMap results = cuda::runForward(*context->cuda, inputs, /*train=*/false);
    outputs["y"] = results.at("y");
    for (const TensorSpec &state : signature.states)
      outputs[finalName(state.name)] = results.at(finalName(state.name));
    return outputs;
  }
  ForwardResult result = runForward(*artifact_, artifact_->forward(), inputs,
                                    call.batch, call.heads, call.steps);
  outputs["y"] = result.y;
  for (size_t i = 0; i < signature.states.size(); ++i)
    outputs[finalName(signature.states[i].name)] = result.finals[i];
  return outputs;
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
