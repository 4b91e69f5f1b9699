//===- AtomicFile.cpp - Atomic, durable file writes -----------------------===//
//
// Plain POSIX calls rather than std::filesystem: the LibTorch wheel exports
// its own, partly broken, copies of std::filesystem functions.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/AtomicFile.h"

#include "fwp/runtime/Layer.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

namespace fwp {
namespace {

std::string folderOf(const std::string &path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos)
    return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

/// mkdir -p.
void createFolders(const std::string &folder) {
  struct stat info {};
  if (folder.empty() || ::stat(folder.c_str(), &info) == 0)
    return;
  std::string parent = folderOf(folder);
  if (parent != folder)
    createFolders(parent);
  if (::mkdir(folder.c_str(), 0777) != 0 && errno != EEXIST)
    throw Error(folder + ": cannot create the folder: " + std::strerror(errno));
}

std::string randomSuffix() {
  unsigned char bytes[12];
  if (::getrandom(bytes, sizeof bytes, 0) != ssize_t(sizeof bytes))
    throw Error(std::string("no random bytes for a temporary name: ") + std::strerror(errno));
  static const char *digits = "0123456789abcdef";
  std::string out;
  for (unsigned char byte : bytes) {
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

bool writeAll(int fd, std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t wrote = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (wrote < 0 && errno == EINTR)
      continue;
    if (wrote <= 0)
      return false;
    done += size_t(wrote);
  }
  return true;
}

} // namespace

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  folder_ = folderOf(path_);
  createFolders(folder_);
  const size_t slash = path_.rfind('/');
  base_ = slash == std::string::npos ? path_ : path_.substr(slash + 1);
  // An unnamed file first: a kill before it is linked leaves nothing behind.
  fd_ = ::open(folder_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
  if (fd_ < 0) {
    for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
      named_ = folder_ + "/." + base_ + ".tmp-" + randomSuffix();
      fd_ = ::open(named_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
      if (fd_ < 0 && errno != EEXIST) {
        const int saved = errno;
        std::string what = "create " + named_;
        named_.clear();
        errno = saved;
        fail(what);
      }
    }
    if (fd_ < 0) {
      named_.clear();
      fail("no free temporary name");
    }
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0)
    ::close(fd_);
  if (!named_.empty())
    ::unlink(named_.c_str());
}

void AtomicFileWriter::fail(const std::string &what) {
  const int saved = errno;
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
  if (!named_.empty())
    ::unlink(named_.c_str());
  named_.clear();
  throw Error(path_ + ": cannot write the file (" + what + ": " + std::strerror(saved) + ")");
}

void AtomicFileWriter::write(std::string_view bytes) {
  if (fd_ < 0 || !writeAll(fd_, bytes))
    fail("write");
}

void AtomicFileWriter::commit() {
  if (fd_ < 0)
    fail("commit after the file was closed");
  if (::fsync(fd_) != 0)
    fail("write");
  if (named_.empty()) {
    // Give it a temporary name (linkat cannot replace), then rename.
    const std::string self = "/proc/self/fd/" + std::to_string(fd_);
    for (int attempt = 0; attempt < 16 && named_.empty(); ++attempt) {
      std::string name = folder_ + "/." + base_ + ".tmp-" + randomSuffix();
      if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, name.c_str(), AT_SYMLINK_FOLLOW) == 0)
        named_ = name;
      else if (errno != EEXIST)
        fail("link the temporary file");
    }
    if (named_.empty())
      fail("no free temporary name");
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0)
    fail("close");
  if (::rename(named_.c_str(), path_.c_str()) != 0)
    fail("rename into place");
  named_.clear();
  int dir = ::open(folder_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void writeFileAtomically(const std::string &path, std::string_view bytes) {
  AtomicFileWriter file(path);
  file.write(bytes);
  file.commit();
}

void writeFileAtomically(const std::string &path,
                         const std::function<void(std::ostream &)> &write) {
  std::ostringstream buffer(std::ios::binary);
  write(buffer);
  if (!buffer)
    throw Error(path + ": cannot write the file (formatting its contents failed)");
  writeFileAtomically(path, buffer.str());
}

} // namespace fwp
