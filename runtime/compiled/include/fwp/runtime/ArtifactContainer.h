//===- ArtifactContainer.h - The verified .fwpk container --------*- C++ -*-===//
//
// A .fwpk is a container (docs/design.md, "The artifact"): a 64-byte header,
// the sections (the CPU code as ELF images, one per processor, the PTX and cubin of every
// CUDA kernel) and a JSON manifest that lists every section with its size
// and SHA-256 digest. readArtifactContainer verifies all of it; it maps no
// code. checkCpuImage checks, from the bytes alone, that the CPU image is a
// shared library that runs nothing when it is loaded (no initializers, no
// foreign dependencies, no IFUNC resolvers, relocations inside the image)
// and that it carries the same manifest as the container.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fwp {

/// The container's version, which is also the manifest's "version".
inline constexpr int kArtifactFormatVersion = 3;
/// The oldest version read: 2, one CPU image (section "cpu", the manifest's
/// single "target").
inline constexpr int kOldestArtifactFormatVersion = 2;
/// The container starts with these 8 bytes (as PNG does: a non-ASCII byte,
/// the name, and CR LF SUB to catch text-mode transfers).
inline constexpr char kArtifactMagic[9] = "\x89" "FWPK\r\n\x1a";
inline constexpr uint64_t kArtifactHeaderBytes = 64;
/// Sections and the manifest start at multiples of this.
inline constexpr uint64_t kArtifactAlignment = 64;
/// Larger files are refused before they are read.
inline constexpr uint64_t kMaxArtifactBytes = uint64_t(1) << 30;
/// The CPU images' sections (kind elf) are named "cpu.<processor>"; the
/// manifest's "targets" list them in the order of preference. Format 2 had
/// one, named "cpu".
inline const std::string kCpuSectionPrefix = "cpu.";
inline const std::string kFormat2CpuSectionName = "cpu";

struct ArtifactSection {
  std::string name;
  std::string kind; ///< elf, ptx, cubin
  uint64_t offset = 0;
  std::string bytes;
  std::string sha256;
};

/// A container whose header, manifest digest, section layout and section
/// digests have been verified.
struct ArtifactContainer {
  std::string path;
  std::string manifestText;
  nlohmann::json manifest;
  std::vector<ArtifactSection> sections;
  /// The section called `name`, or nullptr.
  const ArtifactSection *section(const std::string &name) const;
};

/// Reads and verifies `path` (opened by that path, never searched for);
/// throws fwp::Error naming the file and the fault.
ArtifactContainer readArtifactContainer(const std::string &path);

/// The artifact's identity: the SHA-256 (hex) of its verified manifest,
/// which lists the digest of every section. Checkpoints record it.
std::string artifactDigest(const std::string &path);

/// Writes a container holding `manifest` (which gets the "sections" list)
/// and `sections` (name, kind, bytes) to bytes. The runtime's tests use it
/// to build well-formed containers around chosen contents.
std::string buildArtifactContainer(nlohmann::json manifest,
                                   const std::vector<ArtifactSection> &sections);

/// What checkCpuImage found in a CPU image.
struct CpuImageInfo {
  /// The manifest the image exports as `fwp_manifest` (parsed).
  nlohmann::json embeddedManifest;
  /// Defined function symbols of the dynamic symbol table.
  std::vector<std::string> functions;
};

/// Checks that `image` is an x86-64 ELF shared library that can be mapped
/// without running any of its code; throws fwp::Error naming `origin`.
CpuImageInfo checkCpuImage(const std::string &image, const std::string &origin);

} // namespace fwp
