//===- CommandLine.h - Short --help for the fwp compiler tools --*- C++ -*-===//
//
// fwp-opt and fwp-compile link all of LLVM and MLIR, whose libraries register
// hundreds of command-line options (back-end flags of every target, pass
// statistics, ...). These helpers keep `--help` to the tool's own options:
// everything else is marked cl::Hidden, so `--help-hidden` still lists it and
// every option still works.
//
//===----------------------------------------------------------------------===//

#ifndef FWP_TOOLS_COMMANDLINE_H
#define FWP_TOOLS_COMMANDLINE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/CommandLine.h"

namespace fwp {

/// Marks every registered option that is in none of `shown` (nor in LLVM's
/// generic category: --help, --version, ...) as cl::Hidden. Options that are
/// already hidden stay as they are.
inline void
hideOptionsOutside(llvm::ArrayRef<const llvm::cl::OptionCategory *> shown) {
  for (auto &entry : llvm::cl::getRegisteredOptions()) {
    llvm::cl::Option *option = entry.second;
    if (option->getOptionHiddenFlag() != llvm::cl::NotHidden)
      continue;
    bool keep = false;
    for (const llvm::cl::OptionCategory *category : option->Categories)
      if (llvm::is_contained(shown, category) ||
          category->getName() == "Generic Options")
        keep = true;
    if (!keep)
      option->setHiddenFlag(llvm::cl::Hidden);
  }
}

/// Moves the registered options `names` (registered by MLIR at run time, so
/// not declared with a cl::cat) into `category`, where --help shows them.
inline void moveOptionsTo(llvm::cl::OptionCategory &category,
                          llvm::ArrayRef<llvm::StringRef> names) {
  auto &options = llvm::cl::getRegisteredOptions();
  for (llvm::StringRef name : names)
    if (llvm::cl::Option *option = options.lookup(name)) {
      option->Categories.clear();
      option->Categories.push_back(&category);
    }
}

} // namespace fwp

#endif // FWP_TOOLS_COMMANDLINE_H
