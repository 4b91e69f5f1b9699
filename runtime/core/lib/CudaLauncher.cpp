//===- CudaLauncher.cpp - Running fwp's compiled GPU kernels --------------===//

#include "fwp/runtime/CudaLauncher.h"

#ifdef FWP_ENABLE_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <dlfcn.h>

#include <mutex>
#include <set>
#include <sstream>

namespace fwp::cuda {
namespace {

using nlohmann::json;

//===----------------------------------------------------------------------===//
// The driver API, loaded at run time
//===----------------------------------------------------------------------===//

// The few driver types and constants used here, as cuda.h defines them
// (the driver's ABI); declared here so that no CUDA header is needed.
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;
using CUjit_option = int;
constexpr CUresult CUDA_SUCCESS = 0;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X = 5;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
constexpr int CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0;
constexpr int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER = 5;
constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
/// The default dynamic shared memory a block may use without opting in.
constexpr int64_t kDefaultSharedBytes = 48 * 1024;

class Driver {
public:
  /// The driver, or nullptr (with the reason) when it cannot be used.
  static const Driver *get(std::string *why) {
    static std::string failure;
    static const Driver *driver = [] {
      static Driver instance;
      failure = instance.load();
      return failure.empty() ? &instance : nullptr;
    }();
    if (!driver && why)
      *why = failure;
    return driver;
  }

  /// Throws fwp::Error for a failed call, with the driver's error name.
  void check(CUresult rc, const std::string &what) const {
    if (rc == CUDA_SUCCESS)
      return;
    const char *name = nullptr, *text = nullptr;
    cuGetErrorName(rc, &name);
    cuGetErrorString(rc, &text);
    throw Error("CUDA: " + what + " failed: " + (name ? name : "error") +
                " (" + std::to_string(rc) + ")" + (text ? std::string(": ") + text : ""));
  }

  CUresult (*cuInit)(unsigned);
  CUresult (*cuDeviceGetCount)(int *);
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuCtxGetCurrent)(CUcontext *);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuModuleLoadDataEx)(CUmodule *, const void *, unsigned,
                                 CUjit_option *, void **);
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*cuFuncGetAttribute)(int *, int, CUfunction);
  CUresult (*cuFuncSetAttribute)(CUfunction, int, int);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned,
                             unsigned, unsigned, unsigned, unsigned, CUstream,
                             void **, void **);
  CUresult (*cuGetErrorName)(CUresult, const char **);
  CUresult (*cuGetErrorString)(CUresult, const char **);

private:
  template <typename F> bool bind(F &function, const char *name) {
    function = reinterpret_cast<F>(dlsym(handle, name));
    return function != nullptr;
  }

  std::string load() {
    handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char *error = dlerror();
      return std::string("cannot load the CUDA driver libcuda.so.1 (") +
             (error ? error : "not found") + ")";
    }
    const char *missing = nullptr;
#define FWP_BIND(name)                                                         \
  if (!missing && !bind(name, #name))                                          \
    missing = #name;
    FWP_BIND(cuInit)
    FWP_BIND(cuDeviceGetCount)
    FWP_BIND(cuDeviceGet)
    FWP_BIND(cuDeviceGetAttribute)
    FWP_BIND(cuDevicePrimaryCtxRetain)
    FWP_BIND(cuCtxGetCurrent)
    FWP_BIND(cuCtxSetCurrent)
    FWP_BIND(cuModuleLoadDataEx)
    FWP_BIND(cuModuleGetFunction)
    FWP_BIND(cuFuncGetAttribute)
    FWP_BIND(cuFuncSetAttribute)
    FWP_BIND(cuLaunchKernel)
    FWP_BIND(cuGetErrorName)
    FWP_BIND(cuGetErrorString)
#undef FWP_BIND
    if (missing)
      return std::string("the CUDA driver lacks ") + missing;
    if (cuInit(0) != CUDA_SUCCESS)
      return "cuInit failed: no usable CUDA device or driver";
    int count = 0;
    if (cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0)
      return "the CUDA driver reports no device";
    return "";
  }

  void *handle = nullptr;
};

const Driver &requireDriver(const std::string &what) {
  std::string why;
  const Driver *driver = Driver::get(&why);
  if (!driver)
    throw Error(what + ": " + why);
  return *driver;
}

/// Makes `context` current for a scope, then restores the previous one, so
/// that LibTorch's own notion of the current device is left alone.
class ContextScope {
public:
  ContextScope(const Driver &driver, CUcontext context) : driver(driver) {
    driver.check(driver.cuCtxGetCurrent(&previous), "cuCtxGetCurrent");
    if (previous != context)
      driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent");
  }
  ~ContextScope() { driver.cuCtxSetCurrent(previous); }

private:
  const Driver &driver;
  CUcontext previous = nullptr;
};

/// Primary contexts, limits and loaded functions, cached for the process.
struct Cache {
  std::mutex mutex;
  std::map<int, CUcontext> contexts;
  std::map<int, DeviceLimits> limits;
  struct Function {
    CUfunction function = nullptr;
    int maxThreads = 0;
    int64_t sharedOptIn = kDefaultSharedBytes;
  };
  /// (context, image digest, kernel) -> function; modules stay loaded.
  std::map<std::tuple<CUcontext, size_t, size_t, std::string>, Function>
      functions;
};

Cache &cache() {
  static Cache instance;
  return instance;
}

CUcontext primaryContext(const Driver &driver, int index) {
  auto it = cache().contexts.find(index);
  if (it != cache().contexts.end())
    return it->second;
  CUdevice device;
  driver.check(driver.cuDeviceGet(&device, index), "cuDeviceGet");
  CUcontext context;
  driver.check(driver.cuDevicePrimaryCtxRetain(&context, device),
               "cuDevicePrimaryCtxRetain");
  cache().contexts[index] = context;
  return context;
}

DeviceLimits queryLimits(const Driver &driver, int index) {
  auto it = cache().limits.find(index);
  if (it != cache().limits.end())
    return it->second;
  CUdevice device;
  driver.check(driver.cuDeviceGet(&device, index), "cuDeviceGet");
  auto attribute = [&](int which) {
    int value = 0;
    driver.check(driver.cuDeviceGetAttribute(&value, which, device),
                 "cuDeviceGetAttribute");
    return value;
  };
  DeviceLimits limits;
  limits.chip = "sm_" +
                std::to_string(attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)) +
                std::to_string(attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR));
  limits.device = "cuda:" + std::to_string(index) + " (" + limits.chip + ")";
  limits.maxThreadsPerBlock = attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
  limits.maxGridX = attribute(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X);
  limits.maxSharedBytesPerBlock =
      attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
  cache().limits[index] = limits;
  return limits;
}

Cache::Function &loadFunction(const Driver &driver, CUcontext context,
                              const std::string &image,
                              const std::string &kernel) {
  auto key = std::make_tuple(context, std::hash<std::string>{}(image),
                             image.size(), kernel);
  auto it = cache().functions.find(key);
  if (it != cache().functions.end())
    return it->second;
  // PTX must be NUL-terminated for the JIT; a cubin is passed as is.
  std::string data = image;
  if (data.empty() || data.back() != '\0')
    data.push_back('\0');
  std::vector<char> log(8192, '\0');
  CUjit_option options[] = {CU_JIT_ERROR_LOG_BUFFER,
                            CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *values[] = {log.data(), reinterpret_cast<void *>(log.size())};
  CUmodule module = nullptr;
  CUresult rc =
      driver.cuModuleLoadDataEx(&module, data.data(), 2, options, values);
  if (rc != CUDA_SUCCESS) {
    std::string detail(log.data());
    try {
      driver.check(rc, "loading the module of kernel " + kernel);
    } catch (const Error &error) {
      throw Error(std::string(error.what()) +
                  (detail.empty() ? "" : "\nJIT log: " + detail));
    }
  }
  Cache::Function function;
  driver.check(driver.cuModuleGetFunction(&function.function, module,
                                          kernel.c_str()),
               "finding kernel " + kernel + " in its module");
  driver.check(driver.cuFuncGetAttribute(&function.maxThreads,
                                         CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
                                         function.function),
               "cuFuncGetAttribute");
  return cache().functions[key] = function;
}

//===----------------------------------------------------------------------===//
// Manifest entries
//===----------------------------------------------------------------------===//

std::string shapeText(const std::vector<int64_t> &shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) {
    os << (i ? ", " : "");
    if (shape[i] == kBatch)
      os << "B";
    else if (shape[i] == kHeads)
      os << "H";
    else if (shape[i] == kSteps)
      os << "T";
    else
      os << shape[i];
  }
  os << ']';
  return os.str();
}

} // namespace

KernelSpec KernelSpec::fromJson(const json &entry, const std::string &where) {
  auto fail = [&](const std::string &field, const std::string &what) -> void {
    throw Error(where + (field.empty() ? "" : "." + field) + " " + what);
  };
  if (!entry.is_object())
    fail("", "must be an object");
  auto member = [&](const std::string &key) -> const json & {
    auto it = entry.find(key);
    if (it == entry.end())
      fail(key, "is missing");
    return *it;
  };
  auto integer = [&](const json &value, const std::string &field) {
    if (!value.is_number_integer())
      fail(field, "must be an integer");
    return value.get<int64_t>();
  };
  auto string = [&](const std::string &key) {
    const json &value = member(key);
    if (!value.is_string())
      fail(key, "must be a string");
    return value.get<std::string>();
  };

  KernelSpec spec;
  spec.kernel = string("kernel");
  if (spec.kernel.empty())
    fail("kernel", "is empty");
  spec.scan = string("scan");
  std::string dtype = string("dtype");
  if (dtype == "f32")
    spec.dtype = torch::kFloat;
  else if (dtype == "f64")
    spec.dtype = torch::kDouble;
  else
    fail("dtype", "is '" + dtype + "', not f32 or f64");

  const json &block = member("block");
  if (!block.is_array() || block.size() != 3 || integer(block[1], "block[1]") != 1 ||
      integer(block[2], "block[2]") != 1)
    fail("block", "must be [threads, 1, 1]");
  spec.blockSize = integer(block[0], "block[0]");
  if (spec.blockSize <= 0)
    fail("block[0]", "must be positive");
  if (member("grid") != json::array({"B*H", 1, 1}))
    fail("grid", "is " + member("grid").dump() +
                     "; this runtime launches [\"B*H\", 1, 1] grids only");
  if (member("scalar_args") != json::array({"B", "H", "T"}))
    fail("scalar_args", "is " + member("scalar_args").dump() +
                            "; this runtime passes [\"B\", \"H\", \"T\"]");
  spec.sharedBytes = integer(member("shared_bytes"), "shared_bytes");
  if (spec.sharedBytes < 0)
    fail("shared_bytes", "must not be negative");

  const json &args = member("args");
  if (!args.is_array() || args.empty())
    fail("args", "must be a non-empty array");
  for (size_t i = 0; i < args.size(); ++i) {
    std::string field = "args[" + std::to_string(i) + "]";
    const json &arg = args[i];
    if (!arg.is_object() || !arg.contains("role") || !arg.contains("name") ||
        !arg.contains("shape"))
      fail(field, "must be an object with role, name and shape");
    if (!arg["role"].is_string() || !knownArgRoles().count(arg["role"].get<std::string>()))
      fail(field + ".role", "is " + arg["role"].dump() + ", not a known role");
    if (!arg["name"].is_string() || arg["name"].get<std::string>().empty())
      fail(field + ".name", "must be a non-empty string");
    ArgSpec spec_;
    spec_.role = arg["role"].get<std::string>();
    spec_.name = arg["name"].get<std::string>();
    const json &shape = arg["shape"];
    if (!shape.is_array())
      fail(field + ".shape", "must be an array");
    for (const json &dim : shape) {
      if (dim == "B")
        spec_.shape.push_back(kBatch);
      else if (dim == "H")
        spec_.shape.push_back(kHeads);
      else if (dim.is_number_integer() &&
               (dim.get<int64_t>() > 0 || dim.get<int64_t>() == -1))
        spec_.shape.push_back(dim.get<int64_t>());
      else
        fail(field + ".shape", "holds " + dim.dump() +
                                   "; sizes are positive, -1 (T), \"B\" or \"H\"");
    }
    // Params are per head; everything else per (batch, head).
    bool perHead = spec_.role == "param";
    bool leading = perHead ? spec_.shape.size() >= 1 && spec_.shape[0] == kHeads
                           : spec_.shape.size() >= 2 && spec_.shape[0] == kBatch &&
                                 spec_.shape[1] == kHeads;
    if (!leading)
      fail(field + ".shape", std::string("must start with ") +
                                 (perHead ? "[\"H\"]" : "[\"B\", \"H\"]"));
    spec.args.push_back(std::move(spec_));
  }
  return spec;
}

int64_t argElements(const ArgSpec &arg, int64_t B, int64_t H, int64_t T) {
  int64_t elements = 1;
  for (int64_t dim : arg.shape)
    elements *= dim == kBatch ? B : dim == kHeads ? H : dim == kSteps ? T : dim;
  return elements;
}

void validateLaunch(const KernelSpec &spec, int64_t B, int64_t H, int64_t T,
                    const DeviceLimits &limits) {
  std::string kernel = "CUDA kernel " + spec.kernel;
  if (B < 0 || H < 0 || T < 0)
    throw Error(kernel + ": B, H, T must not be negative (got " +
                std::to_string(B) + ", " + std::to_string(H) + ", " +
                std::to_string(T) + ")");
  if (spec.blockSize > limits.maxThreadsPerBlock)
    throw Error(kernel + ": a block of " + std::to_string(spec.blockSize) +
                " threads exceeds the " + std::to_string(limits.maxThreadsPerBlock) +
                " threads per block of " + limits.device);
  if (limits.kernelMaxThreadsPerBlock > 0 &&
      spec.blockSize > limits.kernelMaxThreadsPerBlock)
    throw Error(kernel + ": a block of " + std::to_string(spec.blockSize) +
                " threads needs more registers than " + limits.device +
                " has; the kernel allows at most " +
                std::to_string(limits.kernelMaxThreadsPerBlock) +
                " threads per block (recompile with a smaller GPU block size)");
  if (spec.sharedBytes > limits.maxSharedBytesPerBlock)
    throw Error(kernel + ": needs " + std::to_string(spec.sharedBytes) +
                " bytes of shared memory per block; " + limits.device +
                " allows " + std::to_string(limits.maxSharedBytesPerBlock));
  if (H != 0 && B > limits.maxGridX / H)
    throw Error(kernel + ": a grid of B * H = " + std::to_string(B) + " * " +
                std::to_string(H) + " blocks exceeds the " +
                std::to_string(limits.maxGridX) + " blocks of " + limits.device);
}

void checkArguments(const KernelSpec &spec,
                    const std::vector<torch::Tensor> &args, int64_t B,
                    int64_t H, int64_t T) {
  std::string kernel = "CUDA kernel " + spec.kernel;
  if (args.size() != spec.args.size())
    throw Error(kernel + " takes " + std::to_string(spec.args.size()) +
                " tensors, got " + std::to_string(args.size()));
  std::optional<torch::Device> device;
  for (size_t i = 0; i < args.size(); ++i) {
    const ArgSpec &arg = spec.args[i];
    const torch::Tensor &tensor = args[i];
    std::string what = kernel + ": argument " + std::to_string(i) + " (" +
                       arg.role + " '" + arg.name + "', " + shapeText(arg.shape) + ")";
    if (!tensor.defined())
      throw Error(what + " is an undefined tensor");
    if (!tensor.is_cuda())
      throw Error(what + " must be a CUDA tensor, not one on " +
                  tensor.device().str());
    if (device && tensor.device() != *device)
      throw Error(what + " is on " + tensor.device().str() +
                  " but the first argument is on " + device->str());
    device = tensor.device();
    if (tensor.scalar_type() != spec.dtype)
      throw Error(what + " has dtype " + std::string(c10::toString(tensor.scalar_type())) +
                  ", the kernel computes in " + c10::toString(spec.dtype));
    if (!tensor.is_contiguous())
      throw Error(what + " must be contiguous");
    int64_t expected = argElements(arg, B, H, T);
    if (tensor.numel() != expected)
      throw Error(what + " has " + std::to_string(tensor.numel()) +
                  " elements, expected " + std::to_string(expected) +
                  " at B=" + std::to_string(B) + ", H=" + std::to_string(H) +
                  ", T=" + std::to_string(T));
    bool perHead = arg.role == "param";
    bool leadOk = perHead ? tensor.dim() >= 1 && tensor.size(0) == H
                          : tensor.dim() >= 2 && tensor.size(0) == B &&
                                tensor.size(1) == H;
    if (!leadOk)
      throw Error(what + " has shape " + c10::str(tensor.sizes()) +
                  ", which does not start with " +
                  (perHead ? "[H]" : "[B, H]"));
  }
}

bool driverAvailable(std::string *why) { return Driver::get(why) != nullptr; }

DeviceLimits deviceLimits(int index) {
  const Driver &driver = requireDriver("CUDA device limits");
  std::lock_guard<std::mutex> lock(cache().mutex);
  return queryLimits(driver, index);
}

void runKernel(const KernelSpec &spec, const std::string &image,
               const std::vector<torch::Tensor> &args, int64_t B, int64_t H,
               int64_t T) {
  checkArguments(spec, args, B, H, T);
  if (image.empty())
    throw Error("CUDA kernel " + spec.kernel + ": no PTX or cubin image");
  validateLaunch(spec, B, H, T, DeviceLimits{"any device", 1024, 1 << 30,
                                             2147483647, 0});
  if (B == 0 || H == 0)
    return; // no (batch, head) pair: nothing to run
  const Driver &driver = requireDriver("CUDA kernel " + spec.kernel);
  int index = args[0].device().index();

  std::lock_guard<std::mutex> lock(cache().mutex);
  CUcontext context = primaryContext(driver, index);
  ContextScope scope(driver, context);
  DeviceLimits limits = queryLimits(driver, index);
  Cache::Function &function = loadFunction(driver, context, image, spec.kernel);
  limits.kernelMaxThreadsPerBlock = function.maxThreads;
  validateLaunch(spec, B, H, T, limits);
  if (spec.sharedBytes > function.sharedOptIn) {
    driver.check(driver.cuFuncSetAttribute(
                     function.function,
                     CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                     int(spec.sharedBytes)),
                 "allowing " + std::to_string(spec.sharedBytes) +
                     " bytes of shared memory for kernel " + spec.kernel);
    function.sharedOptIn = spec.sharedBytes;
  }

  CUstream stream = nullptr; // the legacy default stream
#ifdef FWP_ENABLE_CUDA
  stream = reinterpret_cast<CUstream>(
      c10::cuda::getCurrentCUDAStream(index).stream());
#endif
  std::vector<CUdeviceptr> pointers;
  for (const torch::Tensor &tensor : args)
    pointers.push_back(reinterpret_cast<CUdeviceptr>(tensor.data_ptr()));
  int64_t sizes[3] = {B, H, T};
  std::vector<void *> params;
  for (CUdeviceptr &pointer : pointers)
    params.push_back(&pointer);
  for (int64_t &size : sizes)
    params.push_back(&size);
  driver.check(driver.cuLaunchKernel(function.function, unsigned(B * H), 1, 1,
                                     unsigned(spec.blockSize), 1, 1,
                                     unsigned(spec.sharedBytes), stream,
                                     params.data(), nullptr),
               "launching kernel " + spec.kernel);
}

void runKernel(const json &entry, const std::string &image,
               const std::vector<torch::Tensor> &args, int64_t B, int64_t H,
               int64_t T) {
  runKernel(KernelSpec::fromJson(entry, "kernels.cuda entry"), image, args, B,
            H, T);
}

void runKernel(const json &entry, const std::string &image,
               const std::map<std::string, torch::Tensor> &tensorsByKey,
               int64_t B, int64_t H, int64_t T) {
  KernelSpec spec = KernelSpec::fromJson(entry, "kernels.cuda entry");
  std::vector<torch::Tensor> args;
  for (const ArgSpec &arg : spec.args) {
    auto it = tensorsByKey.find(argKey(arg));
    if (it == tensorsByKey.end())
      throw Error("CUDA kernel " + spec.kernel + ": no tensor for argument '" +
                  argKey(arg) + "'");
    args.push_back(it->second);
  }
  for (const auto &[key, tensor] : tensorsByKey) {
    bool used = false;
    for (const ArgSpec &arg : spec.args)
      used |= argKey(arg) == key;
    if (!used)
      throw Error("CUDA kernel " + spec.kernel + " has no argument '" + key + "'");
  }
  runKernel(spec, image, args, B, H, T);
}

const std::set<std::string> &knownArgRoles() {
  static const std::set<std::string> roles = {
      "seq",        "param",      "state",      "output",   "tape",   "grad_output",
      "grad_state", "grad_param", "grad_seq",   "energy",   "deferred"};
  return roles;
}

} // namespace fwp::cuda
