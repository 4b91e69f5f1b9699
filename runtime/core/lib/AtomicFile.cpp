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

void writeFileAtomically(const std::string &path, std::string_view bytes) {
  auto fail = [&](const std::string &what) {
    throw Error(path + ": cannot write the file (" + what + ": " + std::strerror(errno) + ")");
  };
  const std::string folder = folderOf(path);
  createFolders(folder);
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);

  // An unnamed file first: a kill before it is linked leaves nothing behind.
  std::string named;
  int fd = ::open(folder.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
  const bool unnamed = fd >= 0;
  if (!unnamed) {
    for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
      named = folder + "/." + base + ".tmp-" + randomSuffix();
      fd = ::open(named.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
      if (fd < 0 && errno != EEXIST)
        fail("create " + named);
    }
    if (fd < 0)
      fail("no free temporary name");
  }
  if (!writeAll(fd, bytes) || ::fsync(fd) != 0) {
    int saved = errno;
    ::close(fd);
    if (!named.empty())
      ::unlink(named.c_str());
    errno = saved;
    fail("write");
  }
  if (unnamed) {
    // Give it a temporary name (linkat cannot replace), then rename.
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    for (int attempt = 0; attempt < 16; ++attempt) {
      named = folder + "/." + base + ".tmp-" + randomSuffix();
      if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, named.c_str(), AT_SYMLINK_FOLLOW) == 0)
        break;
      if (errno != EEXIST) {
        int saved = errno;
        ::close(fd);
        errno = saved;
        fail("link the temporary file");
      }
      named.clear();
    }
    if (named.empty()) {
      ::close(fd);
      fail("no free temporary name");
    }
  }
  if (::close(fd) != 0) {
    int saved = errno;
    ::unlink(named.c_str());
    errno = saved;
    fail("close");
  }
  if (::rename(named.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(named.c_str());
    errno = saved;
    fail("rename into place");
  }
  int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
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
