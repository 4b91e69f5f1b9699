//===- Safetensors.cpp - A validating safetensors reader and atomic writer ===//
#include "fwp/runtime/Safetensors.h"

#include "fwp/runtime/AtomicFile.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <tuple>

#include <sys/stat.h>
#include <unistd.h>

namespace fwp {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; this reader copies bytes as they are");

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u << 20; // as the reference implementation
constexpr size_t kHeaderLengthBytes = 8;

struct DtypeInfo {
  const char *name;
  torch::ScalarType type;
};

const DtypeInfo kDtypes[] = {
    {"F64", torch::kDouble}, {"F32", torch::kFloat}, {"F16", torch::kHalf},
    {"BF16", torch::kBFloat16}, {"I64", torch::kLong}, {"I32", torch::kInt},
    {"I16", torch::kShort}, {"I8", torch::kChar}, {"U8", torch::kByte},
};

const DtypeInfo *dtypeByName(const std::string &name) {
  for (const auto &info : kDtypes)
    if (name == info.name)
      return &info;
  return nullptr;
}

const DtypeInfo *dtypeByType(torch::ScalarType type) {
  for (const auto &info : kDtypes)
    if (type == info.type)
      return &info;
  return nullptr;
}

/// One tensor's entry of the header, checked but not yet copied.
struct Entry {
  std::string name;
  const DtypeInfo *dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

uint64_t nonNegativeInteger(const json &value, const std::string &what, const std::string &origin) {
  if (!value.is_number_unsigned())
    throw Error(origin + ": " + what + " must be a non-negative integer, got " + value.dump());
  return value.get<uint64_t>();
}

Entry parseEntry(const std::string &name, const json &value, const std::string &origin,
                 uint64_t bufferBytes) {
  const std::string where = origin + ": tensor '" + name + "'";
  if (!value.is_object())
    throw Error(where + ": entry must be a JSON object, got " + value.dump());
  for (const auto &field : value.items())
    if (field.key() != "dtype" && field.key() != "shape" && field.key() != "data_offsets")
      throw Error(where + ": unknown field '" + field.key() + "'");
  for (const char *field : {"dtype", "shape", "data_offsets"})
    if (!value.contains(field))
      throw Error(where + ": missing field '" + field + "'");

  Entry entry;
  entry.name = name;
  const json &dtype = value.at("dtype");
  if (!dtype.is_string() || !(entry.dtype = dtypeByName(dtype.get<std::string>())))
    throw Error(where + ": field 'dtype' " + dtype.dump() +
                " is not one of F64, F32, F16, BF16, I64, I32, I16, I8, U8");

  const json &shape = value.at("shape");
  if (!shape.is_array())
    throw Error(where + ": field 'shape' must be an array, got " + shape.dump());
  // Multiply in 128 bits so a huge shape cannot wrap around to a small size.
  unsigned __int128 bytes = torch::elementSize(entry.dtype->type);
  for (const json &size : shape) {
    const uint64_t each = nonNegativeInteger(size, "tensor '" + name + "': each entry of field 'shape'", origin);
    if (each > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(where + ": field 'shape' entry " + size.dump() + " is too large");
    entry.shape.push_back(static_cast<int64_t>(each));
    bytes = std::min<unsigned __int128>(bytes * each, static_cast<unsigned __int128>(1) << 100);
  }

  const json &offsets = value.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2)
    throw Error(where + ": field 'data_offsets' must be [begin, end], got " + offsets.dump());
  entry.begin = nonNegativeInteger(offsets[0], "tensor '" + name + "': field 'data_offsets' begin", origin);
  entry.end = nonNegativeInteger(offsets[1], "tensor '" + name + "': field 'data_offsets' end", origin);
  if (entry.begin > entry.end)
    throw Error(where + ": field 'data_offsets' " + offsets.dump() + " has begin > end");
  if (entry.end > bufferBytes)
    throw Error(where + ": field 'data_offsets' " + offsets.dump() +
                " is out of range: the data buffer has " + std::to_string(bufferBytes) + " bytes");
  if (bytes != entry.end - entry.begin)
    throw Error(where + ": field 'shape' " + shape.dump() + " of dtype " + entry.dtype->name +
                " needs " +
                (bytes >> 64 ? std::string("more than 2^64")
                             : std::to_string(static_cast<uint64_t>(bytes))) +
                " bytes but field 'data_offsets' " + offsets.dump() + " spans " +
                std::to_string(entry.end - entry.begin));
  return entry;
}

SafetensorsMetadata parseMetadata(const json &value, const std::string &origin) {
  if (!value.is_object())
    throw Error(origin + ": field '__metadata__' must be an object of strings, got " + value.dump());
  SafetensorsMetadata metadata;
  for (const auto &item : value.items()) {
    if (!item.value().is_string())
      throw Error(origin + ": field '__metadata__." + item.key() + "' must be a string, got " +
                  item.value().dump());
    metadata[item.key()] = item.value().get<std::string>();
  }
  return metadata;
}

std::string systemError() { return std::strerror(errno); }

} // namespace

SafetensorsFile parseSafetensors(const std::string &bytes, const std::string &origin) {
  if (bytes.size() < kHeaderLengthBytes)
    throw Error(origin + ": truncated: " + std::to_string(bytes.size()) +
                " bytes, fewer than the 8-byte header length");
  uint64_t headerBytes = 0;
  std::memcpy(&headerBytes, bytes.data(), kHeaderLengthBytes);
  const uint64_t available = bytes.size() - kHeaderLengthBytes;
  if (headerBytes > kMaxHeaderBytes)
    throw Error(origin + ": header length " + std::to_string(headerBytes) +
                " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
  if (headerBytes > available)
    throw Error(origin + ": truncated: header length " + std::to_string(headerBytes) +
                " but only " + std::to_string(available) + " bytes follow it");

  // Parse the header, noting duplicate top-level keys (JSON would keep the last).
  std::set<std::string> seen;
  std::string duplicate;
  const json::parser_callback_t noteKeys = [&](int depth, json::parse_event_t event, json &parsed) {
    if (event == json::parse_event_t::key && depth == 1 && !seen.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(bytes.begin() + kHeaderLengthBytes,
                         bytes.begin() + kHeaderLengthBytes + static_cast<std::ptrdiff_t>(headerBytes),
                         noteKeys);
  } catch (const json::exception &e) {
    throw Error(origin + ": header is not valid JSON: " + e.what());
  }
  if (!header.is_object())
    throw Error(origin + ": header must be a JSON object, got a " + std::string(header.type_name()));
  if (!duplicate.empty())
    throw Error(origin + ": header names '" + duplicate + "' twice");

  const uint64_t bufferBytes = available - headerBytes;
  const char *buffer = bytes.data() + kHeaderLengthBytes + headerBytes;
  SafetensorsFile file;
  std::vector<Entry> entries;
  for (const auto &item : header.items()) {
    if (item.key() == "__metadata__")
      file.metadata = parseMetadata(item.value(), origin);
    else
      entries.push_back(parseEntry(item.key(), item.value(), origin, bufferBytes));
  }

  // The tensors must tile the buffer: sorted by offset, each starts where the
  // previous one ended, and the last ends at the end of the file.
  std::vector<const Entry *> byOffset;
  for (const auto &entry : entries)
    byOffset.push_back(&entry);
  std::sort(byOffset.begin(), byOffset.end(), [](const Entry *a, const Entry *b) {
    return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
  });
  uint64_t cursor = 0;
  const Entry *previous = nullptr;
  for (const Entry *entry : byOffset) {
    if (entry->begin < cursor)
      throw Error(origin + ": tensor '" + entry->name + "': field 'data_offsets' [" +
                  std::to_string(entry->begin) + ", " + std::to_string(entry->end) +
                  "] overlaps tensor '" + previous->name + "' [" + std::to_string(previous->begin) +
                  ", " + std::to_string(previous->end) + "]");
    if (entry->begin > cursor)
      throw Error(origin + ": tensor '" + entry->name + "': field 'data_offsets' begins at " +
                  std::to_string(entry->begin) + ", leaving bytes [" + std::to_string(cursor) +
                  ", " + std::to_string(entry->begin) + ") of the data buffer unused");
    cursor = entry->end;
    previous = entry;
  }
  if (cursor != bufferBytes)
    throw Error(origin + ": the data buffer has " + std::to_string(bufferBytes) +
                " bytes but the tensors cover only " + std::to_string(cursor) +
                " (trailing bytes or a wrong header length)");

  for (const auto &entry : entries) {
    torch::Tensor tensor = torch::empty(entry.shape, torch::TensorOptions().dtype(entry.dtype->type));
    if (entry.end > entry.begin)
      std::memcpy(tensor.data_ptr(), buffer + entry.begin, entry.end - entry.begin);
    file.tensors[entry.name] = std::move(tensor);
  }
  return file;
}

SafetensorsFile readSafetensors(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path + ": cannot open: " + systemError());
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad())
    throw Error(path + ": read failed: " + systemError());
  return parseSafetensors(contents.str(), path);
}

std::string serializeSafetensors(const TensorMap &tensors, const SafetensorsMetadata &metadata) {
  json header = json::object();
  if (!metadata.empty())
    header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto &[name, tensor] : tensors) {
    if (name == "__metadata__")
      throw Error("cannot write a tensor named '__metadata__' (reserved by safetensors)");
    if (!tensor.defined())
      throw Error("cannot write tensor '" + name + "': it is undefined");
    const DtypeInfo *dtype = dtypeByType(tensor.scalar_type());
    if (!dtype)
      throw Error("cannot write tensor '" + name + "' of dtype " +
                  std::string(c10::toString(tensor.scalar_type())) + " to safetensors");
    torch::Tensor cpu = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = cpu.numel() * cpu.element_size();
    header[name] = {{"dtype", dtype->name},
                    {"shape", cpu.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(cpu));
  }
  std::string text = header.dump();
  // Pad with spaces so the data buffer starts 8-byte aligned, as the
  // reference writer does.
  text.append((kHeaderLengthBytes - text.size() % kHeaderLengthBytes) % kHeaderLengthBytes, ' ');

  std::string out(kHeaderLengthBytes, '\0');
  const uint64_t headerBytes = text.size();
  std::memcpy(out.data(), &headerBytes, kHeaderLengthBytes);
  out += text;
  out.reserve(out.size() + offset);
  for (const auto &tensor : data)
    out.append(static_cast<const char *>(tensor.data_ptr()), tensor.numel() * tensor.element_size());
  return out;
}

void writeSafetensors(const std::string &path, const TensorMap &tensors,
                      const SafetensorsMetadata &metadata) {
  std::string bytes;
  try {
    bytes = serializeSafetensors(tensors, metadata);
  } catch (const Error &e) {
    throw Error(path + ": " + e.what());
  }
  // A missing folder is an error (a mistyped --out), not created.
  const size_t slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : path.substr(0, std::max<size_t>(slash, 1));
  struct stat info {};
  if (::stat(folder.c_str(), &info) != 0 || !S_ISDIR(info.st_mode))
    throw Error(path + ": cannot write: the folder " + folder + " does not exist");
  writeFileAtomically(path, bytes);
}

} // namespace fwp
