//===- Config.cpp - TOML run configuration with overrides ----------------===//

#include "fwp/train/Config.h"

#include <toml++/toml.h>

#include <fstream>
#include <sstream>

namespace fwp::train {

struct Config::Document {
  toml::table table;
};

Config::Config() : doc_(std::make_unique<Document>()) {}
Config::~Config() = default;
Config::Config(const Config &other)
    : doc_(std::make_unique<Document>(*other.doc_)), source_(other.source_),
      used_(other.used_) {}
Config &Config::operator=(const Config &other) {
  if (this != &other) {
    doc_ = std::make_unique<Document>(*other.doc_);
    source_ = other.source_;
    used_ = other.used_;
  }
  return *this;
}
Config::Config(Config &&) noexcept = default;
Config &Config::operator=(Config &&) noexcept = default;

Config Config::fromString(const std::string &text, const std::string &source) {
  Config config;
  config.source_ = source;
  try {
    config.doc_->table = toml::parse(text, source);
  } catch (const toml::parse_error &e) {
    std::ostringstream message;
    message << source << ":" << e.source().begin.line << ":"
            << e.source().begin.column << ": " << e.description();
    throw Error(message.str());
  }
  return config;
}

Config Config::fromFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path + ": cannot open the config file");
  std::stringstream text;
  text << in.rdbuf();
  return fromString(text.str(), path);
}

namespace {

std::vector<std::string> splitKey(const std::string &key) {
  std::vector<std::string> parts;
  std::stringstream in(key);
  std::string part;
  while (std::getline(in, part, '.'))
    parts.push_back(part);
  return parts;
}

const char *typeName(const toml::node &node) {
  switch (node.type()) {
  case toml::node_type::table: return "a table";
  case toml::node_type::array: return "an array";
  case toml::node_type::string: return "a string";
  case toml::node_type::integer: return "an integer";
  case toml::node_type::floating_point: return "a number";
  case toml::node_type::boolean: return "a boolean";
  default: return "a date/time";
  }
}

} // namespace

void Config::setValue(const std::string &key, const std::string &tomlValue) {
  std::vector<std::string> parts = splitKey(key);
  for (const auto &part : parts)
    if (part.empty())
      throw Error("--set " + key + ": malformed key");
  toml::table parsed;
  try {
    parsed = toml::parse("value = " + tomlValue, "--set " + key);
  } catch (const toml::parse_error &e) {
    throw Error("--set " + key + ": '" + tomlValue + "' is not a TOML value: " +
                std::string(e.description()));
  }
  toml::table *table = &doc_->table;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node *child = table->get(parts[i]);
    if (!child)
      child = &table->insert(parts[i], toml::table{}).first->second;
    table = child->as_table();
    if (!table)
      throw Error("--set " + key + ": '" + parts[i] + "' is not a table");
  }
  if (auto *existing = table->get(parts.back()); existing && existing->is_table())
    throw Error("--set " + key + ": cannot replace a whole table");
  table->insert_or_assign(parts.back(), *parsed.get("value"));
}

void Config::set(const std::string &assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw Error("--set '" + assignment + "': expected key=value");
  std::string key = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  try {
    toml::table probe = toml::parse("value = " + value);
    (void)probe;
    setValue(key, value);
  } catch (const toml::parse_error &) {
    // Not TOML: take it as a bare string (escape quotes and backslashes).
    std::string quoted = "\"";
    for (char c : value) {
      if (c == '"' || c == '\\')
        quoted += '\\';
      quoted += c;
    }
    setValue(key, quoted + "\"");
  }
}

namespace {

const toml::node *lookup(const toml::table &table, const std::string &key) {
  const toml::table *current = &table;
  std::vector<std::string> parts = splitKey(key);
  for (size_t i = 0; i < parts.size(); ++i) {
    const toml::node *node = current->get(parts[i]);
    if (!node)
      return nullptr;
    if (i + 1 == parts.size())
      return node;
    current = node->as_table();
    if (!current)
      return nullptr;
  }
  return nullptr;
}

} // namespace

bool Config::has(const std::string &key) const {
  return lookup(doc_->table, key) != nullptr;
}

namespace {

template <typename T, typename Convert>
T getTyped(const toml::table &table, const std::string &source,
           std::set<std::string> &used, const std::string &key,
           const std::optional<T> &fallback, const char *expected,
           Convert convert) {
  used.insert(key);
  const toml::node *node = lookup(table, key);
  if (!node) {
    if (fallback)
      return *fallback;
    throw Error(source + ": missing required key '" + key + "'");
  }
  std::optional<T> value = convert(*node);
  if (!value)
    throw Error(source + ": key '" + key + "': expected " + expected +
                ", found " + typeName(*node));
  return *value;
}

} // namespace

int64_t Config::getInt(const std::string &key,
                       std::optional<int64_t> fallback) const {
  return getTyped<int64_t>(doc_->table, source_, used_, key, fallback,
                           "an integer", [](const toml::node &n) {
                             return n.is_integer()
                                        ? std::optional<int64_t>(*n.value<int64_t>())
                                        : std::nullopt;
                           });
}

double Config::getDouble(const std::string &key,
                         std::optional<double> fallback) const {
  return getTyped<double>(doc_->table, source_, used_, key, fallback, "a number",
                          [](const toml::node &n) -> std::optional<double> {
                            if (n.is_floating_point())
                              return *n.value<double>();
                            if (n.is_integer())
                              return static_cast<double>(*n.value<int64_t>());
                            return std::nullopt;
                          });
}

bool Config::getBool(const std::string &key, std::optional<bool> fallback) const {
  return getTyped<bool>(doc_->table, source_, used_, key, fallback, "true or false",
                        [](const toml::node &n) -> std::optional<bool> {
                          if (n.is_boolean())
                            return *n.value<bool>();
                          return std::nullopt;
                        });
}

std::string Config::getString(const std::string &key,
                              std::optional<std::string> fallback) const {
  return getTyped<std::string>(doc_->table, source_, used_, key, fallback,
                               "a string",
                               [](const toml::node &n) -> std::optional<std::string> {
                                 if (n.is_string())
                                   return *n.value<std::string>();
                                 return std::nullopt;
                               });
}

std::vector<double>
Config::getDoubles(const std::string &key,
                   std::optional<std::vector<double>> fallback) const {
  return getTyped<std::vector<double>>(
      doc_->table, source_, used_, key, fallback, "an array of numbers",
      [](const toml::node &n) -> std::optional<std::vector<double>> {
        const toml::array *array = n.as_array();
        if (!array)
          return std::nullopt;
        std::vector<double> values;
        for (const auto &element : *array) {
          if (element.is_floating_point())
            values.push_back(*element.value<double>());
          else if (element.is_integer())
            values.push_back(static_cast<double>(*element.value<int64_t>()));
          else
            return std::nullopt;
        }
        return values;
      });
}

std::vector<std::string>
Config::getStrings(const std::string &key,
                   std::optional<std::vector<std::string>> fallback) const {
  return getTyped<std::vector<std::string>>(
      doc_->table, source_, used_, key, fallback, "an array of strings",
      [](const toml::node &n) -> std::optional<std::vector<std::string>> {
        const toml::array *array = n.as_array();
        if (!array)
          return std::nullopt;
        std::vector<std::string> values;
        for (const auto &element : *array) {
          if (!element.is_string())
            return std::nullopt;
          values.push_back(*element.value<std::string>());
        }
        return values;
      });
}

namespace {

void collectLeaves(const toml::table &table, const std::string &prefix,
                   std::vector<std::string> &out) {
  for (const auto &[name, node] : table) {
    std::string key = prefix.empty() ? std::string(name.str())
                                     : prefix + "." + std::string(name.str());
    if (const toml::table *child = node.as_table())
      collectLeaves(*child, key, out);
    else
      out.push_back(key);
  }
}

} // namespace

void Config::markUsed(const std::string &prefix) const {
  std::vector<std::string> leaves;
  collectLeaves(doc_->table, "", leaves);
  for (const auto &key : leaves)
    if (key == prefix || key.compare(0, prefix.size() + 1, prefix + ".") == 0)
      used_.insert(key);
}

void Config::checkUnused() const {
  std::vector<std::string> leaves;
  collectLeaves(doc_->table, "", leaves);
  std::string unused;
  for (const auto &key : leaves)
    if (!used_.count(key))
      unused += (unused.empty() ? "" : ", ") + key;
  if (!unused.empty())
    throw Error(source_ + ": unknown key(s) or key(s) this configuration does "
                          "not use: " + unused);
}

std::string Config::toToml() const {
  std::ostringstream out;
  out << doc_->table;
  return out.str();
}

} // namespace fwp::train
