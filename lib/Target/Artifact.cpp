//===- Artifact.cpp - Building .fwpk artifacts ----------------------------===//

#include "fwp/Target/Artifact.h"
#include "fwp/Target/Container.h"

#include "fwp/Conversion/Passes.h"
#include "fwp/Dialect/Fwp/IR/FwpOps.h"
#include "fwp/Dialect/Fwp/IR/KernelArgs.h"
#include "fwp/Dialect/Fwp/Transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/InstIterator.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"
#include "llvm/TargetParser/Triple.h"

using namespace mlir;

namespace fwp {

static void addPipeline(OpPassManager &pm, StringRef pipeline) {
  // The pipelines below are fixed strings: a parse error is a bug here.
  if (failed(parsePassPipeline(pipeline, pm, llvm::errs())))
    llvm::report_fatal_error("fwp: bad built-in pipeline");
}

void buildFrontEndPipeline(OpPassManager &pm, StringRef backward) {
  // `backward` comes from the command line: a bad value is the pass's error.
  std::string differentiate = "fwp-differentiate";
  if (!backward.empty())
    differentiate += "{backward=" + backward.str() + "}";
  if (failed(parsePassPipeline("fwp-decompose,canonicalize," + differentiate +
                                   ",canonicalize,cse,fwp-fuse,canonicalize,cse",
                               pm, llvm::errs())))
    llvm::report_fatal_error("fwp: bad front-end pipeline");
}

void buildCPULoweringPipeline(OpPassManager &pm, int64_t chunk) {
  addPipeline(pm,
              "fwp-split-time-parallel,convert-fwp-to-cpu{chunk=" +
                  std::to_string(chunk) +
                  "},canonicalize,cse,"
              "fwp-approximate-math,"
              "convert-vector-to-scf,convert-scf-to-cf,"
              "convert-vector-to-llvm,convert-math-to-llvm,"
              "expand-strided-metadata,lower-affine,finalize-memref-to-llvm,"
              "convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,"
              "reconcile-unrealized-casts,fwp-cpu-entry-points,canonicalize");
}

void recordCpuKernelForms(llvm::json::Object &manifest, ModuleOp lowered) {
  llvm::StringMap<int64_t> chunks, stages;
  lowered.walk([&](Operation *op) {
    auto name = op->getAttrOfType<StringAttr>(SymbolTable::getSymbolAttrName());
    if (!name)
      return;
    if (auto chunk = op->getAttrOfType<IntegerAttr>("fwp.chunk"))
      chunks[name.getValue()] = chunk.getInt();
    if (auto passes = op->getAttrOfType<IntegerAttr>("fwp.stages"))
      stages[name.getValue()] = passes.getInt();
  });
  llvm::json::Object *kernels = manifest.getObject("kernels");
  llvm::json::Object *cpu = kernels ? kernels->getObject("cpu") : nullptr;
  if (!cpu)
    return;
  for (auto &[role, entry] : *cpu) {
    llvm::json::Object *kernel = entry.getAsObject();
    std::optional<StringRef> symbol =
        kernel ? kernel->getString("symbol") : std::nullopt;
    if (!symbol)
      continue;
    // The entry point fwp_<scan> calls the scan's function <scan>.
    StringRef scan = symbol->drop_front(strlen("fwp_"));
    (*kernel)["chunk"] = chunks.lookup(scan);
    // A scan of several fast weights lowered as passes over time of one
    // weight each (StagedScan.cpp); 1 for one loop.
    (*kernel)["stages"] = std::max<int64_t>(1, stages.lookup(scan));
  }
}

namespace {
struct FwpPipelineOptions : public PassPipelineOptions<FwpPipelineOptions> {
  Option<std::string> target{*this, "target",
                             llvm::cl::desc("cpu: differentiate and lower "
                                            "every scan to the LLVM dialect"),
                             llvm::cl::init("cpu")};
};
} // namespace

void registerFwpPipelines() {
  PassPipelineRegistration<FwpPipelineOptions>(
      "fwp-pipeline",
      "differentiate the layer and lower it (target=cpu) as fwp-compile does",
      [](OpPassManager &pm, const FwpPipelineOptions &options) {
        buildFrontEndPipeline(pm);
        buildCPULoweringPipeline(pm);
      });
}

//===----------------------------------------------------------------------===//
// Manifest
//===----------------------------------------------------------------------===//

static llvm::json::Array shapeOf(Type type) {
  llvm::json::Array shape;
  if (auto vector = dyn_cast<VectorType>(type))
    shape.push_back(vector.getDimSize(0));
  else if (auto weight = dyn_cast<mlir::fwp::FastWeightType>(type)) {
    shape.push_back(weight.getKeyDim());
    shape.push_back(weight.getValueDim());
  }
  return shape;
}

/// Shape of the kernel buffer: [-1 (= T), ...] per step, [1] for a scalar
/// that is not per step.
static llvm::json::Array bufferShapeOf(Type type, bool perStep) {
  llvm::json::Array shape = shapeOf(type);
  if (perStep)
    shape.insert(shape.begin(), -1);
  else if (shape.empty())
    shape.push_back(1);
  return shape;
}

static llvm::json::Object namedShape(StringRef name, Type type) {
  return llvm::json::Object{{"name", name}, {"shape", shapeOf(type)}};
}

static llvm::json::Object bufferArg(StringRef role, StringRef name, Type type,
                              bool perStep) {
  return llvm::json::Object{{"role", role},
                            {"name", name},
                            {"shape", bufferShapeOf(type, perStep)}};
}

/// Whether `text` is a param initialiser the runtime knows: "zeros",
/// "ones", "constant:V" or "linspace:A:B".
static bool isParamInit(StringRef text) {
  if (text == "zeros" || text == "ones")
    return true;
  double a, b;
  if (text.consume_front("constant:"))
    return !text.getAsDouble(a);
  if (!text.consume_front("linspace:"))
    return false;
  auto [first, second] = text.split(':');
  return !first.getAsDouble(a) && !second.getAsDouble(b);
}

static StringRef nameAt(ArrayAttr names, unsigned i) {
  return cast<StringAttr>(names[i]).getValue();
}

/// The manifest's argument list of one kernel, from its scan's names.
static llvm::json::Array kernelArgs(mlir::fwp::ScanOp scan) {
  using mlir::fwp::ScanArgKind;
  llvm::json::Array args;
  auto add = [&](ScanArgKind kind, StringRef name, Type type, bool perStep) {
    auto [role, bound] = mlir::fwp::kernelArgRole(scan, kind, name);
    args.push_back(bufferArg(role, bound, type, perStep));
  };
  for (auto [i, arg] : llvm::enumerate(scan.getSeqArgs()))
    add(ScanArgKind::Seq, nameAt(scan.getSeqNames(), i), arg.getType(), true);
  for (auto [i, arg] : llvm::enumerate(scan.getParamArgs()))
    add(ScanArgKind::Param, nameAt(scan.getParamNames(), i), arg.getType(),
        false);
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs()))
    add(ScanArgKind::State, nameAt(scan.getStateNames(), i), arg.getType(),
        false);
  for (auto [i, type] : llvm::enumerate(scan.getOutputTypes()))
    add(ScanArgKind::Output, nameAt(scan.getOutputNames(), i),
        cast<TypeAttr>(type).getValue(), true);
  return args;
}

FailureOr<llvm::json::Object> buildManifest(ModuleOp module) {
  mlir::fwp::ScanOp forward, train, grad, deferred;
  for (auto scan : module.getOps<mlir::fwp::ScanOp>()) {
    auto role = scan->getAttrOfType<StringAttr>(mlir::fwp::kRoleAttrName);
    mlir::fwp::ScanOp &slot =
        !role                                    ? forward
        : role.getValue() == "backward"          ? grad
        : role.getValue() == "backward_deferred" ? deferred
                                                 : train;
    if (slot) {
      scan.emitError() << "an artifact holds one layer, but the module has "
                          "another scan of the same role: @"
                       << slot.getSymName();
      return failure();
    }
    slot = scan;
  }
  if (!forward || !train || !grad) {
    module.emitError() << "expected one layer (a fwp.scan) and its "
                          "fwp-differentiate scans";
    return failure();
  }

  llvm::json::Object dims;
  for (NamedAttribute dim : forward.getDims())
    dims[dim.getName().getValue()] = cast<IntegerAttr>(dim.getValue()).getInt();
  Type element = getElementTypeOrSelf(forward.getSeqArgs().empty()
                                          ? Type()
                                          : forward.getSeqArgs()[0].getType());
  if (auto weight = dyn_cast_or_null<mlir::fwp::FastWeightType>(element))
    element = weight.getElementType();
  std::string dtype = element && element.isF64() ? "f64" : "f32";

  llvm::json::Array seq, params, states, outputs, tape;
  for (auto [i, arg] : llvm::enumerate(forward.getSeqArgs()))
    seq.push_back(namedShape(nameAt(forward.getSeqNames(), i), arg.getType()));
  // A param's initial value, when the layer asks for one other than the
  // model's default (`fwp.param_init = {decay = "linspace:3.0:7.0"}`).
  auto inits = forward->getAttrOfType<DictionaryAttr>("fwp.param_init");
  if (forward->hasAttr("fwp.param_init") && !inits) {
    forward.emitError() << "'fwp.param_init' must be a dictionary from param "
                           "names to initialisers";
    return failure();
  }
  for (auto [i, arg] : llvm::enumerate(forward.getParamArgs())) {
    StringRef name = nameAt(forward.getParamNames(), i);
    llvm::json::Object param = namedShape(name, arg.getType());
    if (inits)
      if (Attribute init = inits.get(name)) {
        auto text = dyn_cast<StringAttr>(init);
        if (!text || !isParamInit(text.getValue())) {
          forward.emitError()
              << "'fwp.param_init' for '" << name
              << "' must be \"zeros\", \"ones\", \"constant:V\" or "
                 "\"linspace:A:B\", not "
              << init;
          return failure();
        }
        param["init"] = text.getValue();
      }
    params.push_back(std::move(param));
  }
  if (inits)
    for (NamedAttribute entry : inits)
      if (!llvm::is_contained(forward.getParamNames(), entry.getName())) {
        forward.emitError() << "'fwp.param_init' names '" << entry.getName()
                            << "', which is not a param of the layer";
        return failure();
      }
  for (auto [i, arg] : llvm::enumerate(forward.getStateArgs()))
    states.push_back(
        namedShape(nameAt(forward.getStateNames(), i), arg.getType()));
  for (auto [i, type] : llvm::enumerate(forward.getOutputTypes()))
    outputs.push_back(namedShape(nameAt(forward.getOutputNames(), i),
                                 cast<TypeAttr>(type).getValue()));
  for (auto [i, type] : llvm::enumerate(train.getOutputTypes())) {
    StringRef name = nameAt(train.getOutputNames(), i);
    if (name.starts_with("tape."))
      tape.push_back(namedShape(name, cast<TypeAttr>(type).getValue()));
  }

  // How the backward recovers each state (fwp-differentiate resolved it).
  llvm::json::Object backward;
  int64_t checkpointEvery = 0;
  if (auto strategies =
          forward->getAttrOfType<DictionaryAttr>(mlir::fwp::kBackwardAttrName))
    for (NamedAttribute entry : strategies) {
      StringRef text = cast<StringAttr>(entry.getValue()).getValue();
      std::optional<mlir::fwp::BackwardStrategy> strategy =
          mlir::fwp::parseBackwardStrategy(text);
      if (!strategy) {
        forward.emitError() << "unknown backward strategy '" << text << "'";
        return failure();
      }
      backward[entry.getName().getValue()] =
          strategy->kind == mlir::fwp::BackwardStrategy::Invert ? "invert"
          : strategy->kind == mlir::fwp::BackwardStrategy::Store
              ? "store"
              : "checkpoint";
      if (strategy->kind == mlir::fwp::BackwardStrategy::Checkpoint)
        checkpointEvery = strategy->every;
    }

  auto kernel = [&](mlir::fwp::ScanOp scan) {
    return llvm::json::Object{
        {"symbol", mlir::fwp::cpuEntryPointName(scan.getSymName())},
        {"args", kernelArgs(scan)}};
  };
  llvm::json::Object cpu{{"forward", kernel(forward)},
                         {"forward_train", kernel(train)},
                         {"backward", kernel(grad)}};
  // The energy form's products of a delta write's weight with the adjoint
  // (docs/design.md): run after the backward, forwards in time.
  if (deferred)
    cpu["backward_deferred"] = kernel(deferred);
  return llvm::json::Object{
      {"format", "fwpk"},
      {"version", kArtifactFormatVersion},
      {"layer", forward.getSymName()},
      {"dims", std::move(dims)},
      {"dtype", dtype},
      {"backward", std::move(backward)},
      {"checkpoint_every", checkpointEvery},
      {"seq", std::move(seq)},
      {"params", std::move(params)},
      {"states", std::move(states)},
      {"outputs", std::move(outputs)},
      {"tape", std::move(tape)},
      {"kernels", llvm::json::Object{{"cpu", std::move(cpu)}}}};
}

//===----------------------------------------------------------------------===//
// LLVM code generation
//===----------------------------------------------------------------------===//

static const char *kTriple = "x86_64-unknown-linux-gnu";

static std::unique_ptr<llvm::TargetMachine> makeTargetMachine(StringRef cpu,
                                                              std::string &error) {
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::Triple triple(kTriple);
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return nullptr;
  std::string cpuName = cpu.str(), features;
  if (cpu == "native") {
    cpuName = llvm::sys::getHostCPUName().str();
    llvm::SubtargetFeatures subtarget;
    for (const auto &feature : llvm::sys::getHostCPUFeatures())
      subtarget.AddFeature(feature.first(), feature.second);
    features = subtarget.getString();
  }
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      triple, cpuName, features, options, llvm::Reloc::PIC_, std::nullopt,
      llvm::CodeGenOptLevel::Aggressive));
  if (!machine) {
    error = "cannot create a target machine for cpu '" + cpu.str() + "'";
    return nullptr;
  }
  // An unknown name would only warn and fall back to a generic processor.
  if (!machine->getMCSubtargetInfo()->isCPUStringValid(cpuName)) {
    error = "unknown x86-64 processor '" + cpu.str() +
            "' (--cpu takes a name such as x86-64, x86-64-v2, x86-64-v3, "
            "x86-64-v4, skylake or znver3, or 'native')";
    return nullptr;
  }
  return machine;
}

FailureOr<std::vector<CpuTarget>> describeCpuTargets(StringRef list,
                                                    std::string &error) {
  SmallVector<StringRef> names;
  list.split(names, ',');
  std::vector<CpuTarget> targets;
  for (StringRef name : names) {
    name = name.trim();
    if (name.empty()) {
      error = "--cpu=" + list.str() +
              ": expected a comma-separated list of processor names";
      return failure();
    }
    std::unique_ptr<llvm::TargetMachine> machine =
        makeTargetMachine(name, error);
    if (!machine)
      return failure();
    CpuTarget target;
    target.request = name.str();
    target.cpu = machine->getTargetCPU().str();
    // `native` and a named processor may be the same: one image each.
    if (llvm::any_of(targets,
                     [&](const CpuTarget &other) { return other.cpu == target.cpu; }))
      continue;
    const llvm::MCSubtargetInfo &subtarget = *machine->getMCSubtargetInfo();
    for (const llvm::SubtargetFeatureKV &feature :
         subtarget.getAllProcessorFeatures())
      if (subtarget.getFeatureBits().test(feature.Value))
        target.features.push_back(feature.Key);
    target.section = (kCpuSectionPrefix + target.cpu).str();
    targets.push_back(std::move(target));
  }
  return targets;
}

llvm::json::Array cpuTargetEntries(ArrayRef<CpuTarget> targets) {
  llvm::json::Array entries;
  for (const CpuTarget &target : targets) {
    llvm::json::Array features;
    for (const std::string &feature : target.features)
      features.push_back(feature);
    entries.push_back(llvm::json::Object{{"triple", std::string(kTriple)},
                                         {"cpu", target.cpu},
                                         {"features", std::move(features)},
                                         {"section", target.section}});
  }
  return entries;
}

/// A fixed vector type whose length is not a power of two (<96 x float>),
/// or null.
static llvm::FixedVectorType *unevenVector(llvm::Type *type) {
  auto *vector = llvm::dyn_cast<llvm::FixedVectorType>(type);
  if (!vector || vector->getNumElements() < 2 ||
      llvm::isPowerOf2_32(vector->getNumElements()))
    return nullptr;
  return vector;
}

/// The power-of-two pieces of `value` (the bits of its length, largest
/// first: 96 -> 64, 32), extracted at the builder's position.
static SmallVector<llvm::Value *> splitUneven(llvm::IRBuilder<> &builder,
                                              llvm::Value *value) {
  unsigned lanes = unevenVector(value->getType())->getNumElements();
  SmallVector<llvm::Value *> pieces;
  unsigned offset = 0;
  for (unsigned bit = llvm::bit_floor(lanes); bit; bit >>= 1) {
    if (!(lanes & bit))
      continue;
    SmallVector<int> mask;
    for (unsigned i = 0; i < bit; ++i)
      mask.push_back(offset + i);
    pieces.push_back(builder.CreateShuffleVector(value, mask));
    offset += bit;
  }
  return pieces;
}

/// The inverse of splitUneven: each piece widened to the whole length, then
/// blended in (the form the x86 back end lowers to whole-register moves).
static llvm::Value *joinUneven(llvm::IRBuilder<> &builder,
                               llvm::FixedVectorType *type,
                               ArrayRef<llvm::Value *> pieces) {
  unsigned lanes = type->getNumElements();
  llvm::Value *whole = nullptr;
  unsigned offset = 0;
  for (llvm::Value *piece : pieces) {
    unsigned length =
        llvm::cast<llvm::FixedVectorType>(piece->getType())->getNumElements();
    SmallVector<int> widen(lanes, llvm::PoisonMaskElem);
    for (unsigned i = 0; i < length; ++i)
      widen[offset + i] = static_cast<int>(i);
    llvm::Value *wide = builder.CreateShuffleVector(piece, widen);
    if (!whole) {
      whole = wide;
    } else {
      SmallVector<int> blend;
      for (unsigned i = 0; i < lanes; ++i)
        blend.push_back(i >= offset && i < offset + length ? lanes + i : i);
      whole = builder.CreateShuffleVector(whole, wide, blend);
    }
    offset += length;
  }
  return whole;
}

/// convert-fwp-to-cpu runs small matrix states in a stack copy that LLVM
/// keeps in registers (kRegisterStateBytes: 16 of AVX-512's 32 registers of
/// 64 bytes). A processor without AVX-512 has 16 vector registers of 32
/// bytes, half of one 16x16 f32 matrix, so there the copy only spills (the
/// forward of gla at d = 16 1.5x slower): each state goes back to its
/// buffer. A copy is an alloca that is filled by one memcpy from a buffer
/// in the entry block and copied back to that buffer by one more; its other
/// uses are loads and stores, which then use the buffer.
static void foldRegisterStateCopies(llvm::Function &function) {
  SmallVector<llvm::AllocaInst *> allocas;
  for (llvm::Instruction &inst : function.getEntryBlock())
    if (auto *alloca = dyn_cast<llvm::AllocaInst>(&inst))
      allocas.push_back(alloca);
  for (llvm::AllocaInst *alloca : allocas) {
    llvm::MemCpyInst *in = nullptr, *out = nullptr;
    bool other = false;
    for (llvm::User *user : alloca->users()) {
      auto *copy = dyn_cast<llvm::MemCpyInst>(user);
      if (copy && copy->getRawDest() == alloca && !in)
        in = copy;
      else if (copy && copy->getRawSource() == alloca && !out)
        out = copy;
      else if (copy)
        other = true;
    }
    if (other || !in || !out || in->getParent() != &function.getEntryBlock())
      continue;
    // The copy back goes to the same address (its own, identical getelementptr).
    auto sameAddress = [](llvm::Value *a, llvm::Value *b) {
      auto *x = dyn_cast<llvm::Instruction>(a);
      auto *y = dyn_cast<llvm::Instruction>(b);
      return a == b || (x && y && x->isIdenticalTo(y));
    };
    if (!sameAddress(out->getRawDest(), in->getRawSource()))
      continue;
    // The buffer must be defined before the copy in: an argument, or a
    // value of the entry block before it.
    llvm::Value *buffer = in->getRawSource();
    if (auto *def = dyn_cast<llvm::Instruction>(buffer);
        def && (def->getParent() != in->getParent() || !def->comesBefore(in)))
      continue;
    in->eraseFromParent();
    out->eraseFromParent();
    alloca->replaceAllUsesWith(buffer);
    alloca->eraseFromParent();
  }
}

/// Passes no vector whose length is not a power of two between basic
/// blocks. SelectionDAG selects one block at a time and hands such a value
/// (a phi, or a value used past an inner loop) to the next block as one
/// scalar register per lane (TargetLoweringBase::getVectorTypeBreakdown
/// does not split other lengths into vectors): a d = 96 row sweep then moves
/// its 96-lane accumulators through the stack lane by lane at every row and
/// runs ~15x slower than d = 64. Each such value is split into power-of-two
/// pieces where it is defined and joined again in each block that uses it,
/// and each such phi becomes one phi per piece. Runs after the optimisation
/// pipeline, which would fold the joins of the pieces back.
static void splitUnevenVectorsAcrossBlocks(llvm::Function &function) {
  llvm::IRBuilder<> builder(function.getContext());
  SmallVector<llvm::PHINode *> phis;
  for (llvm::BasicBlock &block : function)
    for (llvm::PHINode &phi : block.phis())
      if (unevenVector(phi.getType()))
        phis.push_back(&phi);
  for (llvm::PHINode *phi : phis) {
    auto *type = unevenVector(phi->getType());
    SmallVector<llvm::PHINode *> piecePhis;
    // A block that branches here twice (a switch) gives the same pieces.
    llvm::DenseMap<llvm::BasicBlock *, SmallVector<llvm::Value *>> split;
    for (unsigned i = 0; i < phi->getNumIncomingValues(); ++i) {
      llvm::BasicBlock *from = phi->getIncomingBlock(i);
      builder.SetInsertPoint(from->getTerminator());
      SmallVector<llvm::Value *> &pieces = split[from];
      if (pieces.empty())
        pieces = splitUneven(builder, phi->getIncomingValue(i));
      if (piecePhis.empty()) {
        builder.SetInsertPoint(phi);
        for (llvm::Value *piece : pieces)
          piecePhis.push_back(builder.CreatePHI(
              piece->getType(), phi->getNumIncomingValues()));
      }
      for (auto [piecePhi, piece] : llvm::zip(piecePhis, pieces))
        piecePhi->addIncoming(piece, from);
    }
    builder.SetInsertPoint(phi->getParent(),
                           phi->getParent()->getFirstInsertionPt());
    SmallVector<llvm::Value *> pieces(piecePhis.begin(), piecePhis.end());
    phi->replaceAllUsesWith(joinUneven(builder, type, pieces));
    phi->eraseFromParent();
  }

  SmallVector<llvm::Instruction *> crossing;
  for (llvm::Instruction &inst : llvm::instructions(function))
    if (unevenVector(inst.getType()) &&
        llvm::any_of(inst.users(), [&](llvm::User *user) {
          return llvm::cast<llvm::Instruction>(user)->getParent() !=
                 inst.getParent();
        }))
      crossing.push_back(&inst);
  for (llvm::Instruction *inst : crossing) {
    auto *type = unevenVector(inst->getType());
    builder.SetInsertPoint(inst->getParent(),
                           std::next(inst->getIterator()));
    if (llvm::isa<llvm::PHINode>(inst))
      builder.SetInsertPoint(inst->getParent(),
                             inst->getParent()->getFirstInsertionPt());
    SmallVector<llvm::Value *> pieces = splitUneven(builder, inst);
    llvm::DenseMap<llvm::BasicBlock *, llvm::Value *> joins;
    for (llvm::Use &use : llvm::make_early_inc_range(inst->uses())) {
      auto *user = llvm::cast<llvm::Instruction>(use.getUser());
      llvm::BasicBlock *block = user->getParent();
      if (block == inst->getParent())
        continue;
      llvm::Value *&joined = joins[block];
      if (!joined) {
        builder.SetInsertPoint(block, block->getFirstInsertionPt());
        joined = joinUneven(builder, type, pieces);
      }
      use.set(joined);
    }
  }
}

FailureOr<std::unique_ptr<llvm::Module>>
translateToOptimizedLLVM(ModuleOp module, llvm::LLVMContext &context,
                              StringRef manifestJson, StringRef cpu,
                              ArrayRef<EmbeddedData> embedded) {
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, context, "fwp");
  if (!llvmModule) {
    module.emitError() << "translation to LLVM IR failed";
    return failure();
  }
  std::string error;
  std::unique_ptr<llvm::TargetMachine> machine = makeTargetMachine(cpu, error);
  if (!machine) {
    module.emitError() << error;
    return failure();
  }
  llvmModule->setTargetTriple(llvm::Triple(kTriple));
  llvmModule->setDataLayout(machine->createDataLayout());

  auto exportBytes = [&](StringRef symbol, StringRef bytes) {
    auto *data = llvm::ConstantDataArray::getString(context, bytes,
                                                    /*AddNull=*/true);
    new llvm::GlobalVariable(*llvmModule, data->getType(), /*isConstant=*/true,
                             llvm::GlobalValue::ExternalLinkage, data, symbol);
  };
  exportBytes("fwp_manifest", manifestJson);
  for (const EmbeddedData &data : embedded)
    exportBytes(data.symbol, data.bytes);

  // Every function computes in place on the runtime's buffers; let LLVM
  // vectorise and unroll at -O3 for the chosen processor.
  bool wideRegisters =
      machine->getMCSubtargetInfo()->checkFeatures("+avx512f");
  for (llvm::Function &function : *llvmModule)
    if (!function.isDeclaration()) {
      if (!wideRegisters)
        foldRegisterStateCopies(function);
      function.addFnAttr("target-cpu", machine->getTargetCPU());
      if (!machine->getTargetFeatureString().empty())
        function.addFnAttr("target-features",
                           machine->getTargetFeatureString());
    }

  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PassBuilder passBuilder(machine.get());
  passBuilder.registerModuleAnalyses(mam);
  passBuilder.registerCGSCCAnalyses(cgam);
  passBuilder.registerFunctionAnalyses(fam);
  passBuilder.registerLoopAnalyses(lam);
  passBuilder.crossRegisterProxies(lam, fam, cgam, mam);
  llvm::ModulePassManager passes =
      passBuilder.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3);
  passes.run(*llvmModule, mam);
  for (llvm::Function &function : *llvmModule)
    if (!function.isDeclaration())
      splitUnevenVectorsAcrossBlocks(function);
  return llvmModule;
}

LogicalResult emitObjectFile(llvm::Module &module, StringRef cpu,
                             llvm::SmallVectorImpl<char> &object,
                             std::string &error) {
  std::unique_ptr<llvm::TargetMachine> machine = makeTargetMachine(cpu, error);
  if (!machine)
    return failure();
  llvm::raw_svector_ostream out(object);
  llvm::legacy::PassManager codegen;
  if (machine->addPassesToEmitFile(codegen, out, nullptr,
                                   llvm::CodeGenFileType::ObjectFile)) {
    error = "the x86-64 back end cannot emit an object file";
    return failure();
  }
  codegen.run(module);
  return success();
}

LogicalResult linkSharedLibrary(StringRef objectPath, StringRef outputPath,
                                std::string &error) {
  llvm::ErrorOr<std::string> driver = llvm::sys::findProgramByName("cc");
  if (!driver)
    driver = llvm::sys::findProgramByName("gcc");
  if (!driver) {
    error = "no C compiler driver ('cc') on PATH to link the shared library";
    return failure();
  }
  // -nostartfiles: no crt objects, so the library has no initializers or
  // finalizers (the runtime refuses images that have any).
  SmallVector<StringRef> args{*driver,        "-shared", "-nostartfiles",
                              "-Wl,-z,noexecstack", "-o", outputPath,
                              objectPath,     "-lm"};
  std::string message;
  int status = llvm::sys::ExecuteAndWait(*driver, args, std::nullopt, {}, 0, 0,
                                         &message);
  if (status != 0) {
    error = "linking failed (" + *driver + " exited with " +
            std::to_string(status) + (message.empty() ? "" : ": " + message) +
            ")";
    return failure();
  }
  return success();
}

} // namespace fwp
