// Helpers for tests that run fwp's tools as processes.
#pragma once

#include "fwp/runtime/CheckpointFile.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace fwp::train::test::tools {

struct Result {
  int code;
  std::string output; // stdout and stderr
};

/// Runs `command` through the shell; its status and output.
inline Result runTool(const std::string &command) {
  std::string full = command + " 2>&1";
  std::FILE *pipe = ::popen(full.c_str(), "r");
  Result result{-1, ""};
  if (!pipe)
    return result;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0)
    result.output.append(buffer, n);
  int status = ::pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline std::string readBytes(const std::filesystem::path &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Starts `command` (through sh -c exec) and returns its pid.
inline pid_t spawn(const std::string &command, const std::filesystem::path &output) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::string full = "exec " + command + " > " + output.string() + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char *>(nullptr));
    ::_exit(127);
  }
  return pid;
}

/// The model tensors of a checkpoint, by name.
inline std::map<std::string, torch::Tensor> modelTensors(const std::filesystem::path &path) {
  fwp::CheckpointFile file = fwp::readCheckpointFile(path.string());
  torch::serialize::InputArchive archive;
  archive.load_from(file.payload.data(), file.payload.size());
  c10::IValue model;
  EXPECT_TRUE(archive.try_read("model", model));
  std::map<std::string, torch::Tensor> out;
  for (const auto &entry : model.toGenericDict())
    out[entry.key().toStringRef()] = entry.value().toTensor();
  return out;
}

/// The records of one split ("train", "valid") of a run's metrics.jsonl.
inline std::vector<nlohmann::json> metricsRecords(const std::filesystem::path &run,
                                                  const std::string &split) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto record = nlohmann::json::parse(line);
    if (record["split"] == split)
      out.push_back(record);
  }
  return out;
}

/// Two runs that must agree (e.g. 2 processes against 1 with the same
/// global batch): the same loss in every train and valid record (relative
/// 1e-5) and the same final parameters in last.pt (1e-5).
inline void expectSameRun(const std::filesystem::path &a, const std::filesystem::path &b) {
  for (const char *split : {"train", "valid"}) {
    SCOPED_TRACE(split);
    auto ra = metricsRecords(a, split), rb = metricsRecords(b, split);
    ASSERT_EQ(ra.size(), rb.size());
    ASSERT_FALSE(ra.empty());
    for (size_t i = 0; i < ra.size(); ++i) {
      EXPECT_EQ(ra[i]["step"], rb[i]["step"]);
      const double la = ra[i]["loss"].get<double>(), lb = rb[i]["loss"].get<double>();
      EXPECT_LE(std::abs(la - lb), 1e-5 * std::abs(la)) << "step " << ra[i]["step"];
    }
  }
  auto pa = modelTensors(a / "last.pt"), pb = modelTensors(b / "last.pt");
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto &[name, tensor] : pa)
    EXPECT_LE((tensor - pb.at(name)).abs().max().item<double>(), 1e-5) << name;
}

} // namespace fwp::train::test::tools
