//===- Layer.h - The fast-weight layer interface of the runtime -*- C++ -*-===//
//
// Every implementation of a paper layer (the eager reference, a compiled
// .fwpk on CPU or CUDA) is a FastWeightLayer: one per-head recurrence over
// time with the tensor contract of shared/MODELS.md:
//   seq inputs  [B, H, T, n]   (n = 1 for scalars such as beta)
//   params      [H, ...]       (one per head)
//   states      [B, H, ...]    (optional initial values "init.<state>", else 0)
//   outputs     "y" [B, H, T, d_out] and "final.<state>" for every state.
// forward() is differentiable through torch autograd.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace fwp {

/// Every user-facing runtime failure (bad file, bad tensor, bad config) is an
/// fwp::Error whose message names the file/tensor/field at fault.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using TensorMap = std::map<std::string, torch::Tensor>;

/// Named sizes of a layer, e.g. {"d": 16} or {"d": 16, "d_ff": 64}.
using Dims = std::map<std::string, int64_t>;

/// One named tensor of a layer; `shape` is the per-(batch, head, step) shape
/// written with dim names or decimal literals: {"d"}, {"d", "d_ff"}, {"1"}.
struct TensorSpec {
  std::string name;
  std::vector<std::string> shape;
};

struct LayerSignature {
  std::string layer;               ///< "delta_net", "rdn", ...
  std::vector<TensorSpec> seq;     ///< per-step inputs, [B, H, T, shape...]
  std::vector<TensorSpec> params;  ///< per-head params,  [H, shape...]
  std::vector<TensorSpec> states;  ///< recurrent states, [B, H, shape...]
  TensorSpec output;               ///< "y", [B, H, T, shape...]
};

/// Resolves a TensorSpec's shape against concrete dims; throws fwp::Error
/// naming the spec if a dim name is unknown.
std::vector<int64_t> resolveShape(const TensorSpec &spec, const Dims &dims);

/// The dim names a signature mentions, in order of first appearance
/// ({"d"} or {"d", "d_ff"}).
std::vector<std::string> dimNames(const LayerSignature &signature);

/// Names of a state's initial and final value in the tensor contract:
/// "init.W", "final.W".
std::string initName(const std::string &state);
std::string finalName(const std::string &state);

/// A state's buffer for a kernel that updates it in place (from the
/// state's value at the first step to its value after the last): a copy of
/// `inputs`' "init.<state>" with `options`, or zeros, shaped `shape`.
torch::Tensor initialState(const TensorMap &inputs, const std::string &state,
                           const std::vector<int64_t> &shape,
                           const torch::TensorOptions &options);

/// The starting value of a backward kernel's "energy" argument for fast
/// weight `state` (the energy form of a decaying weight's backward,
/// docs/design.md): rowsum(adj(W) (.) W) at the end of the span the kernel
/// runs over, from `forwardResults`' "final.<state>" and `grads`'
/// "grad.final.<state>" (zero when absent), shaped `shape` ([B, H, K]).
torch::Tensor initialEnergy(const std::string &state, const std::vector<int64_t> &shape,
                            const TensorMap &forwardResults, const TensorMap &grads);

/// What every tensor of one call agrees on.
struct CallShape {
  int64_t batch = 0;
  int64_t heads = 0;
  int64_t steps = 0;
  torch::ScalarType dtype = torch::kFloat;
  torch::Device device = torch::kCPU;
};

/// Checks `inputs` against the tensor contract of `signature` at `dims`:
/// every seq input and param present, nothing else but "init.<state>",
/// shapes [B, H, T, ...] / [H, ...] / [B, H, ...], all float32 or all
/// float64, all on one device. Throws fwp::Error naming the tensor and the
/// expected vs actual shape (or dtype/device).
CallShape validateInputs(const LayerSignature &signature, const Dims &dims,
                         const TensorMap &inputs);

/// Reads the dims of `signature` off the shapes of `inputs` (e.g. d from the
/// last size of q). Dims in `given` are kept and checked against the tensors;
/// dims no tensor mentions are left out. Tensors of the wrong rank or with
/// unknown names are skipped (validateInputs reports them). Throws fwp::Error
/// naming both tensors when two tensors disagree on a dim.
Dims inferDims(const LayerSignature &signature, const TensorMap &inputs,
               const Dims &given = {});

class FastWeightLayer {
public:
  virtual ~FastWeightLayer() = default;
  virtual const LayerSignature &signature() const = 0;
  virtual const Dims &dims() const = 0;
  /// `inputs` holds every seq input and param by name and optionally
  /// "init.<state>"; returns "y" and "final.<state>" for every state.
  /// Validates names, shapes, dtypes and devices (fwp::Error otherwise).
  virtual TensorMap forward(const TensorMap &inputs) const = 0;
  /// The initial values the layer asks for, by param name ("zeros", "ones",
  /// "constant:V", "linspace:A:B": the rules of fwp::initialParam; the IR's
  /// `fwp.param_init`), e.g. {"decay": "linspace:3.0:7.0"} for retnet. A
  /// param missing here takes the model's default.
  virtual std::map<std::string, std::string> paramInits() const { return {}; }
};

/// The layers of shared/MODELS.md: the paper's six, then the three whose
/// fast weights decay (gated_delta_net, retnet, gla) and delta_product
/// (docs/models.md).
const std::vector<std::string> &referenceLayerNames();

/// The eager LibTorch reference of layer `name` at `dims` (missing dims take
/// the defaults of MODELS.md's models: d = 16, d_ff = 64). Throws fwp::Error
/// for an unknown name or dim.
std::unique_ptr<FastWeightLayer> makeReferenceLayer(const std::string &name,
                                                    const Dims &dims = {});

} // namespace fwp
