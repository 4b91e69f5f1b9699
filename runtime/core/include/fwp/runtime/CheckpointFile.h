//===- CheckpointFile.h - The one checkpoint file format ---------*- C++ -*-===//
//
// Every trainer (fwp-train, fwp-lm, fwp-atari) writes its checkpoints in
// this format (docs/reliability.md):
//
//   bytes 0-7    magic "FWPCKPT\n"
//   bytes 8-11   format version (1), little-endian
//   bytes 12-15  size of the header (JSON), little-endian
//   bytes 16-23  size of the payload, little-endian
//   bytes 24-55  SHA-256 of header and payload together
//   then         the header: {"trainer", "code_version", "config",
//                "artifact_sha256", "step", ...}
//   then         the payload: the trainer's torch archive (model, optimizer,
//                RNG and counters)
//
// The digest is verified before anything is read, so a damaged checkpoint
// is an error, never a silently wrong resume.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace fwp {

inline constexpr int kCheckpointFormatVersion = 1;

/// What a checkpoint records about the run that wrote it.
struct CheckpointHeader {
  std::string trainer;     ///< fwp-train, fwp-lm, fwp-atari
  std::string codeVersion; ///< fwpCodeVersion() of the writer
  std::string config;      ///< the run's full configuration (TOML)
  /// SHA-256 of the manifests of the compiled layers the model uses
  /// (sorted, comma-separated), or "" for reference layers.
  std::string artifactDigest;
  int64_t step = 0;
  nlohmann::json extra = nlohmann::json::object(); ///< trainer-specific fields
};

struct CheckpointFile {
  CheckpointHeader header;
  std::string payload;
};

/// Writes a checkpoint atomically and durably (writeFileAtomically).
void writeCheckpointFile(const std::string &path, const CheckpointHeader &header,
                         std::string_view payload);

/// Reads and verifies a checkpoint (magic, version, sizes, digest); throws
/// fwp::Error naming `path` and the fault.
CheckpointFile readCheckpointFile(const std::string &path);

/// The source version this runtime was built from (git describe at
/// configure time, or "unknown").
std::string fwpCodeVersion();

} // namespace fwp
