//===- Config.h - TOML run configuration with overrides --------*- C++ -*-===//
//
// A Config is a TOML document (models/configs/*.toml) plus command-line
// overrides ("--set train.steps=100"). Values are read by dotted key with a
// default; every key read is remembered, so checkUnused() can reject keys
// that nothing read (a typo such as "train.stpes" is an error, not a silent
// default). Errors are fwp::Error naming the config's source and the key.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/Layer.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace fwp::train {

class Config {
public:
  Config();
  ~Config();
  Config(const Config &other);
  Config &operator=(const Config &other);
  Config(Config &&) noexcept;
  Config &operator=(Config &&) noexcept;

  static Config fromFile(const std::string &path);
  /// `source` names the text in error messages (a file name, "checkpoint").
  static Config fromString(const std::string &text, const std::string &source);

  /// Applies "a.b.c=value": the value is parsed as TOML (100, 3e-4, true,
  /// [0.9, 0.995], "text"); anything that is not valid TOML is taken as a
  /// bare string, so --set model.layer=rdn works without quotes.
  void set(const std::string &assignment);
  /// Sets one key to a value given as TOML text.
  void setValue(const std::string &key, const std::string &tomlValue);

  bool has(const std::string &key) const;
  int64_t getInt(const std::string &key, std::optional<int64_t> fallback = {}) const;
  double getDouble(const std::string &key, std::optional<double> fallback = {}) const;
  bool getBool(const std::string &key, std::optional<bool> fallback = {}) const;
  std::string getString(const std::string &key,
                        std::optional<std::string> fallback = {}) const;
  std::vector<double> getDoubles(const std::string &key,
                                 std::optional<std::vector<double>> fallback = {}) const;
  std::vector<std::string> getStrings(const std::string &key,
                                      std::optional<std::vector<std::string>> fallback = {}) const;

  /// Marks `key` (and every key below it) as used: for settings that this
  /// configuration deliberately ignores (e.g. model.layer of an LSTM).
  void markUsed(const std::string &key) const;
  /// Throws fwp::Error listing every leaf key that no get*/has call asked for.
  void checkUnused() const;
  /// The whole document (with overrides applied) as TOML text.
  std::string toToml() const;
  const std::string &source() const { return source_; }

private:
  struct Document; // the parsed toml::table, kept out of this header
  std::unique_ptr<Document> doc_;
  std::string source_;
  mutable std::set<std::string> used_;
};

} // namespace fwp::train
