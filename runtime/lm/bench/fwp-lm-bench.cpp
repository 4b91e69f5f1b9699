// fwp-lm-bench: training throughput (tokens/s) of the WikiText-103 models.
//
//   fwp-lm-bench [--config-dir models/configs] [--setting small] [--models a,b,...]
//                [--batch 8] [--context 256] [--steps 3] [--warmup-steps 1]
//                [--vocab 267735] [--device cpu] [--json FILE]
//                [--layers reference|compiled|both] [--artifact-dir build/artifacts]
//
// For each model it builds the model of models/configs/wt103_<model>_<setting>.toml
// (with the eager reference layers, the compiled <artifact-dir>/<layer>.fwpk, or
// both in turn; batch, context and vocabulary as given: random Zipf-distributed
// tokens stand in for the corpus) and times full training steps: forward,
// adaptive softmax, backward, clipping, Adam. With --layers both, each fast-weight
// model's record has the compiled/reference speed ratio, measured in this process.
// Not a test: numbers only.

#include "fwp/runtime/AtomicFile.h"
#include "fwp/lm/Run.h"
#include "fwp/runtime/ToolMain.h"
#include "fwp/lm/WordModel.h"
#include "fwp/train/Config.h"
#include "fwp/train/Model.h"
#include "fwp/train/Training.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include <sys/resource.h>

namespace {

/// CPU time of this process (all threads): on a shared machine the wall time
/// of a step includes waiting for a core, the CPU time does not.
double processCpuSeconds() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

/// The paper's training speeds on WikiText-103, small setting (words/s on
/// its GPUs, Irie et al. 2021, Table 2).
double paperWordsPerSecond(const std::string &model) {
  if (model == "linear_transformer")
    return 66e3;
  if (model == "delta_net")
    return 63e3;
  if (model == "delta_rnn")
    return 41e3;
  if (model == "rdn")
    return 35e3;
  if (model == "delta_lstm")
    return 14e3;
  if (model == "transformer")
    return 33e3;
  return 0; // delta_mlp: not reported
}

std::vector<std::string> splitList(const std::string &text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty())
      out.push_back(item);
  return out;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"fwp-lm-bench: training throughput of the WikiText-103 models"};
  std::string configDir = "models/configs", setting = "small", device = "cpu", jsonPath, configFile;
  std::string layers = "reference", artifactDir = "build/artifacts";
  std::string models = "linear_transformer,delta_net,delta_mlp,delta_rnn,delta_lstm,rdn,transformer";
  int64_t batch = 8, context = 256, steps = 3, warmupSteps = 1, vocab = 267735;
  app.add_option("--config-dir", configDir, "folder of the wt103_*.toml configs");
  app.add_option("--setting", setting, "small or medium");
  app.add_option("--models", models, "comma-separated model names");
  app.add_option("--batch", batch, "sequences per step");
  app.add_option("--context", context, "tokens per sequence");
  app.add_option("--steps", steps, "timed training steps per model");
  app.add_option("--warmup-steps", warmupSteps, "untimed steps first");
  app.add_option("--vocab", vocab, "vocabulary size (WikiText-103: 267735)");
  app.add_option("--device", device, "cpu or cuda");
  app.add_option("--json", jsonPath, "write the results here");
  app.add_option("--config", configFile, "time this one config instead (its model, not its data)");
  app.add_option("--layers", layers, "fast-weight layers: reference, compiled or both")
      ->check(CLI::IsMember({"reference", "compiled", "both"}));
  app.add_option("--artifact-dir", artifactDir, "where the compiled <layer>.fwpk are (scripts/main.sh)");
  CLI11_PARSE(app, argc, argv);
  return fwp::runReportingErrors([&]() -> int {
    const torch::Device dev = fwp::train::parseDevice(device);
    nlohmann::json results = nlohmann::json::array();
    const auto names = configFile.empty() ? splitList(models) : std::vector<std::string>{configFile};
    std::vector<std::string> modes = {layers};
    if (layers == "both")
      modes = {"reference", "compiled"};
    std::map<std::string, double> referenceSpeed;
    for (const auto &name : names)
    for (const auto &mode : modes) {
      const std::string path =
          configFile.empty() ? configDir + "/wt103_" + name + "_" + setting + ".toml" : configFile;
      auto config = fwp::train::Config::fromFile(path);
      const bool fastWeights = config.getString("model.kind", "fwp") == "fwp";
      if (!fastWeights && mode == "compiled" && modes.size() > 1)
        continue; // a baseline has no fast-weight layer to compile: timed once
      if (fastWeights && mode == "compiled") {
        config.set("model.reference=false");
        config.set("model.artifact=" + artifactDir + "/" + config.getString("model.layer", "") +
                   ".fwpk");
      } else {
        config.set("model.reference=true");
      }
      torch::manual_seed(1);
      fwp::lm::WordModel model(fwp::lm::wordModelOptionsFromConfig(config, vocab), dev);
      auto optimizer = fwp::train::makeAdam(model->parameters(), fwp::train::adamOptionsFromConfig(config));
      const double clip = config.getDouble("train.clip", 0.25);
      model->train();
      // Zipf-distributed ids (p(rank r) ~ 1 / (r + 1)), like word frequencies:
      // uniform ids would put most targets in the large tail clusters.
      auto zipf = 1.0 / torch::arange(1, vocab + 1, torch::kFloat64);
      auto sample = torch::multinomial(zipf, batch * context * 2, /*replacement=*/true);
      auto inputs = sample.narrow(0, 0, batch * context).view({batch, context}).to(dev);
      auto targets = sample.narrow(0, batch * context, batch * context).to(dev);
      double seconds = 0, cpuSeconds = 0, lastLoss = 0;
      for (int64_t s = 0; s < warmupSteps + steps; ++s) {
        if (dev.is_cuda())
          torch::cuda::synchronize();
        auto start = std::chrono::steady_clock::now();
        const double cpuStart = processCpuSeconds();
        optimizer->zero_grad();
        auto [hidden, state] = model->hidden(inputs, {});
        auto loss = model->nll(hidden.reshape({-1, hidden.size(-1)}), targets).mean();
        loss.backward();
        torch::nn::utils::clip_grad_norm_(model->parameters(), clip);
        optimizer->step();
        lastLoss = loss.item<double>();
        if (dev.is_cuda())
          torch::cuda::synchronize();
        double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (s >= warmupSteps) {
          seconds += took;
          cpuSeconds += processCpuSeconds() - cpuStart;
        }
      }
      const double tokensPerSecond = static_cast<double>(batch * context * steps) / seconds;
      nlohmann::json record = {{"model", name},
                               {"config", path},
                               {"layers", fastWeights ? mode : "none"},
                               {"parameters", fwp::train::countParameters(*model)},
                               {"tokens_per_s", tokensPerSecond},
                               {"seconds_per_step", seconds / static_cast<double>(steps)},
                               {"cpu_seconds_per_step", cpuSeconds / static_cast<double>(steps)},
                               {"tokens_per_cpu_s", static_cast<double>(batch * context * steps) / cpuSeconds},
                               {"loss", lastLoss}};
      if (paperWordsPerSecond(name) > 0)
        record["paper_words_per_s"] = paperWordsPerSecond(name);
      if (fastWeights && mode == "reference")
        referenceSpeed[name] = tokensPerSecond;
      if (fastWeights && mode == "compiled" && referenceSpeed.count(name))
        record["speedup_vs_reference"] = tokensPerSecond / referenceSpeed[name];
      std::cout << name << " (" << record["layers"].get<std::string>() << "): " << static_cast<int64_t>(tokensPerSecond) << " tokens/s ("
                << seconds / static_cast<double>(steps) << " s/step wall, "
                << cpuSeconds / static_cast<double>(steps) << " s/step CPU, " << record["parameters"]
                << " parameters)" << std::endl;
      results.push_back(record);
    }
    nlohmann::json out = {{"setting", setting},   {"batch", batch},
                          {"context", context},   {"steps", steps},
                          {"vocab", vocab},       {"device", device},
                          {"threads", torch::get_num_threads()},
                          {"layers", layers},     {"results", results}};
    if (!jsonPath.empty()) {
      fwp::writeFileAtomically(jsonPath, out.dump(2) + "\n");
    }
    return 0;
  });
}
