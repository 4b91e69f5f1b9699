//===- FwpRunTest.cpp - The fwp-run tool, end to end ----------------------===//
//
// Runs the built binary (FWP_RUN_PATH) on files written here, and checks its
// outputs against the library called in-process, and its failures: exit code
// 2, a message naming the tensor/field, and no output file.
//
//===----------------------------------------------------------------------===//
#include "TestSupport.h"

#include "fwp/runtime/Safetensors.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/wait.h>

namespace fwp::test {
namespace {

namespace fs = std::filesystem;

std::string shellQuote(const std::string &text) {
  std::string out = "'";
  for (char c : text)
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string slurp(const fs::path &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

struct ToolResult {
  int exitCode = -1;
  std::string out;
  std::string err;
};

class FwpRun : public ::testing::Test {
protected:
  void SetUp() override {
    const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
    root = fs::path(FWP_TEST_TMPDIR) / "fwp-run" / info->name();
    removeTree(root);
    work = root / "work";
    fs::create_directories(work);
    fs::create_directories(root / "logs");
    inputs = (work / "in.safetensors").string();
    out = (work / "out.safetensors").string();
  }

  ToolResult run(const std::vector<std::string> &args) const {
    std::string command = shellQuote(FWP_RUN_PATH);
    for (const auto &arg : args)
      command += " " + shellQuote(arg);
    const fs::path stdoutPath = root / "logs" / "stdout.txt", stderrPath = root / "logs" / "stderr.txt";
    command += " >" + shellQuote(stdoutPath.string()) + " 2>" + shellQuote(stderrPath.string());
    const int status = std::system(command.c_str());
    ToolResult result;
    result.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.out = slurp(stdoutPath);
    result.err = slurp(stderrPath);
    return result;
  }

  /// Exit code 2, "error: ..." mentioning every needle, and nothing written
  /// next to the inputs.
  void expectRejected(const std::vector<std::string> &args, const std::vector<std::string> &needles) {
    const std::vector<std::string> before = filesInWork();
    const ToolResult result = run(args);
    EXPECT_EQ(result.exitCode, 2) << result.err;
    EXPECT_EQ(result.err.rfind("error: ", 0), 0u) << result.err;
    for (const auto &needle : needles)
      EXPECT_NE(result.err.find(needle), std::string::npos)
          << "stderr \"" << result.err << "\" does not mention \"" << needle << "\"";
    EXPECT_FALSE(fs::exists(out));
    EXPECT_EQ(filesInWork(), before) << "a file was left behind";
  }

  std::vector<std::string> filesInWork() const {
    std::vector<std::string> names;
    for (const auto &entry : fs::directory_iterator(work))
      names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  std::vector<std::string> basicArgs(const std::string &layer) const {
    return {"--layer", layer, "--inputs", inputs, "--out", out};
  }

  fs::path root, work;
  std::string inputs, out;
};

std::vector<std::string> sortedKeys(const TensorMap &tensors) {
  std::vector<std::string> keys;
  for (const auto &entry : tensors)
    keys.push_back(entry.first);
  return keys;
}

TEST_F(FwpRun, ForwardMatchesTheLibrary) {
  // d = 5 is not the default: the tool must read it off the tensors.
  const auto layer = makeReferenceLayer("delta_rnn", {{"d", 5}});
  TensorMap tensors = randomInputs(*layer, 2, 3, 4, torch::kFloat, 41, true);
  tensors.erase("init.R"); // a missing initial state starts at zero
  const TensorMap expected = layer->forward(tensors);
  tensors["grad.y"] = torch::ones({2, 3, 4, 5}); // ignored without --backward
  writeSafetensors(inputs, tensors);

  const ToolResult result = run(basicArgs("delta_rnn"));
  ASSERT_EQ(result.exitCode, 0) << result.err;
  const SafetensorsFile written = readSafetensors(out);
  EXPECT_EQ(sortedKeys(written.tensors), sortedKeys(expected));
  EXPECT_EQ(written.metadata.at("layer"), "delta_rnn");
  for (const auto &[name, tensor] : expected) {
    EXPECT_EQ(written.tensors.at(name).scalar_type(), torch::kFloat) << name;
    EXPECT_TRUE(tensorsNear(written.tensors.at(name), tensor, 1e-6)) << name;
  }
}

TEST_F(FwpRun, ForwardInfersOrTakesDims) {
  const auto layer = makeReferenceLayer("delta_mlp", {{"d", 3}, {"d_ff", 7}});
  const TensorMap tensors = randomInputs(*layer, 1, 2, 3, torch::kDouble, 43, false);
  const TensorMap expected = layer->forward(tensors);
  writeSafetensors(inputs, tensors);
  for (const bool explicitDims : {false, true}) {
    SCOPED_TRACE(explicitDims ? "--dim given" : "dims inferred");
    std::vector<std::string> args = basicArgs("delta_mlp");
    if (explicitDims)
      args.insert(args.end(), {"--dim", "d_ff=7", "--dim", "d=3", "--device", "cpu"});
    const ToolResult result = run(args);
    ASSERT_EQ(result.exitCode, 0) << result.err;
    const SafetensorsFile written = readSafetensors(out);
    EXPECT_EQ(sortedKeys(written.tensors), sortedKeys(expected));
    for (const auto &[name, tensor] : expected)
      EXPECT_TRUE(tensorsNear(written.tensors.at(name), tensor, 1e-12)) << name;
    fs::remove(out);
  }
}

TEST_F(FwpRun, BackwardMatchesTheLibrary) {
  const auto layer = makeReferenceLayer("rdn", {{"d", 4}});
  TensorMap tensors = randomInputs(*layer, 2, 2, 3, torch::kDouble, 47, true);
  tensors.erase("init.y"); // not given: so no grad.init.y either
  torch::manual_seed(53);
  const torch::Tensor gradY = torch::randn({2, 2, 3, 4}, torch::kDouble);
  const torch::Tensor gradFinalW = torch::randn({2, 2, 4, 4}, torch::kDouble);

  // The library's answer, in-process.
  TensorMap leaves;
  for (const auto &[name, tensor] : tensors)
    leaves[name] = tensor.clone().requires_grad_(true);
  const TensorMap outputs = layer->forward(leaves);
  std::vector<torch::Tensor> leafList;
  for (const auto &entry : leaves)
    leafList.push_back(entry.second);
  const auto grads = torch::autograd::grad({outputs.at("y"), outputs.at("final.W")}, leafList,
                                           {gradY, gradFinalW});
  TensorMap expected;
  for (const auto &[name, tensor] : outputs)
    expected[name] = tensor.detach();
  size_t i = 0;
  for (const auto &entry : leaves)
    expected["grad." + entry.first] = grads[i++];

  TensorMap file = tensors;
  file["grad.y"] = gradY;
  file["grad.final.W"] = gradFinalW;
  writeSafetensors(inputs, file);
  std::vector<std::string> args = basicArgs("rdn");
  args.push_back("--backward");
  const ToolResult result = run(args);
  ASSERT_EQ(result.exitCode, 0) << result.err;
  const SafetensorsFile written = readSafetensors(out);

  const std::vector<std::string> expectedNames{
      "final.W", "final.y", "grad.R_k", "grad.R_q",   "grad.R_v", "grad.beta", "grad.init.W",
      "grad.k",  "grad.q",  "grad.r_b", "grad.v",     "y"};
  EXPECT_EQ(sortedKeys(written.tensors), expectedNames);
  EXPECT_EQ(sortedKeys(expected), expectedNames);
  for (const auto &[name, tensor] : expected)
    EXPECT_TRUE(tensorsNear(written.tensors.at(name), tensor, 1e-12)) << name;
}

// --- rejections ---------------------------------------------------------------

class FwpRunRejects : public FwpRun {
protected:
  void SetUp() override {
    FwpRun::SetUp();
    const auto layer = makeReferenceLayer("delta_net", {{"d", 5}});
    tensors = randomInputs(*layer, 2, 2, 3, torch::kFloat, 59, false);
  }
  TensorMap tensors;
};

TEST_F(FwpRunRejects, MissingTensor) {
  tensors.erase("k");
  writeSafetensors(inputs, tensors);
  expectRejected(basicArgs("delta_net"), {"missing tensor 'k'"});
}

TEST_F(FwpRunRejects, WrongShape) {
  tensors["q"] = torch::zeros({2, 2, 3, 4});
  writeSafetensors(inputs, tensors);
  expectRejected(basicArgs("delta_net"), {"'q'", "[2, 2, 3, 4]", "d = 5"});
  tensors["q"] = torch::zeros({2, 2, 3, 5});
  tensors["beta"] = torch::zeros({2, 2, 3});
  writeSafetensors(inputs, tensors);
  expectRejected(basicArgs("delta_net"), {"'beta'", "[B, H, T, 1] = [2, 2, 3, 1]"});
}

TEST_F(FwpRunRejects, WrongDtype) {
  tensors["v"] = tensors.at("v").to(torch::kDouble);
  writeSafetensors(inputs, tensors);
  expectRejected(basicArgs("delta_net"), {"'v'", "float64"});
  tensors["v"] = tensors.at("v").to(torch::kLong);
  writeSafetensors(inputs, tensors);
  expectRejected(basicArgs("delta_net"), {"'v'", "Long"});
}

TEST_F(FwpRunRejects, CorruptFile) {
  const std::string bytes = serializeSafetensors(tensors);
  {
    std::ofstream file(inputs, std::ios::binary);
    file.write(bytes.data(), 20); // inside the header
  }
  expectRejected(basicArgs("delta_net"), {inputs, "truncated"});
  std::string garbled = bytes;
  garbled[8] = '!'; // the opening brace of the JSON header
  {
    std::ofstream file(inputs, std::ios::binary | std::ios::trunc);
    file.write(garbled.data(), static_cast<std::streamsize>(garbled.size()));
  }
  expectRejected(basicArgs("delta_net"), {inputs, "not valid JSON"});
  {
    std::ofstream file(inputs, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 4)); // data cut short
  }
  expectRejected(basicArgs("delta_net"), {inputs, "data_offsets", "out of range"});
}

TEST_F(FwpRunRejects, MissingInputsFile) {
  expectRejected(basicArgs("delta_net"), {inputs, "cannot open"});
}

TEST_F(FwpRunRejects, UnknownLayerFlagOrDim) {
  writeSafetensors(inputs, tensors);
  expectRejected(basicArgs("delta_gru"), {"unknown layer 'delta_gru'"});
  std::vector<std::string> args = basicArgs("delta_net");
  args.push_back("--bogus");
  expectRejected(args, {"--bogus"});
  expectRejected({"--layer", "delta_net", "--inputs", inputs}, {"--out"});
  args = basicArgs("delta_net");
  args.insert(args.end(), {"--dim", "d=7"});
  expectRejected(args, {"d = 7 was given", "d = 5"});
  args = basicArgs("delta_net");
  args.insert(args.end(), {"--dim", "d_ff=7"});
  expectRejected(args, {"no dim 'd_ff'"});
  args = basicArgs("delta_net");
  args.insert(args.end(), {"--dim", "d"});
  expectRejected(args, {"--dim 'd'", "NAME=SIZE"});
  args = basicArgs("delta_net");
  args.insert(args.end(), {"--device", "tpu"});
  expectRejected(args, {"--device", "tpu"});
}

TEST_F(FwpRunRejects, UnexpectedTensor) {
  tensors["W"] = torch::zeros({2, 2, 5, 5}); // should have been init.W
  writeSafetensors(inputs, tensors);
  expectRejected(basicArgs("delta_net"), {"unexpected tensor 'W'", "init.W"});
}

TEST_F(FwpRunRejects, BadOutputGradients) {
  std::vector<std::string> args = basicArgs("delta_net");
  args.push_back("--backward");
  writeSafetensors(inputs, tensors);
  expectRejected(args, {"missing tensor 'grad.y'"});
  tensors["grad.y"] = torch::zeros({2, 2, 3, 4});
  writeSafetensors(inputs, tensors);
  expectRejected(args, {"'grad.y'", "[2, 2, 3, 4]", "[2, 2, 3, 5]"});
  tensors["grad.y"] = torch::zeros({2, 2, 3, 5});
  tensors["grad.final.V"] = torch::zeros({2, 2, 5, 5});
  writeSafetensors(inputs, tensors);
  expectRejected(args, {"unexpected tensor 'grad.final.V'", "grad.final.W"});
}

TEST_F(FwpRunRejects, CudaWithoutCuda) {
  if (torch::cuda::is_available())
    GTEST_SKIP() << "CUDA is available here";
  writeSafetensors(inputs, tensors);
  std::vector<std::string> args = basicArgs("delta_net");
  args.insert(args.end(), {"--device", "cuda"});
  expectRejected(args, {"--device cuda", "CUDA is not available"});
}

} // namespace
} // namespace fwp::test
