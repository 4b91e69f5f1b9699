//===- fwp_eval.cpp - Evaluate a checkpoint on a split -------------------===//
//
//   fwp-eval --checkpoint runs/codeexec_small/best.pt --split test
//
// See docs/training.md.
//
//===----------------------------------------------------------------------===//

#include "fwp/train/Experiment.h"
#include "fwp/runtime/ToolMain.h"

#include <CLI/CLI.hpp>

#include <iomanip>
#include <iostream>

using namespace fwp::train;

int main(int argc, char **argv) {
  CLI::App app{"fwp-eval: evaluate a fwp-train checkpoint on a data split"};
  app.footer("\nExamples:\n"
             "  fwp-eval --checkpoint runs/readme_codeexec/best.pt --split test\n"
             "  fwp-eval --checkpoint runs/codeexec3_rdn/best.pt --reference --json");
  EvalRequest request;
  std::string device;
  bool json = false;
  int threads = 0;
  app.add_option("--checkpoint", request.checkpoint, "checkpoint written by fwp-train")
      ->required();
  app.add_option("--split", request.split, "train, valid or test (default test)")
      ->check(CLI::IsMember({"train", "valid", "test"}));
  app.add_option("--device", device, "cpu, cuda or cuda:<index> (default: as trained)");
  app.add_option("--set", request.overrides,
                 "override a value of the stored config, e.g. --set data.dir=elsewhere")
      ->take_all();
  app.add_flag("--reference", request.reference,
               "use the eager reference fast-weight layer (ignore model.artifact)");
  app.add_option("--batch", request.batchSize, "evaluation batch size");
  app.add_option("--threads", threads, "intra-op CPU threads");
  app.add_flag("--json", json, "print the metrics as one JSON object on stdout");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    // --help exits 0; a bad command line exits 2 like every other error.
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return fwp::runReportingErrors([&]() -> int {
    if (!device.empty())
      request.device = device;
    if (threads > 0)
      request.overrides.push_back("train.threads=" + std::to_string(threads));
    Metrics metrics = evaluateCheckpoint(request, std::cerr);
    if (json) {
      nlohmann::json record = {{"checkpoint", request.checkpoint}, {"split", request.split}};
      for (const auto &[name, value] : metrics)
        record[name] = value;
      std::cout << record.dump() << "\n";
    } else {
      std::cout << request.split << ":";
      std::cout << std::fixed << std::setprecision(4);
      for (const auto &[name, value] : metrics)
        std::cout << "  " << name << " " << value;
      std::cout << "\n";
    }
    return 0;
  });
}
