//===- AtomicFile.h - Atomic, durable file writes ----------------*- C++ -*-===//
//
// The one implementation of "replace a file" in the runtime: checkpoints,
// safetensors, data files, configs and result JSON all go through it.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <string_view>

namespace fwp {

/// Replaces `path` with `bytes`, atomically and durably: the bytes go to an
/// unnamed file (O_TMPFILE; where the file system lacks it, a file with an
/// unpredictable name created exclusively) in `path`'s folder, which is
/// fsync'd, given a temporary name and renamed over `path`; then the folder
/// is fsync'd. Readers see the old file or the new one, never a mix; a kill
/// at any moment leaves at most an unnamed (freed) file, and after return
/// the file survives a power loss. Missing parent folders are created.
/// Throws fwp::Error naming `path`.
void writeFileAtomically(const std::string &path, std::string_view bytes);

/// The same, with the bytes that `write` produces (buffered in memory).
void writeFileAtomically(const std::string &path,
                         const std::function<void(std::ostream &)> &write);

} // namespace fwp
