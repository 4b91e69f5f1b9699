//===- AtomicFile.h - Atomic, durable file writes ----------------*- C++ -*-===//
//
// The one implementation of "replace a file" in the runtime: checkpoints,
// safetensors, data files, configs, result JSON and the corpus cache all go
// through it.
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

/// writeFileAtomically for a file too large to hold in memory (a corpus
/// cache): the caller writes, patches and reads back through fd(), an
/// unnamed temporary file in `path`'s folder opened for reading and writing;
/// commit() then fsyncs it and renames it over `path` and fsyncs the folder,
/// exactly as writeFileAtomically does. Destroyed without commit() (an error,
/// a kill), it leaves `path` as it was and no file behind.
class AtomicFileWriter {
public:
  /// Creates missing parent folders. Throws fwp::Error naming `path`.
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter &) = delete;
  AtomicFileWriter &operator=(const AtomicFileWriter &) = delete;

  /// The temporary file's descriptor (for write, pwrite, pread); -1 after commit().
  int fd() const { return fd_; }
  /// Appends all of `bytes` at the file offset; throws fwp::Error on failure.
  void write(std::string_view bytes);
  /// Makes the file `path`, atomically and durably; throws fwp::Error.
  void commit();

private:
  [[noreturn]] void fail(const std::string &what);

  std::string path_, folder_, base_;
  std::string named_; ///< the temporary name, where the file has one
  int fd_ = -1;
};

} // namespace fwp
