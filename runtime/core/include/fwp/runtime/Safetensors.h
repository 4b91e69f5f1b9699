//===- Safetensors.h - Reading and writing .safetensors files -*- C++ -*-===//
//
// The format (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON
//   {"__metadata__": {"k": "v"}, "<name>": {"dtype": "F32", "shape": [2, 3],
//    "data_offsets": [begin, end]}, ...}
// then the byte buffer; offsets are relative to the buffer, which the tensors
// must cover exactly (no overlap, no gap). Data is little-endian, row-major.
// Dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/Layer.h"

#include <map>
#include <string>

namespace fwp {

using SafetensorsMetadata = std::map<std::string, std::string>;

struct SafetensorsFile {
  TensorMap tensors;             ///< CPU tensors owning their memory
  SafetensorsMetadata metadata;  ///< the optional "__metadata__" entry
};

/// Parses the bytes of a safetensors file, validating every field; `origin`
/// (usually the path) starts every error message, which also names the
/// offending field or tensor. Throws fwp::Error.
SafetensorsFile parseSafetensors(const std::string &bytes, const std::string &origin);

/// Reads and parses the file at `path`. Throws fwp::Error.
SafetensorsFile readSafetensors(const std::string &path);

/// The bytes of a safetensors file holding `tensors` (any device; copied to
/// the CPU) in name order. Throws fwp::Error for an unsupported dtype.
std::string serializeSafetensors(const TensorMap &tensors,
                                 const SafetensorsMetadata &metadata = {});

/// Writes the file atomically: to a temporary file in the same folder, then
/// renamed over `path`; nothing is left behind on failure. Throws fwp::Error.
void writeSafetensors(const std::string &path, const TensorMap &tensors,
                      const SafetensorsMetadata &metadata = {});

} // namespace fwp
