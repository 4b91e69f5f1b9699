//===- CudaScan.cpp - A layer's GPU kernels on the runtime's tensors -------===//

#include "fwp/runtime/CudaScan.h"

#include <fstream>
#include <sstream>

namespace fwp::cuda {
namespace {

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path + ": cannot open");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

/// The tensor shape of an argument at (B, H, T); a scalar per step gets a
/// trailing 1, as the runtime's seq tensors [B, H, T, 1] have.
std::vector<int64_t> tensorShape(const ArgSpec &arg, int64_t B, int64_t H,
                                 int64_t T) {
  std::vector<int64_t> shape;
  for (int64_t dim : arg.shape)
    shape.push_back(dim == kBatch ? B : dim == kHeads ? H : dim == kSteps ? T : dim);
  if (!arg.shape.empty() && arg.shape.back() == kSteps)
    shape.push_back(1);
  return shape;
}

const torch::Tensor &find(const TensorMap &map, const std::string &name,
                          const std::string &what) {
  auto it = map.find(name);
  if (it == map.end())
    throw Error(what + ": no tensor '" + name + "'");
  return it->second;
}

/// B, H, T from the first seq input.
std::array<int64_t, 3> sizesOf(const KernelSpec &spec, const TensorMap &inputs) {
  for (const ArgSpec &arg : spec.args) {
    if (arg.role != "seq")
      continue;
    const torch::Tensor &t = find(inputs, arg.name, "CUDA layer " + spec.scan);
    if (t.dim() < 3)
      throw Error("CUDA layer " + spec.scan + ": seq input '" + arg.name +
                  "' must be [B, H, T, ...], got " + c10::str(t.sizes()));
    return {t.size(0), t.size(1), t.size(2)};
  }
  throw Error("CUDA layer " + spec.scan + ": the kernel has no seq input");
}

} // namespace

KernelBundle KernelBundle::load(const std::string &dir) {
  KernelBundle bundle;
  bundle.dir = dir;
  std::string path = dir + "/kernels.json";
  nlohmann::json manifest =
      nlohmann::json::parse(readFile(path), nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object())
    throw Error(path + ": not a JSON object");
  if (!manifest.contains("layer") || !manifest["layer"].is_string())
    throw Error(path + ": field 'layer' must be a string");
  bundle.layer = manifest["layer"].get<std::string>();
  if (manifest.contains("dims") && manifest["dims"].is_object())
    for (const auto &[name, value] : manifest["dims"].items()) {
      if (!value.is_number_integer())
        throw Error(path + ": dims." + name + " must be an integer");
      bundle.dims[name] = value.get<int64_t>();
    }
  if (!manifest.contains("cuda") || !manifest["cuda"].is_object())
    throw Error(path + ": field 'cuda' must be an object");
  const nlohmann::json &cuda = manifest["cuda"];
  auto entry = [&](const std::string &role, KernelSpec &into) {
    if (!cuda.contains(role))
      throw Error(path + ": cuda." + role + " is missing");
    into = KernelSpec::fromJson(cuda[role], path + ": cuda." + role);
    bundle.images[into.kernel] = readFile(dir + "/" + into.kernel + ".ptx");
  };
  entry("forward", bundle.forward);
  entry("forward_train", bundle.forwardTrain);
  entry("backward", bundle.backward);
  if (cuda.contains("backward_deferred"))
    entry("backward_deferred", bundle.backwardDeferred.emplace());
  return bundle;
}

KernelBundle KernelBundle::fromManifest(const nlohmann::json &cuda,
                                       std::map<std::string, std::string> images,
                                       const std::string &where) {
  KernelBundle bundle;
  bundle.dir = where;
  if (!cuda.is_object())
    throw Error(where + ": kernels.cuda must be an object");
  auto entry = [&](const std::string &role, KernelSpec &into) {
    if (!cuda.contains(role))
      throw Error(where + ": kernels.cuda." + role + " is missing");
    into = KernelSpec::fromJson(cuda[role], where + ": kernels.cuda." + role);
    if (!images.count(into.kernel))
      throw Error(where + ": no image for kernel " + into.kernel);
  };
  entry("forward", bundle.forward);
  entry("forward_train", bundle.forwardTrain);
  entry("backward", bundle.backward);
  if (cuda.contains("backward_deferred"))
    entry("backward_deferred", bundle.backwardDeferred.emplace());
  bundle.layer = bundle.forward.scan;
  bundle.images = std::move(images);
  return bundle;
}

const std::string &KernelBundle::image(const KernelSpec &spec) const {
  auto it = images.find(spec.kernel);
  if (it == images.end())
    throw Error(dir + ": no image for kernel " + spec.kernel);
  return it->second;
}

TensorMap runForward(const KernelBundle &bundle, const TensorMap &inputs,
                     bool train, const TensorMap &grads) {
  const KernelSpec &spec = train ? bundle.forwardTrain : bundle.forward;
  auto [B, H, T] = sizesOf(spec, inputs);
  torch::Device device = inputs.begin()->second.device();
  auto options = torch::TensorOptions().dtype(spec.dtype).device(device);
  std::string what = "CUDA layer " + spec.scan;
  TensorMap results;
  std::vector<torch::Tensor> args;
  for (const ArgSpec &arg : spec.args) {
    std::vector<int64_t> shape = tensorShape(arg, B, H, T);
    torch::Tensor tensor;
    if (arg.role == "seq" || arg.role == "param") {
      tensor = find(inputs, arg.name, what).contiguous();
    } else if (arg.role == "state") {
      // In/out: the kernel overwrites it with the final state.
      tensor = initialState(inputs, arg.name, shape, options);
      results[finalName(arg.name)] = tensor;
    } else if (arg.role == "output" || arg.role == "tape") {
      tensor = torch::empty(shape, options);
      results[arg.name] = tensor;
    } else if (arg.role == "grad_output") {
      auto grad = grads.find("grad." + arg.name);
      tensor = grad != grads.end() && grad->second.defined()
                   ? grad->second.to(spec.dtype).contiguous()
                   : torch::zeros(shape, options);
    } else {
      throw Error(what + ": argument role '" + arg.role + "' in a forward kernel");
    }
    args.push_back(tensor);
  }
  runKernel(spec, bundle.image(spec), args, B, H, T);
  return results;
}

namespace {

/// The deferred products after the backward (KernelBundle::backwardDeferred):
/// the weight from the inputs' initial state, the backward's `deferred.*`
/// from `results`; adds the kernel's gradients into `results`.
void runDeferred(const KernelBundle &bundle, const KernelSpec &spec, const TensorMap &inputs,
                 TensorMap &results) {
  auto [B, H, T] = sizesOf(spec, inputs);
  torch::Device device = inputs.begin()->second.device();
  auto options = torch::TensorOptions().dtype(spec.dtype).device(device);
  std::string what = "CUDA layer " + spec.scan;
  std::vector<torch::Tensor> args;
  std::vector<std::pair<std::string, torch::Tensor>> gradients;
  for (const ArgSpec &arg : spec.args) {
    std::vector<int64_t> shape = tensorShape(arg, B, H, T);
    torch::Tensor tensor;
    if (arg.role == "seq" || arg.role == "param") {
      tensor = find(inputs, arg.name, what).contiguous();
    } else if (arg.role == "state") {
      tensor = initialState(inputs, arg.name, shape, options);
    } else if (arg.role == "deferred") {
      tensor = find(results, arg.name, what);
    } else if (arg.role == "grad_seq") {
      tensor = torch::empty(shape, options);
      gradients.emplace_back("grad." + arg.name, tensor);
    } else {
      throw Error(what + ": argument role '" + arg.role + "' in a deferred kernel");
    }
    args.push_back(tensor);
  }
  runKernel(spec, bundle.image(spec), args, B, H, T);
  for (const auto &[name, gradient] : gradients)
    find(results, name, what).add_(gradient);
}

} // namespace

TensorMap runBackward(const KernelBundle &bundle, const TensorMap &inputs,
                      const TensorMap &forwardResults, const TensorMap &grads) {
  const KernelSpec &spec = bundle.backward;
  auto [B, H, T] = sizesOf(spec, inputs);
  torch::Device device = inputs.begin()->second.device();
  auto options = torch::TensorOptions().dtype(spec.dtype).device(device);
  std::string what = "CUDA layer " + spec.scan;
  TensorMap results;
  std::vector<torch::Tensor> args;
  for (const ArgSpec &arg : spec.args) {
    std::vector<int64_t> shape = tensorShape(arg, B, H, T);
    torch::Tensor tensor;
    if (arg.role == "seq" || arg.role == "param") {
      tensor = find(inputs, arg.name, what).contiguous();
    } else if (arg.role == "tape") {
      tensor = find(forwardResults, arg.name, what);
    } else if (arg.role == "grad_output") {
      auto grad = grads.find("grad." + arg.name);
      tensor = grad != grads.end() ? grad->second.contiguous()
                                   : torch::zeros(shape, options);
    } else if (arg.role == "state") {
      // Rebuilt backwards in place from the final state: work on a copy.
      tensor = find(forwardResults, finalName(arg.name), what).clone();
    } else if (arg.role == "grad_state") {
      auto grad = grads.find("grad." + finalName(arg.name));
      tensor = grad != grads.end() ? grad->second.contiguous().clone().view(shape)
                                   : torch::zeros(shape, options);
      results["grad." + initName(arg.name)] = tensor;
    } else if (arg.role == "grad_param") {
      tensor = torch::zeros(shape, options); // per (b, h); summed below
      results["grad." + arg.name] = tensor;
    } else if (arg.role == "grad_seq") {
      tensor = torch::empty(shape, options);
      results["grad." + arg.name] = tensor;
    } else if (arg.role == "energy") {
      tensor = initialEnergy(arg.name, shape, forwardResults, grads);
    } else if (arg.role == "deferred") {
      tensor = torch::empty(shape, options);
      results[arg.name] = tensor;
    } else {
      throw Error(what + ": argument role '" + arg.role + "' in a backward kernel");
    }
    args.push_back(tensor);
  }
  runKernel(spec, bundle.image(spec), args, B, H, T);
  for (const ArgSpec &arg : spec.args)
    if (arg.role == "grad_param")
      results["grad." + arg.name] = results["grad." + arg.name].sum(0);
  if (bundle.backwardDeferred)
    runDeferred(bundle, *bundle.backwardDeferred, inputs, results);
  return results;
}

} // namespace fwp::cuda
