//===- DataFormat.cpp - Shared pieces of the task data files -------------===//

#include "fwp/train/DataFormat.h"

#include <fstream>
#include <sstream>
#include <unistd.h>

namespace fwp::train {

Vocab::Vocab(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i)
    ids_.emplace(tokens_[i], static_cast<int32_t>(i));
}

int32_t Vocab::find(const std::string &token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

std::string DataHeader::get(const std::string &key) const {
  for (const auto &[k, v] : fields)
    if (k == key)
      return v;
  return "";
}

std::string DataHeader::line() const {
  std::string text = "# " + format;
  for (const auto &[k, v] : fields)
    text += " " + k + "=" + v;
  return text;
}

DataHeader DataHeader::parse(const std::string &text, const std::string &file,
                             const std::string &expectedFormat) {
  const std::string prefix = "# " + expectedFormat;
  if (text.compare(0, prefix.size(), prefix) != 0 ||
      (text.size() > prefix.size() && text[prefix.size()] != ' '))
    throw lineError(file, 1,
                    "expected a header line starting with '" + prefix + "'");
  DataHeader header;
  header.format = expectedFormat;
  std::istringstream rest(text.substr(prefix.size()));
  std::string field;
  while (rest >> field) {
    auto eq = field.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == field.size())
      throw lineError(file, 1, "header field '" + field +
                                   "' is not of the form key=value");
    header.fields.emplace_back(field.substr(0, eq), field.substr(eq + 1));
  }
  return header;
}

std::vector<std::string> splitOnSpace(const std::string &text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t end = text.find(' ', start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos)
      break;
    start = end + 1;
  }
  return parts;
}

Error lineError(const std::string &file, int64_t line,
                const std::string &message) {
  return Error(file + ":" + std::to_string(line) + ": " + message);
}

std::vector<std::string> readLines(const std::filesystem::path &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path.string() + ": cannot open for reading");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line))
    lines.push_back(line);
  if (in.bad())
    throw Error(path.string() + ": read failed");
  return lines;
}

} // namespace fwp::train
