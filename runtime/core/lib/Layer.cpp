//===- Layer.cpp - Shapes, dims and input validation of the layer contract ===//
//
// Everything here is shared by every FastWeightLayer (reference or compiled):
// it only looks at a LayerSignature and the tensors of one call.
//
//===----------------------------------------------------------------------===//
#include "fwp/runtime/Layer.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <sstream>

namespace fwp {
namespace {

bool isDecimal(const std::string &text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
}

std::string join(const std::vector<std::string> &parts) {
  std::string out;
  for (const auto &part : parts)
    out += (out.empty() ? "" : ", ") + part;
  return out;
}

std::string formatSizes(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < sizes.size(); ++i)
    os << (i ? ", " : "") << sizes[i];
  os << ']';
  return os.str();
}

std::string dtypeName(torch::ScalarType type) {
  switch (type) {
  case torch::kFloat:
    return "float32";
  case torch::kDouble:
    return "float64";
  default:
    return c10::toString(type);
  }
}

// Which part of the contract a tensor name belongs to.
enum class Role { Seq, Param, InitState };

struct Slot {
  Role role;
  const TensorSpec *spec;
};

std::optional<Slot> findSlot(const LayerSignature &sig, const std::string &name) {
  for (const auto &spec : sig.seq)
    if (spec.name == name)
      return Slot{Role::Seq, &spec};
  for (const auto &spec : sig.params)
    if (spec.name == name)
      return Slot{Role::Param, &spec};
  for (const auto &spec : sig.states)
    if (initName(spec.name) == name)
      return Slot{Role::InitState, &spec};
  return std::nullopt;
}

std::vector<std::string> leadingDimNames(Role role) {
  switch (role) {
  case Role::Seq:
    return {"B", "H", "T"};
  case Role::Param:
    return {"H"};
  case Role::InitState:
    return {"B", "H"};
  }
  return {};
}

const char *roleName(Role role) {
  switch (role) {
  case Role::Seq:
    return "seq input";
  case Role::Param:
    return "param";
  case Role::InitState:
    return "initial state";
  }
  return "";
}

std::vector<std::string> expectedNames(const LayerSignature &sig) {
  std::vector<std::string> names;
  for (const auto &spec : sig.seq)
    names.push_back(spec.name);
  for (const auto &spec : sig.params)
    names.push_back(spec.name);
  for (const auto &spec : sig.states)
    names.push_back(initName(spec.name) + " (optional)");
  return names;
}

} // namespace

std::vector<int64_t> resolveShape(const TensorSpec &spec, const Dims &dims) {
  std::vector<int64_t> sizes;
  for (const auto &entry : spec.shape) {
    if (isDecimal(entry)) {
      sizes.push_back(std::stoll(entry));
      continue;
    }
    auto found = dims.find(entry);
    if (found == dims.end())
      throw Error("tensor '" + spec.name + "': unknown dim '" + entry + "' in its shape [" +
                  join(spec.shape) + "]");
    sizes.push_back(found->second);
  }
  return sizes;
}

std::vector<std::string> dimNames(const LayerSignature &signature) {
  std::vector<std::string> names;
  auto collect = [&](const std::vector<TensorSpec> &specs) {
    for (const auto &spec : specs)
      for (const auto &entry : spec.shape)
        if (!isDecimal(entry) && std::find(names.begin(), names.end(), entry) == names.end())
          names.push_back(entry);
  };
  collect(signature.seq);
  collect(signature.params);
  collect(signature.states);
  collect({signature.output});
  return names;
}

std::string initName(const std::string &state) { return "init." + state; }
std::string finalName(const std::string &state) { return "final." + state; }

torch::Tensor initialState(const TensorMap &inputs, const std::string &state,
                           const std::vector<int64_t> &shape,
                           const torch::TensorOptions &options) {
  auto init = inputs.find(initName(state));
  if (init == inputs.end())
    return torch::zeros(shape, options);
  return init->second.detach().to(options.dtype()).clone(at::MemoryFormat::Contiguous).view(shape);
}

torch::Tensor initialEnergy(const std::string &state, const std::vector<int64_t> &shape,
                            const TensorMap &forwardResults, const TensorMap &grads) {
  const torch::Tensor &weight = forwardResults.at(finalName(state));
  auto grad = grads.find("grad." + finalName(state));
  if (grad == grads.end() || !grad->second.defined())
    return torch::zeros(shape, weight.options());
  return (grad->second.to(weight.scalar_type()).view(weight.sizes()) * weight)
      .sum(-1)
      .reshape(shape)
      .contiguous();
}

CallShape validateInputs(const LayerSignature &signature, const Dims &dims,
                         const TensorMap &inputs) {
  const std::string &layer = signature.layer;
  for (const auto &[name, tensor] : inputs) {
    if (!findSlot(signature, name))
      throw Error(layer + ": unexpected tensor '" + name + "' (expected: " +
                  join(expectedNames(signature)) + ")");
    if (!tensor.defined())
      throw Error(layer + ": tensor '" + name + "' is undefined");
  }
  auto requirePresent = [&](const std::vector<TensorSpec> &specs, Role role) {
    for (const auto &spec : specs)
      if (!inputs.count(spec.name))
        throw Error(layer + ": missing tensor '" + spec.name + "' (" + roleName(role) +
                    " of shape [" + join(leadingDimNames(role)) + ", " + join(spec.shape) + "])");
  };
  requirePresent(signature.seq, Role::Seq);
  requirePresent(signature.params, Role::Param);
  if (signature.seq.empty())
    throw Error(layer + ": the signature has no seq input");

  // The first seq input fixes dtype, device, B, H and T; all others must agree.
  const std::string &leader = signature.seq.front().name;
  const torch::Tensor &first = inputs.at(leader);
  CallShape call;
  call.dtype = first.scalar_type();
  call.device = first.device();
  if (call.dtype != torch::kFloat && call.dtype != torch::kDouble)
    throw Error(layer + ": tensor '" + leader + "' has dtype " + dtypeName(call.dtype) +
                "; expected float32 or float64");
  const size_t seqRank = 3 + signature.seq.front().shape.size();
  if (first.dim() == static_cast<int64_t>(seqRank)) {
    call.batch = first.size(0);
    call.heads = first.size(1);
    call.steps = first.size(2);
  }

  // Check the leading seq input first so its own shape error is the one reported.
  std::vector<std::string> order{leader};
  for (const auto &entry : inputs)
    if (entry.first != leader)
      order.push_back(entry.first);
  for (const std::string &name : order) {
    const torch::Tensor &tensor = inputs.at(name);
    const Slot slot = *findSlot(signature, name);
    if (tensor.scalar_type() != call.dtype)
      throw Error(layer + ": tensor '" + name + "' has dtype " + dtypeName(tensor.scalar_type()) +
                  " but '" + leader + "' has " + dtypeName(call.dtype) +
                  "; all tensors must be float32 or all float64");
    if (tensor.device() != call.device)
      throw Error(layer + ": tensor '" + name + "' is on " + tensor.device().str() + " but '" +
                  leader + "' is on " + call.device.str());

    std::vector<std::string> symbols = leadingDimNames(slot.role);
    std::vector<int64_t> expected;
    for (const auto &symbol : symbols) {
      // B, H, T are unknown only when the leading seq input itself is malformed.
      const bool known = first.dim() == static_cast<int64_t>(seqRank);
      int64_t size = symbol == "B" ? call.batch : symbol == "H" ? call.heads : call.steps;
      expected.push_back(known ? size : -1);
    }
    for (const auto &entry : slot.spec->shape)
      symbols.push_back(entry);
    const std::vector<int64_t> perStep = resolveShape(*slot.spec, dims);
    expected.insert(expected.end(), perStep.begin(), perStep.end());

    bool matches = tensor.dim() == static_cast<int64_t>(expected.size());
    for (size_t i = 0; matches && i < expected.size(); ++i)
      matches = expected[i] < 0 || tensor.size(static_cast<int64_t>(i)) == expected[i];
    if (!matches) {
      std::vector<std::string> shown;
      for (int64_t size : expected)
        shown.push_back(size < 0 ? "?" : std::to_string(size));
      throw Error(layer + ": tensor '" + name + "' (" + roleName(slot.role) + ") has shape " +
                  formatSizes(tensor.sizes()) + " but expected [" + join(symbols) + "] = [" +
                  join(shown) + "]");
    }
  }
  return call;
}

Dims inferDims(const LayerSignature &signature, const TensorMap &inputs, const Dims &given) {
  Dims dims = given;
  std::map<std::string, std::string> source; // dim -> the tensor that fixed it
  for (const auto &[name, tensor] : inputs) {
    const std::optional<Slot> slot = findSlot(signature, name);
    if (!slot || !tensor.defined())
      continue;
    const size_t lead = leadingDimNames(slot->role).size();
    if (tensor.dim() != static_cast<int64_t>(lead + slot->spec->shape.size()))
      continue;
    for (size_t i = 0; i < slot->spec->shape.size(); ++i) {
      const std::string &entry = slot->spec->shape[i];
      if (isDecimal(entry))
        continue;
      const int64_t size = tensor.size(static_cast<int64_t>(lead + i));
      auto [it, inserted] = dims.emplace(entry, size);
      if (inserted) {
        source[entry] = name;
      } else if (it->second != size) {
        const std::string origin = source.count(entry)
                                       ? "tensor '" + source[entry] + "' has " + entry + " = " +
                                             std::to_string(it->second)
                                       : entry + " = " + std::to_string(it->second) + " was given";
        throw Error(signature.layer + ": tensor '" + name + "' has shape " +
                    formatSizes(tensor.sizes()) + ", i.e. " + entry + " = " +
                    std::to_string(size) + ", but " + origin);
      }
    }
  }
  return dims;
}

} // namespace fwp
