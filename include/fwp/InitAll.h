//===- InitAll.h - Register everything fwp tools use ------------*- C++ -*-===//
#ifndef FWP_INITALL_H
#define FWP_INITALL_H

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace fwp {
/// The fwp dialect and the upstream dialects (and their interfaces) that fwp
/// lowers through: func, arith, math, scf, memref, vector, llvm, gpu, nvvm.
void registerAllDialects(mlir::DialectRegistry &registry);
/// fwp's passes and pipelines, plus the upstream passes fwp-opt exposes.
void registerAllPasses();
} // namespace fwp

#endif // FWP_INITALL_H
