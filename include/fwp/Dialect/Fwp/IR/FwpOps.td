//===- FwpOps.td - Operations of the fwp dialect -----------*- tablegen -*-===//
#ifndef FWP_DIALECT_FWP_IR_FWPOPS_TD
#define FWP_DIALECT_FWP_IR_FWPOPS_TD

include "fwp/Dialect/Fwp/IR/FwpDialect.td"
include "fwp/Dialect/Fwp/IR/FwpTypes.td"
include "fwp/Dialect/Fwp/IR/FwpInterfaces.td"
include "mlir/IR/OpAsmInterface.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

def Fwp_Float : AnyTypeOf<[F32, F64], "f32 or f64 scalar">;
def Fwp_Vector : VectorOfRankAndType<[1], [F32, F64]>;
def Fwp_Value : AnyTypeOf<[Fwp_Float, Fwp_Vector], "f32/f64 scalar or 1-D vector">;
def Fwp_AnyValue : AnyTypeOf<[Fwp_Float, Fwp_Vector, Fwp_FastWeightType],
                             "scalar, 1-D vector or fast weight">;

class Fwp_Op<string mnemonic, list<Trait> traits = []>
    : Op<Fwp_Dialect, mnemonic, traits>;

//===----------------------------------------------------------------------===//
// The recurrence
//===----------------------------------------------------------------------===//

def Fwp_ScanOp : Fwp_Op<"scan", [
    Symbol, IsolatedFromAbove, SingleBlock,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "one head of a fast-weight layer: a recurrence over time";
  let description = [{
    A `fwp.scan` is a fast-weight layer for one (batch, head) pair. Its region
    is the body of one time step. The entry block's arguments are, in order:

    * `seq`: the step's sequence inputs (a slice `[t]` of a `[T, n]` input),
    * `params`: loop-invariant slow weights (their gradients are summed over
      time),
    * `states`: the recurrent state at `t - 1` (fast-weight matrices and
      vectors such as the previous output; zero unless an initial value is
      given).

    The body ends in `fwp.yield` with the states at `t` followed by the step's
    outputs. `dims` names the sizes the model is written in, so that tools can
    re-specialise it (`fwp-compile --dim d=32`); `reverse` runs time backwards
    (the backward scans that `fwp-differentiate` builds do).

    A body op may carry `fwp.phase = "prologue"` or `"epilogue"`
    (`fwp-split-time-parallel` sets them): a prologue op uses only seq
    inputs, params and prologue values, so a lowering may compute it for all
    steps before the time loop; an epilogue op feeds only epilogue ops and
    outputs (no state, no other op) and reads no state matrix, so it may run
    after the time loop. Only side-effect free ops computing scalars or
    vectors may carry a phase; the verifier checks these rules.

    ```mlir
    fwp.scan @linear dims(d = 4)
        seq(%q : vector<4xf32>, %k : vector<4xf32>, %v : vector<4xf32>)
        states(%W : !fwp.fast_weight<4x4xf32>)
        outputs(y : vector<4xf32>) {
      %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
      %y = fwp.read %W1, %q : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
      fwp.yield %W1, %y : !fwp.fast_weight<4x4xf32>, vector<4xf32>
    }
    ```
  }];
  let arguments = (ins
    SymbolNameAttr:$sym_name,
    DictionaryAttr:$dims,
    StrArrayAttr:$seq_names,
    StrArrayAttr:$param_names,
    StrArrayAttr:$state_names,
    StrArrayAttr:$output_names,
    TypeArrayAttr:$output_types,
    UnitAttr:$reverse
  );
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    OpBuilder<(ins "::llvm::StringRef":$name, "::mlir::DictionaryAttr":$dims,
      "::llvm::ArrayRef<::llvm::StringRef>":$seqNames,
      "::mlir::TypeRange":$seqTypes,
      "::llvm::ArrayRef<::llvm::StringRef>":$paramNames,
      "::mlir::TypeRange":$paramTypes,
      "::llvm::ArrayRef<::llvm::StringRef>":$stateNames,
      "::mlir::TypeRange":$stateTypes,
      "::llvm::ArrayRef<::llvm::StringRef>":$outputNames,
      "::mlir::TypeRange":$outputTypes, "bool":$reverse)>
  ];
  let extraClassDeclaration = [{
    ::mlir::Block &getBodyBlock() { return getBody().front(); }
    unsigned getNumSeq() { return getSeqNames().size(); }
    unsigned getNumParams() { return getParamNames().size(); }
    unsigned getNumStates() { return getStateNames().size(); }
    unsigned getNumOutputs() { return getOutputNames().size(); }
    ::mlir::Block::BlockArgListType getSeqArgs() {
      return getBodyBlock().getArguments().take_front(getNumSeq());
    }
    ::mlir::Block::BlockArgListType getParamArgs() {
      return getBodyBlock().getArguments().slice(getNumSeq(), getNumParams());
    }
    ::mlir::Block::BlockArgListType getStateArgs() {
      return getBodyBlock().getArguments().slice(getNumSeq() + getNumParams(),
                                                 getNumStates());
    }
    ::mlir::fwp::YieldOp getYield();
    /// Value of dim `name`, or 0 when the scan does not declare it.
    int64_t getDim(::llvm::StringRef name);
  }];
}

def Fwp_YieldOp : Fwp_Op<"yield", [Pure, Terminator, HasParent<"ScanOp">, ReturnLike]> {
  let summary = "ends a scan step: the new states, then the step's outputs";
  let description = [{
    Terminates the body of a `fwp.scan`. Its operands are the states at time
    `t` (in the order of the scan's `states`) followed by the step's outputs
    (in the order of `outputs`).

    ```mlir
    fwp.yield %W1, %y : !fwp.fast_weight<4x4xf32>, vector<4xf32>
    ```
  }];
  let arguments = (ins Variadic<Fwp_AnyValue>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

//===----------------------------------------------------------------------===//
// Fast-weight writes and reads
//===----------------------------------------------------------------------===//

def Fwp_ReadOp : Fwp_Op<"read", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>]> {
  let summary = "query a fast weight: y[m] = sum_e W[e, m] q[e]";
  let description = [{
    Retrieves the value stored under `query`: `y = W^T q`, i.e.
    `y[m] = sum_e W[e, m] q[e]`. It also serves as the row-vector by matrix
    product `s R` with a slow matrix param `R`.

    ```mlir
    %y = fwp.read %W, %q : !fwp.fast_weight<16x32xf32>, vector<16xf32> -> vector<32xf32>
    ```
  }];
  let arguments = (ins Fwp_FastWeightType:$weight, Fwp_Vector:$query);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = [{
    $weight `,` $query attr-dict `:` qualified(type($weight)) `,` type($query) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Fwp_ReadTransposedOp : Fwp_Op<"read_transposed", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>]> {
  let summary = "the transposed read: y[e] = sum_m W[e, m] x[m]";
  let description = [{
    Multiplies the fast weight by a value-space vector: `y = W x`. Adjoints of
    reads and writes use it.

    ```mlir
    %g = fwp.read_transposed %W, %x : !fwp.fast_weight<16x32xf32>, vector<32xf32> -> vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_FastWeightType:$weight, Fwp_Vector:$value);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = [{
    $weight `,` $value attr-dict `:` qualified(type($weight)) `,` type($value) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Fwp_WriteSumOp : Fwp_Op<"write_sum", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>,
    DeclareOpInterfaceMethods<Fwp_FastWeightUpdateOpInterface, ["buildInverseTape", "buildInverse", "recomputeOtherResults", "getLinearUpdate"]>,
    AllTypesMatch<["weight", "result"]>]> {
  let summary = "the sum (Hebbian) write: W + k (x) v";
  let description = [{
    Adds the outer product of `key` and `value`:
    `W'[e, m] = W[e, m] + k[e] v[m]`, the write of the linear Transformer.
    Canonicalization merges a write whose value is the previous write's
    scaled (`fwp.scale`, `fwp.neg`) into it: `W + k1 (x) v + k2 (x) c v =
    W + (k1 + c k2) (x) v`.

    ```mlir
    %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_FastWeightType:$weight, Fwp_Vector:$key, Fwp_Vector:$value);
  let results = (outs Fwp_FastWeightType:$result);
  let assemblyFormat = [{
    $weight `,` $key `,` $value attr-dict `:` qualified(type($weight)) `,` type($key) `,` type($value)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

def Fwp_WriteDeltaOp : Fwp_Op<"write_delta", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>,
    DeclareOpInterfaceMethods<Fwp_FastWeightUpdateOpInterface, ["buildInverseTape", "buildInverse", "recomputeOtherResults", "getLinearUpdate"]>,
    AllTypesMatch<["weight", "new_weight"]>,
    AllTypesMatch<["value", "retrieved"]>,
    TypesMatchWith<"beta is the element type of the weight", "weight", "beta",
                   "::llvm::cast<::mlir::fwp::FastWeightType>($_self).getElementType()">]> {
  let summary = "the delta-rule write with learning rate beta";
  let description = [{
    Replaces the value stored under `key` by a `beta`-interpolation towards
    `value`: with the retrieved value `vbar = W^T k`,
    `W'[e, m] = W[e, m] + k[e] beta (v[m] - vbar[m])`. Returns the new weight
    and the retrieved value (which bodies and adjoints may reuse). `beta` is
    used as given (apply `fwp.sigmoid` first for a learned rate).

    ```mlir
    %W1, %vbar = fwp.write_delta %W, %k, %v, %b : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_FastWeightType:$weight, Fwp_Vector:$key,
                       Fwp_Vector:$value, Fwp_Float:$beta);
  let results = (outs Fwp_FastWeightType:$new_weight, Fwp_Vector:$retrieved);
  let assemblyFormat = [{
    $weight `,` $key `,` $value `,` $beta attr-dict `:` qualified(type($weight)) `,` type($key) `,` type($value)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The adjoint rule of the energy form (AdjointEmitter::tracksEnergy).
    ::mlir::LogicalResult buildEnergyAdjoint(AdjointEmitter &a, ::mlir::Value gW,
                                             ::mlir::Value gRetrieved,
                                             ::mlir::Value diff);
  }];
}

//===----------------------------------------------------------------------===//
// Feature maps
//===----------------------------------------------------------------------===//

class Fwp_UnaryVectorOp<string mnemonic, list<Trait> traits = []>
    : Fwp_Op<mnemonic, !listconcat([Pure, SameOperandsAndResultType,
                                    DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>], traits)> {
  let arguments = (ins Fwp_Vector:$x);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$x attr-dict `:` type($x)";
}

def Fwp_EluPlusOneOp : Fwp_UnaryVectorOp<"elu_plus_one"> {
  let summary = "the ELU+1 feature map: elu(x) + 1";
  let description = [{
    `y = x + 1` where `x > 0`, `exp(x)` elsewhere: a positive feature map.

    ```mlir
    %f = fwp.elu_plus_one %k : vector<16xf32>
    ```
  }];
}

def Fwp_SumNormOp : Fwp_UnaryVectorOp<"sum_norm"> {
  let summary = "sum normalisation: x / (sum(x) + eps)";
  let description = [{
    Divides by the sum of the entries (plus `eps`, default 0), so that a
    positive feature vector sums to one.

    ```mlir
    %n = fwp.sum_norm %f : vector<16xf32>
    %m = fwp.sum_norm %f eps(1.0e-05) : vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$x, DefaultValuedAttr<F64Attr, "0.0">:$eps);
  let assemblyFormat = "$x (`eps` `(` $eps^ `)`)? attr-dict `:` type($x)";
  let hasVerifier = 1;
}

def Fwp_SoftmaxOp : Fwp_UnaryVectorOp<"softmax"> {
  let summary = "softmax over the entries of one head's vector";
  let description = [{
    `y[i] = exp(x[i] - max x) / sum_j exp(x[j] - max x)`.

    ```mlir
    %s = fwp.softmax %h : vector<16xf32>
    ```
  }];
}

def Fwp_DpfpOp : Fwp_Op<"dpfp", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>]> {
  let summary = "deterministic parameter-free projection (DPFP-nu)";
  let description = [{
    The feature map of Schlag et al. (2021): with `r = [relu(x), relu(-x)]`
    (size `2n`), the output concatenates, for `s = 1 .. nu`, the products
    `r[i] * r[(i + s) mod 2n]` for `i < 2n`; its size is `2 n nu`.

    ```mlir
    %f = fwp.dpfp %k nu(2) : vector<16xf32> -> vector<64xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$x, ConfinedAttr<I64Attr, [IntPositive]>:$nu);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$x `nu` `(` $nu `)` attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Small dense ops on per-head values
//===----------------------------------------------------------------------===//

class Fwp_UnaryValueOp<string mnemonic>
    : Fwp_Op<mnemonic, [Pure, SameOperandsAndResultType, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>]> {
  let arguments = (ins Fwp_Value:$x);
  let results = (outs Fwp_Value:$result);
  let assemblyFormat = "$x attr-dict `:` type($x)";
}

def Fwp_SigmoidOp : Fwp_UnaryValueOp<"sigmoid"> {
  let summary = "logistic sigmoid, elementwise";
  let description = [{
    `y = 1 / (1 + exp(-x))`, on a scalar (e.g. a learned write rate) or a vector.

    ```mlir
    %b = fwp.sigmoid %beta : f32
    ```
  }];
}

def Fwp_TanhOp : Fwp_UnaryValueOp<"tanh"> {
  let summary = "hyperbolic tangent, elementwise";
  let description = [{
    ```mlir
    %s = fwp.tanh %y : vector<16xf32>
    ```
  }];
}

def Fwp_NegOp : Fwp_UnaryValueOp<"neg"> {
  let summary = "negation, elementwise";
  let description = [{
    ```mlir
    %n = fwp.neg %u : vector<16xf32>
    ```
  }];
  let hasFolder = 1;
}

class Fwp_BinaryOp<string mnemonic, Type type>
    : Fwp_Op<mnemonic, [Pure, SameOperandsAndResultType, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>]> {
  let arguments = (ins type:$lhs, type:$rhs);
  let results = (outs type:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` qualified(type($result))";
}

def Fwp_AddOp : Fwp_BinaryOp<"add", Fwp_AnyValue> {
  let summary = "elementwise sum of scalars, vectors or fast weights";
  let description = [{
    ```mlir
    %y = fwp.add %z, %r : vector<16xf32>
    ```
  }];
  let hasFolder = 1;
}

def Fwp_SubOp : Fwp_BinaryOp<"sub", Fwp_AnyValue> {
  let summary = "elementwise difference of scalars, vectors or fast weights";
  let description = [{
    ```mlir
    %d = fwp.sub %u, %c : vector<16xf32>
    ```
  }];
  let hasFolder = 1;
}

def Fwp_MulOp : Fwp_BinaryOp<"mul", Fwp_Value> {
  let summary = "elementwise (Hadamard) product";
  let description = [{
    ```mlir
    %h = fwp.mul %o, %c : vector<16xf32>
    ```
  }];
}

def Fwp_DivOp : Fwp_BinaryOp<"div", Fwp_Value> {
  let summary = "elementwise quotient";
  let description = [{
    ```mlir
    %r = fwp.div %one, %den : f32
    ```
  }];
}

def Fwp_ConstantOp : Fwp_Op<"constant", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>]> {
  let summary = "a scalar, vector or fast weight with every entry equal";
  let description = [{
    Every entry of the result is `value`. The one way to write a constant,
    zeros included: the folders of `add`, `sub` and `write_sum` treat a
    `constant 0.0` operand as the zero it is.

    ```mlir
    %eps = fwp.constant 1.0e-05 : f32
    %ones = fwp.constant 1.0 : vector<16xf32>
    %W0 = fwp.constant 0.0 : !fwp.fast_weight<16x16xf32>
    ```
  }];
  let arguments = (ins F64Attr:$value);
  let results = (outs Fwp_AnyValue:$result);
  let assemblyFormat = "$value attr-dict `:` qualified(type($result))";
  let extraClassDeclaration = [{
    /// Whether this constant is zero (+0.0 or -0.0).
    bool isZero() { return getValue().isZero(); }
  }];
}

def Fwp_ScaleOp : Fwp_Op<"scale", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>, AllTypesMatch<["x", "result"]>,
    TypesMatchWith<"factor is the element type of x", "x", "factor",
                   "::llvm::cast<::mlir::VectorType>($_self).getElementType()">]> {
  let summary = "vector times scalar";
  let description = [{
    ```mlir
    %u = fwp.scale %d, %b : vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$x, Fwp_Float:$factor);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$x `,` $factor attr-dict `:` type($x)";
}

def Fwp_DotOp : Fwp_Op<"dot", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>, AllTypesMatch<["lhs", "rhs"]>,
    TypesMatchWith<"result is the element type of the operands", "lhs", "result",
                   "::llvm::cast<::mlir::VectorType>($_self).getElementType()">]> {
  let summary = "inner product of two vectors";
  let description = [{
    ```mlir
    %s = fwp.dot %y, %r_b : vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$lhs, Fwp_Vector:$rhs);
  let results = (outs Fwp_Float:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($lhs)";
}

def Fwp_LayerNormOp : Fwp_Op<"layer_norm", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>,
    AllTypesMatch<["x", "weight", "bias", "result"]>]> {
  let summary = "layer normalisation over one head's entries";
  let description = [{
    `y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias` with the biased
    variance, as `torch.nn.functional.layer_norm`.

    ```mlir
    %n = fwp.layer_norm %q, %w, %b eps(1.0e-05) : vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$x, Fwp_Vector:$weight, Fwp_Vector:$bias,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$x `,` $weight `,` $bias (`eps` `(` $eps^ `)`)? attr-dict `:` type($x)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Decaying fast weights and normalisation
//===----------------------------------------------------------------------===//

def Fwp_SqrtOp : Fwp_UnaryValueOp<"sqrt"> {
  let summary = "square root, elementwise";
  let description = [{
    `y = sqrt(x)` on a scalar or a vector (defined for `x >= 0`).

    ```mlir
    %r = fwp.sqrt %s : f32
    ```
  }];
}

def Fwp_ScaleRowsOp : Fwp_Op<"scale_rows", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>,
    DeclareOpInterfaceMethods<Fwp_FastWeightUpdateOpInterface, ["getLinearUpdate"]>,
    AllTypesMatch<["weight", "result"]>]> {
  let summary = "decay a fast weight per key row: diag(a) W";
  let description = [{
    Multiplies row `e` of the fast weight by `factors[e]`:
    `W'[e, m] = a[e] W[e, m]`, the per-key decay of gated linear attention.
    An update of the weight that the backward does not invert (undoing it
    divides by `a`): a state updated by it is stored or checkpointed.

    ```mlir
    %W1 = fwp.scale_rows %W, %a : !fwp.fast_weight<16x32xf32>, vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_FastWeightType:$weight, Fwp_Vector:$factors);
  let results = (outs Fwp_FastWeightType:$result);
  let assemblyFormat = [{
    $weight `,` $factors attr-dict `:` qualified(type($weight)) `,` type($factors)
  }];
  let hasVerifier = 1;
}

def Fwp_ScaleWeightOp : Fwp_Op<"scale_weight", [Pure,
    DeclareOpInterfaceMethods<Fwp_DecomposableOpInterface>,
    AllTypesMatch<["weight", "result"]>,
    TypesMatchWith<"factor is the element type of the weight", "weight", "factor",
                   "::llvm::cast<::mlir::fwp::FastWeightType>($_self).getElementType()">]> {
  let summary = "decay a fast weight by a scalar: a W";
  let description = [{
    `W'[e, m] = a W[e, m]`, the scalar decay of RetNet and Gated DeltaNet. A
    composite: `fwp-decompose` turns it into `fwp.scale_rows` by a vector
    whose entries all equal `a`.

    ```mlir
    %W1 = fwp.scale_weight %W, %a : !fwp.fast_weight<16x16xf32>
    ```
  }];
  let arguments = (ins Fwp_FastWeightType:$weight, Fwp_Float:$factor);
  let results = (outs Fwp_FastWeightType:$result);
  let assemblyFormat = "$weight `,` $factor attr-dict `:` qualified(type($weight))";
}

def Fwp_RowDotOp : Fwp_Op<"row_dot", [Pure, DeclareOpInterfaceMethods<Fwp_AdjointOpInterface>,
    AllTypesMatch<["lhs", "rhs"]>]> {
  let summary = "per-row inner products of two fast weights";
  let description = [{
    `y[e] = sum_m A[e, m] B[e, m]`: the gradient of the row factors of
    `fwp.scale_rows`.

    ```mlir
    %y = fwp.row_dot %G, %W : !fwp.fast_weight<16x32xf32> -> vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_FastWeightType:$lhs, Fwp_FastWeightType:$rhs);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` qualified(type($lhs)) `->` type($result)";
  let hasVerifier = 1;
}

def Fwp_L2NormOp : Fwp_Op<"l2_norm", [Pure, SameOperandsAndResultType,
    DeclareOpInterfaceMethods<Fwp_DecomposableOpInterface>]> {
  let summary = "L2 normalisation: x / sqrt(sum(x^2) + eps)";
  let description = [{
    Scales a vector to unit Euclidean length, `eps` (default `1e-6`) keeping
    the zero vector finite: the key and query feature map of Gated DeltaNet.
    A composite: `fwp-decompose` turns it into `fwp.dot`, `fwp.sqrt` and
    `fwp.scale`.

    ```mlir
    %n = fwp.l2_norm %k : vector<16xf32>
    %m = fwp.l2_norm %k eps(1.0e-05) : vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$x, DefaultValuedAttr<F64Attr, "1.0e-6">:$eps);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$x (`eps` `(` $eps^ `)`)? attr-dict `:` type($x)";
  let hasVerifier = 1;
}

def Fwp_ScaleConstOp : Fwp_Op<"scale_const", [Pure, SameOperandsAndResultType,
    DeclareOpInterfaceMethods<Fwp_DecomposableOpInterface>]> {
  let summary = "scale a vector by a constant: x factor n^size_power";
  let description = [{
    Multiplies `x` (of size `n`) by `factor * n^size_power`. With
    `size_power(-0.5)` this is the attention scale `1/sqrt(d)`, written
    through the vector's size so that `fwp-compile --dim d=...` changes it
    with the type. A composite: `fwp-decompose` turns it into `fwp.constant`
    and `fwp.scale`.

    ```mlir
    %qs = fwp.scale_const %q size_power(-0.5) : vector<16xf32>
    %h = fwp.scale_const %x factor(0.5) : vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$x, DefaultValuedAttr<F64Attr, "1.0">:$factor,
                       DefaultValuedAttr<F64Attr, "0.0">:$size_power);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = [{
    $x (`factor` `(` $factor^ `)`)? (`size_power` `(` $size_power^ `)`)? attr-dict `:` type($x)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Adjoint helpers (built by fwp-differentiate)
//===----------------------------------------------------------------------===//

class Fwp_VectorGradOp<string mnemonic, string what>
    : Fwp_Op<mnemonic, [Pure, AllTypesMatch<["x", "grad", "result"]>]> {
  let summary = "the vector-Jacobian product of " # what;
  let arguments = (ins Fwp_Vector:$x, Fwp_Vector:$grad);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$x `,` $grad attr-dict `:` type($x)";
}

def Fwp_EluPlusOneGradOp : Fwp_Op<"elu_plus_one_grad", [Pure,
    AllTypesMatch<["y", "grad", "result"]>]> {
  let summary = "the vector-Jacobian product of `fwp.elu_plus_one`";
  let description = [{
    Given the map's *output* `y` and the output gradient, `grad * min(y, 1)`:
    the slope is 1 where `x > 0` (there `y = x + 1 > 1`) and `exp(x) = y`
    elsewhere, so neither the input nor a second exp is needed.

    ```mlir
    %dx = fwp.elu_plus_one_grad %y, %dy : vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$y, Fwp_Vector:$grad);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$y `,` $grad attr-dict `:` type($y)";
}

def Fwp_SoftmaxGradOp : Fwp_VectorGradOp<"softmax_grad", "`fwp.softmax`"> {
  let description = [{
    Given the softmax *output* `y` and the output gradient `g`,
    `y * (g - dot(y, g))`.

    ```mlir
    %dx = fwp.softmax_grad %y, %dy : vector<16xf32>
    ```
  }];
}

def Fwp_SumNormGradOp : Fwp_Op<"sum_norm_grad", [Pure,
    AllTypesMatch<["x", "grad", "result"]>]> {
  let summary = "the vector-Jacobian product of `fwp.sum_norm`";
  let description = [{
    Given the input `x` and the output gradient `g`, with `S = sum(x) + eps`:
    `(g - dot(g, x) / S) / S`.

    ```mlir
    %dx = fwp.sum_norm_grad %x, %dy eps(1.0e-05) : vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$x, Fwp_Vector:$grad,
                       DefaultValuedAttr<F64Attr, "0.0">:$eps);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$x `,` $grad (`eps` `(` $eps^ `)`)? attr-dict `:` type($x)";
}

def Fwp_DpfpGradOp : Fwp_Op<"dpfp_grad", [Pure, AllTypesMatch<["x", "result"]>]> {
  let summary = "the vector-Jacobian product of `fwp.dpfp`";
  let description = [{
    Given the input `x` (size n) and the gradient of the DPFP-nu output
    (size 2 n nu), the gradient with respect to `x`.

    ```mlir
    %dx = fwp.dpfp_grad %x, %dy nu(1) : vector<4xf32>, vector<8xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$x, Fwp_Vector:$grad,
                       ConfinedAttr<I64Attr, [IntPositive]>:$nu);
  let results = (outs Fwp_Vector:$result);
  let assemblyFormat = "$x `,` $grad `nu` `(` $nu `)` attr-dict `:` type($x) `,` type($grad)";
  let hasVerifier = 1;
}

class Fwp_ScalarOrVectorGradOp<string mnemonic, string what>
    : Fwp_Op<mnemonic, [Pure, AllTypesMatch<["y", "grad", "result"]>]> {
  let summary = "the vector-Jacobian product of " # what;
  let arguments = (ins Fwp_Value:$y, Fwp_Value:$grad);
  let results = (outs Fwp_Value:$result);
  let assemblyFormat = "$y `,` $grad attr-dict `:` type($y)";
}

def Fwp_SigmoidGradOp : Fwp_ScalarOrVectorGradOp<"sigmoid_grad", "`fwp.sigmoid`"> {
  let description = [{
    Given the sigmoid *output* `y` and the output gradient `g`: `g y (1 - y)`.

    ```mlir
    %db = fwp.sigmoid_grad %b, %dbs : f32
    ```
  }];
}

def Fwp_TanhGradOp : Fwp_ScalarOrVectorGradOp<"tanh_grad", "`fwp.tanh`"> {
  let description = [{
    Given the tanh *output* `y` and the output gradient `g`: `g (1 - y^2)`.

    ```mlir
    %dx = fwp.tanh_grad %s, %ds : vector<16xf32>
    ```
  }];
}

def Fwp_LayerNormGradOp : Fwp_Op<"layer_norm_grad", [Pure,
    AllTypesMatch<["x", "weight", "grad", "grad_x", "grad_weight", "grad_bias"]>]> {
  let summary = "the vector-Jacobian product of `fwp.layer_norm`";
  let description = [{
    Given the input `x`, the scale `weight` and the output gradient, the
    gradients with respect to `x`, `weight` and `bias`.

    ```mlir
    %dx, %dw, %db = fwp.layer_norm_grad %x, %w, %dy eps(1.0e-05) : vector<16xf32>
    ```
  }];
  let arguments = (ins Fwp_Vector:$x, Fwp_Vector:$weight, Fwp_Vector:$grad,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs Fwp_Vector:$grad_x, Fwp_Vector:$grad_weight,
                      Fwp_Vector:$grad_bias);
  let assemblyFormat = "$x `,` $weight `,` $grad (`eps` `(` $eps^ `)`)? attr-dict `:` type($x)";
  let hasVerifier = 1;
}

#endif // FWP_DIALECT_FWP_IR_FWPOPS_TD
