//===- Container.h - The .fwpk container and safe output files --*- C++ -*-===//
//
// fwp-compile's half of the .fwpk format (docs/design.md, "The artifact"):
// a 64-byte header, the sections (CPU code, PTX, cubins) and the manifest,
// which lists every section with its SHA-256 digest. The runtime's reader
// (runtime/compiled, ArtifactContainer.h) verifies the same layout.
//
//===----------------------------------------------------------------------===//
#ifndef FWP_TARGET_CONTAINER_H
#define FWP_TARGET_CONTAINER_H

#include "mlir/Support/LogicalResult.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/JSON.h"

#include <string>

namespace fwp {

/// The CPU images' sections (kind "elf") are named "cpu.<processor>".
inline constexpr llvm::StringLiteral kCpuSectionPrefix = "cpu.";

/// One section of a container: its name (for PTX and cubins, the
/// manifest's ptx_symbol / cubin_symbol), kind (elf, ptx, cubin) and bytes.
struct ContainerSection {
  std::string name;
  std::string kind;
  std::string bytes;
};

/// The manifest's "sections" entries of `sections`: name, kind, size and
/// SHA-256 digest (hexadecimal), in order.
llvm::json::Array sectionEntries(llvm::ArrayRef<ContainerSection> sections);

/// The container's bytes: `manifest` gets "sections" (all of `sections`, in
/// order; their bytes are laid out in that order).
std::string buildContainer(llvm::json::Object manifest,
                           llvm::ArrayRef<ContainerSection> sections);

/// Writes `bytes` to `path` without ever following a symlink or replacing a
/// non-regular file: "-" is stdout; a symlink is refused; a device or FIFO
/// is written in place; otherwise the bytes go to a new file with an
/// unpredictable name, created exclusively in `path`'s folder, which is
/// fsync'd and renamed over `path` (the folder is fsync'd too).
mlir::LogicalResult writeOutputFile(llvm::StringRef path, llvm::StringRef bytes,
                                    std::string &error);

} // namespace fwp

#endif // FWP_TARGET_CONTAINER_H
