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

/// What a backward pass needs of its forward: the call, the inputs by name,
/// the final states in signature order (the backward rebuilds the states
/// from them) and the tape by name.
struct SavedForward {
  std::shared_ptr<CallContext> call;
  TensorMap inputs;
  std::vector<torch::Tensor> finals;
  TensorMap tape;
};

void saveForward(torch::autograd::AutogradContext *ctx, at::TensorList inputs,
                 const std::vector<torch::Tensor> &finals, const TensorMap &tape,
                 std::shared_ptr<CallContext> call) {
  torch::autograd::variable_list saved(inputs.begin(), inputs.end());
  for (const torch::Tensor &final : finals)
    saved.push_back(final.detach());
  for (const TensorSpec &spec : call->artifact->tape())
    saved.push_back(tape.at(spec.name));
  ctx->save_for_backward(saved);
  ctx->saved_data["call"] =
      c10::IValue::make_capsule(c10::make_intrusive<CallHolder>(std::move(call)));
}

SavedForward restoreForward(torch::autograd::AutogradContext *ctx) {
  SavedForward out;
  out.call = c10::static_intrusive_pointer_cast<CallHolder>(ctx->saved_data["call"].toCapsule())
                 ->call;
  const Artifact &artifact = *out.call->artifact;
  auto saved = ctx->get_saved_variables();
  size_t next = 0;
  for (const std::string &name : out.call->inputNames)
    out.inputs[name] = saved[next++].detach();
  for (size_t i = 0; i < artifact.signature().states.size(); ++i)
    out.finals.push_back(saved[next++].detach());
  for (const TensorSpec &spec : artifact.tape())
    out.tape[spec.name] = saved[next++].detach();
  return out;
}

/// The CUDA twin of CompiledScanFunction: forward_train records the tape on
/// the device, backward rebuilds the states from the final ones.
class CudaScanFunction : public torch::autograd::Function<CudaScanFunction> {
public:
  static torch::autograd::variable_list
  forward(torch::autograd::AutogradContext *ctx, at::TensorList inputs,
          std::shared_ptr<CallContext> call) {
    const Artifact &artifact = *call->artifact;
    TensorMap named;
    for (size_t i = 0; i < inputs.size(); ++i)
      named[call->inputNames[i]] = inputs[i].detach();
    TensorMap results = cuda::runForward(*call->cuda, named, /*train=*/true);
    torch::autograd::variable_list outputs{results.at("y")};
    for (const TensorSpec &state : artifact.signature().states)
      outputs.push_back(results.at(finalName(state.name)));
    std::vector<torch::Tensor> finals(outputs.begin() + 1, outputs.end());
    saveForward(ctx, inputs, finals, results, std::move(call));
    return outputs;
  }

  static torch::autograd::variable_list
  backward(torch::autograd::AutogradContext *ctx,
           torch::autograd::variable_list gradOutputs) {
    SavedForward saved = restoreForward(ctx);
    const std::shared_ptr<CallContext> &call = saved.call;
    const Artifact &artifact = *call->artifact;
    const LayerSignature &signature = artifact.signature();
    const TensorMap &inputs = saved.inputs;
    TensorMap forwardResults = saved.tape, grads;
    for (size_t i = 0; i < signature.states.size(); ++i)
      forwardResults[finalName(signature.states[i].name)] = saved.finals[i];
    if (gradOutputs[0].defined())
      grads["grad.y"] = gradOutputs[0].to(artifact.dtype());
    for (size_t i = 0; i < signature.states.size(); ++i)
      if (gradOutputs[1 + i].defined())
        grads["grad." + finalName(signature.states[i].name)] =
            gradOutputs[1 + i].to(artifact.dtype());
    TensorMap results = cuda::runBackward(*call->cuda, inputs, forwardResults, grads);

    torch::autograd::variable_list gradInputs;
    for (const std::string &name : call->inputNames) {
      const torch::Tensor &input = inputs.at(name);
      gradInputs.push_back(results.at("grad." + name).view(input.sizes()).to(input.dtype()));
    }
    gradInputs.emplace_back(); // the CallContext argument
    return gradInputs;
  }
};

// The inputs travel as an at::TensorList: autograd tracks the tensors of a
// TensorList argument, but not those of a std::vector.
class CompiledScanFunction : public torch::autograd::Function<CompiledScanFunction> {
public:
  static torch::autograd::variable_list
  forward(torch::autograd::AutogradContext *ctx,
          at::TensorList inputs, std::shared_ptr<CallContext> call) {
    const Artifact &artifact = *call->artifact;
    TensorMap named;
    for (size_t i = 0; i < inputs.size(); ++i)
      named[call->inputNames[i]] = inputs[i];
    ForwardResult result = runForward(artifact, artifact.forwardTrain(), named,
                                      call->batch, call->heads, call->steps);
    torch::autograd::variable_list outputs{result.y};
    for (const torch::Tensor &final : result.finals)
      outputs.push_back(final);
    saveForward(ctx, inputs, result.finals, result.tape, std::move(call));
    return outputs;
  }

  static torch::autograd::variable_list
  backward(torch::autograd::AutogradContext *ctx,
           torch::autograd::variable_list gradOutputs) {
    SavedForward saved = restoreForward(ctx);
    const std::shared_ptr<CallContext> &call = saved.call;
    const Artifact &artifact = *call->artifact;
    const LayerSignature &signature = artifact.signature();
    const TensorMap &named = saved.inputs;
    const TensorMap &tape = saved.tape;
    TensorMap finals;
    for (size_t i = 0; i < signature.states.size(); ++i)
      finals[signature.states[i].name] = saved.finals[i];

    auto options = torch::TensorOptions().dtype(artifact.dtype());
    int64_t batch = call->batch, heads = call->heads, steps = call->steps;
    TensorMap gradState, gradParam, gradSeq;
    std::vector<Buffer> buffers;
    const CpuKernel &kernel = artifact.backward();
    for (const KernelArg &arg : kernel.args) {
      Buffer buffer;
      std::vector<int64_t> shape = tensorShape(arg, batch, heads, steps);
      if (arg.role == "seq") {
        buffer.tensor = named.at(arg.name).contiguous();
      } else if (arg.role == "param") {
        buffer.tensor = named.at(arg.name).contiguous();
        buffer.perHead = true;
      } else if (arg.role == "tape") {
        buffer.tensor = tape.at(arg.name);
      } else if (arg.role == "grad_output") {
        const torch::Tensor &grad = gradOutputs[0];
        buffer.tensor = grad.defined() ? grad.to(artifact.dtype()).contiguous()
                                       : torch::zeros(shape, options);
      } else if (arg.role == "state") {
        // The backward rebuilds the states in place: start from a copy.
        buffer.tensor = finals.at(arg.name).clone();
      } else if (arg.role == "grad_state") {
        size_t index = 0;
        while (signature.states[index].name != arg.name)
          ++index;
        const torch::Tensor &grad = gradOutputs[1 + index];
        std::vector<int64_t> stateShape{batch, heads};
        for (int64_t size : arg.shape)
          stateShape.push_back(size);
        buffer.tensor = grad.defined()
                            ? grad.to(artifact.dtype()).contiguous().clone().view(stateShape)
                            : torch::zeros(stateShape, options);
        gradState[arg.name] = buffer.tensor;
      } else if (arg.role == "grad_param") {
        // One accumulator per (batch, head); summed over the batch below.
        std::vector<int64_t> accumulatorShape{batch, heads};
        for (int64_t size : arg.shape)
          accumulatorShape.push_back(size);
        buffer.tensor = torch::zeros(accumulatorShape, options);
        gradParam[arg.name] = buffer.tensor;
      } else if (arg.role == "grad_seq") {
        buffer.tensor = torch::empty(shape, options);
        gradSeq[arg.name] = buffer.tensor;
      } else {
        throw Error(artifact.path() + ": role '" + arg.role +
                    "' in the backward kernel");
      }
      buffers.push_back(std::move(buffer));
    }
    runKernel(kernel, buffers, batch, heads, steps);

    torch::autograd::variable_list grads;
    for (const std::string &name : call->inputNames) {
      const torch::Tensor &input = named.at(name);
      torch::Tensor grad;
      if (gradSeq.count(name))
        grad = gradSeq.at(name);
      else if (gradParam.count(name))
        grad = gradParam.at(name).sum(0);
      else if (name.rfind("init.", 0) == 0)
        grad = gradState.at(name.substr(5));
      grads.push_back(grad.view(input.sizes()).to(input.dtype()));
    }
    grads.emplace_back(); // the CallContext argument
    return grads;
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
  readSpecs("states", signature.states);
  readSpecs("outputs", outputs);
  readSpecs("tape", artifact->tape_);
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
        context->cuda ? CudaScanFunction::apply(at::TensorList(autogradInputs), context)
                      : CompiledScanFunction::apply(at::TensorList(autogradInputs), context);
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

std::unique_ptr<FastWeightLayer> loadCompiledLayer(const std::string &path) {
  return std::make_unique<CompiledLayer>(Artifact::load(path));
}

} // namespace fwp
