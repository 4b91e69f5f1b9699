//===- Container.cpp - The .fwpk container and safe output files ----------===//

#include "fwp/Target/Container.h"

#include "fwp/Target/Artifact.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fwp {

static constexpr uint64_t kHeaderBytes = 64;
static constexpr uint64_t kAlignment = 64;
static const char kMagic[9] = "\x89" "FWPK\r\n\x1a";

static uint64_t alignUp(uint64_t value) {
  return (value + kAlignment - 1) / kAlignment * kAlignment;
}

static void putLittle(std::string &bytes, size_t offset, uint64_t value,
                      unsigned width) {
  for (unsigned i = 0; i < width; ++i)
    bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

llvm::json::Array sectionEntries(llvm::ArrayRef<ContainerSection> sections) {
  llvm::json::Array entries;
  for (const ContainerSection &section : sections)
    entries.push_back(llvm::json::Object{
        {"name", section.name},
        {"kind", section.kind},
        {"size", static_cast<int64_t>(section.bytes.size())},
        {"sha256", llvm::toHex(llvm::SHA256::hash(llvm::arrayRefFromStringRef(
                                   section.bytes)),
                               /*LowerCase=*/true)}});
  return entries;
}

std::string buildContainer(llvm::json::Object manifest,
                           llvm::ArrayRef<ContainerSection> sections) {
  manifest["sections"] = sectionEntries(sections);
  std::string text;
  {
    llvm::raw_string_ostream os(text);
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(manifest)));
  }
  std::string out(kHeaderBytes, '\0');
  for (const ContainerSection &section : sections) {
    out.resize(alignUp(out.size()), '\0');
    out += section.bytes;
  }
  out.resize(alignUp(out.size()), '\0');
  std::memcpy(out.data(), kMagic, 8);
  putLittle(out, 8, kArtifactFormatVersion, 4);
  putLittle(out, 12, kHeaderBytes, 4);
  putLittle(out, 16, out.size(), 8);
  putLittle(out, 24, text.size(), 8);
  std::array<uint8_t, 32> digest =
      llvm::SHA256::hash(llvm::arrayRefFromStringRef(text));
  std::memcpy(out.data() + 32, digest.data(), digest.size());
  return out + text;
}

static bool writeAll(int fd, llvm::StringRef bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t wrote = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (wrote < 0 && errno == EINTR)
      continue;
    if (wrote <= 0)
      return false;
    done += static_cast<size_t>(wrote);
  }
  return true;
}

mlir::LogicalResult writeOutputFile(llvm::StringRef path, llvm::StringRef bytes,
                                    std::string &error) {
  auto fail = [&](const llvm::Twine &why) {
    error = ("cannot write '" + path + "': " + why).str();
    return mlir::failure();
  };
  if (path == "-") {
    llvm::outs() << bytes;
    llvm::outs().flush();
    return mlir::success();
  }
  std::string target = path.str();
  struct stat info {};
  if (::lstat(target.c_str(), &info) == 0) {
    if (S_ISLNK(info.st_mode))
      return fail("it is a symbolic link (fwp-compile never writes through "
                  "one; give the link's target)");
    if (S_ISDIR(info.st_mode))
      return fail("it is a folder");
    if (!S_ISREG(info.st_mode)) {
      // A device or FIFO: written in place, never replaced.
      int fd = ::open(target.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0)
        return fail(std::strerror(errno));
      bool ok = writeAll(fd, bytes);
      int savedErrno = errno;
      ::close(fd);
      return ok ? mlir::success() : fail(std::strerror(savedErrno));
    }
  } else if (errno != ENOENT) {
    return fail(std::strerror(errno));
  }

  // A new file, named unpredictably and created exclusively (O_EXCL never
  // follows a symlink), in the target's folder so that rename is atomic.
  llvm::SmallString<256> folder(llvm::sys::path::parent_path(target));
  if (folder.empty())
    folder = ".";
  uint8_t random[12];
  std::string temporary;
  int fd = -1;
  for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
    if (::getrandom(random, sizeof random, 0) != sizeof random)
      return fail("no random bytes for a temporary name");
    llvm::SmallString<256> name(folder);
    llvm::sys::path::append(
        name, "." + llvm::sys::path::filename(target) + ".tmp-" +
                  llvm::toHex(llvm::ArrayRef<uint8_t>(random), true));
    temporary = name.str().str();
    fd = ::open(temporary.c_str(),
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST)
      return fail(std::strerror(errno));
  }
  if (fd < 0)
    return fail("no free temporary name");
  bool ok = writeAll(fd, bytes) && ::fsync(fd) == 0;
  int savedErrno = errno;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(temporary.c_str(), target.c_str()) != 0) {
    savedErrno = ok ? errno : savedErrno;
    ::unlink(temporary.c_str());
    return fail(std::strerror(savedErrno));
  }
  int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return mlir::success();
}

} // namespace fwp
