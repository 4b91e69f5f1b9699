//===- fwp-opt.cpp - The fwp optimizer driver -----------------------------===//
//
// mlir-opt with the fwp dialect, its passes and the upstream dialects and
// passes it lowers through.
//
// Its --help shows the options of everyday use and fwp's own passes and
// pipelines; the rest of LLVM's and MLIR's options (and the ~400 upstream
// passes, all still usable) are listed by --help-hidden.
//
//===----------------------------------------------------------------------===//

#include "fwp/InitAll.h"
#include "fwp/Tools/CommandLine.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace cl = llvm::cl;

#ifdef FWP_INCLUDE_TESTS
namespace fwp::test {
/// test/lib: test-fwp-gpu-kernels, test-fwp-cuda-compile.
void registerTestPasses();
} // namespace fwp::test
#endif

/// A heading and one line per registered pass or pipeline whose name
/// mentions fwp (test passes aside), with its description.
static std::string describeFwpPasses() {
  std::string text = "\nFWP PASSES AND PIPELINES (every upstream MLIR pass "
                     "works too; --help-hidden lists them):\n";
  llvm::raw_string_ostream os(text);
  // Every pass name is an option of the pass-list option.
  llvm::SmallVector<llvm::StringRef> names;
  for (auto &entry : cl::getRegisteredOptions())
    if (entry.first.contains("fwp") && !entry.first.starts_with("test-") &&
        (mlir::PassInfo::lookup(entry.first) ||
         mlir::PassPipelineInfo::lookup(entry.first)))
      names.push_back(entry.first);
  llvm::sort(names);
  for (llvm::StringRef name : names) {
    const mlir::PassRegistryEntry *info = mlir::PassInfo::lookup(name);
    if (!info)
      info = mlir::PassPipelineInfo::lookup(name);
    os << "  --" << name;
    os.indent(name.size() < 28 ? 28 - name.size() : 1);
    os << info->getPassDescription() << "\n";
  }
  return text;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  mlir::DialectRegistry registry;
  fwp::registerAllDialects(registry);
  fwp::registerAllPasses();
#ifdef FWP_INCLUDE_TESTS
  fwp::test::registerTestPasses();
#endif

  static cl::OptionCategory everyday("fwp-opt options");
  (void)mlir::registerCLIOptions("fwp-opt", registry);
  // (-o is registered later, by parseCLIOptions, in the general category.)
  fwp::moveOptionsTo(
      everyday, {"pass-pipeline", "split-input-file", "verify-diagnostics",
                 "show-dialects", "list-passes", "dump-pass-pipeline",
                 "mlir-print-ir-after-all", "mlir-print-ir-before-all",
                 "mlir-print-ir-after-failure", "mlir-print-debuginfo",
                 "mlir-timing"});
  fwp::hideOptionsOutside({&everyday});
  // cl::extrahelp keeps a reference: the text must outlive parsing.
  static const std::string passText = describeFwpPasses();
  static cl::extrahelp passes(passText);
  static cl::extrahelp examples(R"(
EXAMPLES:
  fwp-opt models/delta_rnn.mlir --fwp-differentiate      # show the backward scans
  fwp-opt models/delta_rnn.mlir --fwp-pipeline --mlir-print-ir-after-all
)");

  auto [input, output] = mlir::parseCLIOptions(
      argc, argv,
      "fwp-opt: mlir-opt with the fwp dialect and passes (--show-dialects "
      "lists the dialects it reads)\n");
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, input, output, registry));
}
