//===- Sha256.h - SHA-256 (FIPS 180-4) ---------------------------*- C++ -*-===//
//
// The digest of every section of a .fwpk artifact and of every checkpoint
// payload. Written from the specification (FIPS 180-4, section 6.2); the
// tests check it against the standard's examples and against LLVM's own
// implementation (through the digests fwp-compile writes).
//
//===----------------------------------------------------------------------===//
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace fwp {

/// Incremental SHA-256.
class Sha256 {
public:
  Sha256();
  void update(std::string_view bytes);
  /// The 32-byte digest; the object must not be updated afterwards.
  std::array<uint8_t, 32> finish();

private:
  void block(const uint8_t *data);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  uint64_t length_ = 0; ///< bytes hashed so far
};

/// SHA-256 of `bytes` as 64 lowercase hexadecimal digits.
std::string sha256Hex(std::string_view bytes);

} // namespace fwp
