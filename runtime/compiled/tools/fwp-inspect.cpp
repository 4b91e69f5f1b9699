//===- fwp-inspect.cpp - Verify a .fwpk and print its manifest ------------===//
//
//   fwp-inspect X.fwpk [--quiet]
//
// Verifies the artifact exactly as the runtime does before it runs anything
// (the container's header and digests, the CPU image, the manifest and every
// cross-reference; docs/design.md) without mapping any of its code, and
// prints the manifest, and on stderr one line per CPU image (the one this
// machine runs marked). A faulty artifact: "error: ..." and exit code 2.
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
    std::string chosen;
    std::string manifest = fwp::describeArtifact(path, &chosen);
    if (quiet)
      return 0;
    std::cout << manifest << '\n';
    // Every CPU image on stderr (stdout stays the manifest's JSON).
    nlohmann::json parsed = nlohmann::json::parse(manifest);
    nlohmann::json targets = parsed.contains("targets")
                                 ? parsed["targets"]
                                 : nlohmann::json::array({parsed["target"]});
    for (const nlohmann::json &target : targets) {
      std::string section = target.value("section", fwp::kFormat2CpuSectionName);
      std::cerr << "CPU image '" << section << "': processor " << target["cpu"].get<std::string>()
                << ", " << target["features"].size() << " features"
                << (section == chosen ? " (the one this machine runs)" : "") << '\n';
    }
    return 0;
  });
}
