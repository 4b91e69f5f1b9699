// Small helpers shared by the fwp_train tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace fwp::train::test {

/// A fresh folder under the test's working directory, removed afterwards.
class TempDir {
public:
  explicit TempDir(const std::string &name)
      : path_(std::filesystem::current_path() /
              ("tmp_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path &path() const { return path_; }
  std::filesystem::path operator/(const std::string &name) const { return path_ / name; }

private:
  std::filesystem::path path_;
};

inline void writeText(const std::filesystem::path &path, const std::string &text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

/// Runs `body`, expects an exception of type E whose message contains `needle`.
template <typename E, typename F>
void expectErrorContaining(F &&body, const std::string &needle) {
  try {
    body();
  } catch (const E &e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << needle;
    return;
  }
  ADD_FAILURE() << "no exception; expected one containing: " << needle;
}

inline std::vector<std::string> words(const std::string &text) {
  std::vector<std::string> out;
  std::string w;
  for (char c : text) {
    if (c == ' ') {
      if (!w.empty())
        out.push_back(w);
      w.clear();
    } else {
      w += c;
    }
  }
  if (!w.empty())
    out.push_back(w);
  return out;
}

} // namespace fwp::train::test
