//===- fwp-inspect.cpp - Verify a .fwpk and print its manifest ------------===//
//
//   fwp-inspect X.fwpk [--quiet]
//
// Verifies the artifact exactly as the runtime does before it runs anything
// (the container's header and digests, the CPU image, the manifest and every
// cross-reference; docs/design.md) without mapping any of its code, and
// prints the manifest. A faulty artifact: "error: ..." and exit code 2.
//
//===----------------------------------------------------------------------===//
#include "fwp/runtime/ArtifactContainer.h"
#include "fwp/runtime/CompiledLayer.h"
#include "fwp/runtime/ToolMain.h"

#include <CLI/CLI.hpp>

#include <iostream>

int main(int argc, char **argv) {
  std::string path;
  bool quiet = false;
  CLI::App app{"Verify a .fwpk artifact as the runtime does, without running or mapping any of "
               "its code, and print its manifest (the sections with their SHA-256 digests, "
               "what the code was compiled for, the kernels)."};
  app.add_option("artifact", path, "the .fwpk file")->required();
  app.add_flag("--quiet,-q", quiet, "print nothing; the exit code tells (0: valid, 2: not)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    std::cerr << "error: " << e.what() << "\nRun with --help for usage.\n";
    return fwp::kToolFailure;
  }
  return fwp::runReportingErrors([&] {
    std::string manifest = fwp::describeArtifact(path);
    if (!quiet)
      std::cout << manifest << '\n';
    return 0;
  });
}
