//===- ArtifactContainer.cpp - The verified .fwpk container ---------------===//

#include "fwp/runtime/ArtifactContainer.h"

#include "fwp/runtime/Layer.h"
#include "fwp/runtime/Sha256.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <cerrno>
#include <cstring>
#include <set>

namespace fwp {

using nlohmann::json;

namespace {

uint64_t alignUp(uint64_t value) {
  return (value + kArtifactAlignment - 1) / kArtifactAlignment * kArtifactAlignment;
}

template <typename T> T readLittle(const std::string &bytes, size_t offset) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    value |= T(static_cast<uint8_t>(bytes[offset + i])) << (8 * i);
  return value;
}

template <typename T> void writeLittle(std::string &bytes, size_t offset, T value) {
  for (size_t i = 0; i < sizeof(T); ++i)
    bytes[offset + i] = static_cast<char>(uint8_t(value >> (8 * i)));
}

std::string rawDigest(const std::string &bytes) {
  Sha256 hash;
  hash.update(bytes);
  auto digest = hash.finish();
  return std::string(digest.begin(), digest.end());
}

bool isLowerHex(const std::string &text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

/// Reads a whole regular file of at most kMaxArtifactBytes.
std::string readRegularFile(const std::string &path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    throw Error(path + ": cannot open the artifact: " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0)
    throw Error(path + ": cannot read the artifact: " + std::strerror(errno));
  if (!S_ISREG(info.st_mode))
    throw Error(path + ": not a .fwpk artifact (not a regular file)");
  if (uint64_t(info.st_size) > kMaxArtifactBytes)
    throw Error(path + ": not a .fwpk artifact (" + std::to_string(info.st_size) +
                " bytes, more than the limit of " + std::to_string(kMaxArtifactBytes) + ")");
  std::string bytes(size_t(info.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t got = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      throw Error(path + ": cannot read the artifact: " + std::strerror(errno));
    if (got == 0)
      throw Error(path + ": the artifact shrank while it was read");
    done += size_t(got);
  }
  return bytes;
}

} // namespace

const ArtifactSection *ArtifactContainer::section(const std::string &name) const {
  for (const ArtifactSection &section : sections)
    if (section.name == name)
      return &section;
  return nullptr;
}

ArtifactContainer readArtifactContainer(const std::string &path) {
  ArtifactContainer container;
  container.path = path;
  const std::string bytes = readRegularFile(path);
  auto fail = [&](const std::string &why) { throw Error(path + ": " + why); };

  if (bytes.compare(0, 4, "\x7f" "ELF") == 0)
    fail("an ELF file, not a .fwpk container (artifacts of format version 1 were shared "
         "libraries, which run code when they are loaded; recompile the layer with this "
         "fwp-compile)");
  if (bytes.size() < kArtifactHeaderBytes)
    fail("not a .fwpk artifact (" + std::to_string(bytes.size()) +
         " bytes, shorter than the header: truncated?)");
  if (bytes.compare(0, 8, kArtifactMagic, 8) != 0)
    fail("not a .fwpk artifact (no FWPK header)");
  const uint32_t version = readLittle<uint32_t>(bytes, 8);
  if (version > uint32_t(kArtifactFormatVersion))
    fail("written in .fwpk format version " + std::to_string(version) +
         " by a newer fwp-compile; this runtime reads version " +
         std::to_string(kArtifactFormatVersion));
  if (version < uint32_t(kOldestArtifactFormatVersion))
    fail(".fwpk format version " + std::to_string(version) + " is not supported (this runtime "
         "reads versions " + std::to_string(kOldestArtifactFormatVersion) + " to " +
         std::to_string(kArtifactFormatVersion) + "; recompile the layer)");
  if (readLittle<uint32_t>(bytes, 12) != kArtifactHeaderBytes)
    fail("corrupt header (header size " + std::to_string(readLittle<uint32_t>(bytes, 12)) +
         ", expected " + std::to_string(kArtifactHeaderBytes) + ")");
  const uint64_t manifestOffset = readLittle<uint64_t>(bytes, 16);
  const uint64_t manifestSize = readLittle<uint64_t>(bytes, 24);
  const uint64_t size = bytes.size();
  if (manifestOffset < kArtifactHeaderBytes || manifestOffset % kArtifactAlignment != 0 ||
      manifestOffset > size)
    fail("corrupt header (manifest offset " + std::to_string(manifestOffset) + " in a file of " +
         std::to_string(size) + " bytes: truncated?)");
  if (manifestSize != size - manifestOffset)
    fail("the manifest (" + std::to_string(manifestSize) + " bytes at " +
         std::to_string(manifestOffset) + ") does not end the file of " + std::to_string(size) +
         " bytes: truncated or extended?");
  container.manifestText = bytes.substr(manifestOffset, manifestSize);
  if (rawDigest(container.manifestText) != bytes.substr(32, 32))
    fail("the manifest's SHA-256 digest does not match the header: the file is corrupt");

  // The manifest's integrity is established; now its schema.
  json manifest = json::parse(container.manifestText, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object())
    fail("the manifest is not a JSON object");
  auto field = [&](const std::string &name) -> const json & {
    auto it = manifest.find(name);
    if (it == manifest.end())
      fail("manifest field '" + name + "' is missing");
    return *it;
  };
  if (field("format") != "fwpk")
    fail("manifest field 'format' is not \"fwpk\"");
  const json &manifestVersion = field("version");
  if (!manifestVersion.is_number_integer() || manifestVersion.get<int64_t>() != version)
    fail("manifest field 'version' is " + manifestVersion.dump() +
         ", not the header's version " + std::to_string(version));
  const json &sections = field("sections");
  if (!sections.is_array())
    fail("manifest field 'sections' must be an array");

  std::set<std::string> names;
  uint64_t cursor = kArtifactHeaderBytes;
  for (size_t i = 0; i < sections.size(); ++i) {
    const json &entry = sections[i];
    std::string where = "manifest field 'sections[" + std::to_string(i) + "]";
    if (!entry.is_object())
      fail(where + "' must be an object");
    ArtifactSection section;
    for (const char *key : {"name", "kind", "sha256"}) {
      auto it = entry.find(key);
      if (it == entry.end() || !it->is_string())
        fail(where + "." + key + "' must be a string");
    }
    section.name = entry["name"].get<std::string>();
    section.kind = entry["kind"].get<std::string>();
    section.sha256 = entry["sha256"].get<std::string>();
    if (section.name.empty() || !names.insert(section.name).second)
      fail(where + ".name' is empty or names a section twice ('" + section.name + "')");
    if (section.kind != "elf" && section.kind != "ptx" && section.kind != "cubin")
      fail(where + ".kind' is '" + section.kind + "', not elf, ptx or cubin");
    const bool cpuName = version == 2 ? section.name == kFormat2CpuSectionName
                                      : section.name.rfind(kCpuSectionPrefix, 0) == 0;
    if ((section.kind == "elf") != cpuName)
      fail(where + "': the CPU images are the sections of kind elf, each named '" +
           (version == 2 ? kFormat2CpuSectionName : kCpuSectionPrefix + "<processor>") + "'");
    if (section.sha256.size() != 64 || !isLowerHex(section.sha256))
      fail(where + ".sha256' must be 64 lowercase hexadecimal digits");
    auto sizeField = entry.find("size");
    if (sizeField == entry.end() || !sizeField->is_number_unsigned())
      fail(where + ".size' must be a non-negative integer");
    uint64_t sectionSize = sizeField->get<uint64_t>();
    section.offset = alignUp(cursor);
    if (section.offset > manifestOffset || sectionSize > manifestOffset - section.offset)
      fail("section '" + section.name + "' (" + std::to_string(sectionSize) + " bytes at " +
           std::to_string(section.offset) + ") overlaps the manifest at " +
           std::to_string(manifestOffset) + ": the layout is corrupt");
    for (uint64_t pad = cursor; pad < section.offset; ++pad)
      if (bytes[pad] != 0)
        fail("non-zero padding at byte " + std::to_string(pad) + ": the file is corrupt");
    section.bytes = bytes.substr(section.offset, sectionSize);
    cursor = section.offset + sectionSize;
    if (sha256Hex(section.bytes) != section.sha256)
      fail("section '" + section.name + "' does not match its SHA-256 digest: the file is "
           "corrupt");
    container.sections.push_back(std::move(section));
  }
  if (alignUp(cursor) != manifestOffset)
    fail(std::to_string(manifestOffset - std::min(manifestOffset, cursor)) +
         " bytes between the last section and the manifest belong to no section: the layout "
         "is corrupt");
  for (uint64_t pad = cursor; pad < manifestOffset; ++pad)
    if (bytes[pad] != 0)
      fail("non-zero padding at byte " + std::to_string(pad) + ": the file is corrupt");
  if (std::none_of(container.sections.begin(), container.sections.end(),
                   [](const ArtifactSection &section) { return section.kind == "elf"; }))
    fail("the manifest lists no CPU code (no section of kind elf)");
  container.manifest = std::move(manifest);
  return container;
}

std::string artifactDigest(const std::string &path) {
  return sha256Hex(readArtifactContainer(path).manifestText);
}

std::string buildArtifactContainer(json manifest, const std::vector<ArtifactSection> &sections) {
  std::string body;
  json list = json::array();
  for (const ArtifactSection &section : sections) {
    body.resize(alignUp(kArtifactHeaderBytes + body.size()) - kArtifactHeaderBytes, '\0');
    body += section.bytes;
    list.push_back({{"name", section.name},
                    {"kind", section.kind},
                    {"size", section.bytes.size()},
                    {"sha256", sha256Hex(section.bytes)}});
  }
  manifest["sections"] = std::move(list);
  std::string text = manifest.dump(2);
  std::string out(kArtifactHeaderBytes, '\0');
  out += body;
  out.resize(alignUp(out.size()), '\0');
  std::memcpy(out.data(), kArtifactMagic, 8);
  writeLittle<uint32_t>(out, 8, kArtifactFormatVersion);
  writeLittle<uint32_t>(out, 12, kArtifactHeaderBytes);
  writeLittle<uint64_t>(out, 16, out.size());
  writeLittle<uint64_t>(out, 24, text.size());
  std::string digest = rawDigest(text);
  out.replace(32, 32, digest);
  return out + text;
}

//===----------------------------------------------------------------------===//
// The CPU image
//===----------------------------------------------------------------------===//

namespace {

/// Bounds-checked reads of an ELF64 little-endian image.
class ElfImage {
public:
  ElfImage(const std::string &bytes, std::string origin)
      : bytes_(bytes), origin_(std::move(origin)) {}

  [[noreturn]] void fail(const std::string &why) const {
    throw Error(origin_ + ": the CPU code " + why);
  }
  bool inFile(uint64_t offset, uint64_t size) const {
    return offset <= bytes_.size() && size <= bytes_.size() - offset;
  }
  template <typename T> T at(uint64_t offset, const char *what) const {
    if (!inFile(offset, sizeof(T)))
      fail(std::string("has its ") + what + " past the end of the image: truncated?");
    T value;
    std::memcpy(&value, bytes_.data() + offset, sizeof(T));
    return value;
  }
  /// The file offset of `size` bytes at virtual address `address`, which
  /// must lie in the file-backed part of one loadable segment.
  uint64_t offsetOf(uint64_t address, uint64_t size, const char *what) const {
    for (const Elf64_Phdr &segment : loads_)
      if (address >= segment.p_vaddr && address - segment.p_vaddr <= segment.p_filesz &&
          size <= segment.p_filesz - (address - segment.p_vaddr))
        return segment.p_offset + (address - segment.p_vaddr);
    fail(std::string("has its ") + what + " outside its loadable segments");
  }
  /// A NUL-terminated string at `offset` of the dynamic string table.
  std::string dynamicString(uint64_t offset) const {
    if (offset >= stringsSize_)
      fail("names a string outside its dynamic string table");
    const char *start = bytes_.data() + strings_ + offset;
    const void *end = std::memchr(start, 0, stringsSize_ - offset);
    if (!end)
      fail("has an unterminated dynamic string");
    return std::string(start, static_cast<const char *>(end));
  }

  CpuImageInfo check();

private:
  void checkDynamic(const Elf64_Phdr &dynamic);
  void checkRelocations(uint64_t address, uint64_t size, const char *what);
  void checkSections(CpuImageInfo &info);

  const std::string &bytes_;
  std::string origin_;
  std::vector<Elf64_Phdr> loads_;
  uint64_t strings_ = 0, stringsSize_ = 0;
  uint64_t symbolsAddress_ = 0, stringsAddress_ = 0;
};

CpuImageInfo ElfImage::check() {
  if (bytes_.compare(0, 4, "\x7f" "ELF") != 0)
    fail("is not an ELF image");
  const auto header = at<Elf64_Ehdr>(0, "ELF header");
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_ident[EI_DATA] != ELFDATA2LSB ||
      header.e_machine != EM_X86_64 || header.e_version != EV_CURRENT)
    fail("is not a 64-bit x86-64 ELF image");
  if (header.e_type != ET_DYN)
    fail("is not a shared library");
  if (header.e_phentsize != sizeof(Elf64_Phdr) || header.e_phnum == 0)
    fail("has no valid program headers");
  std::optional<Elf64_Phdr> dynamic;
  bool stackChecked = false;
  for (unsigned i = 0; i < header.e_phnum; ++i) {
    const auto segment =
        at<Elf64_Phdr>(header.e_phoff + uint64_t(i) * sizeof(Elf64_Phdr), "program headers");
    switch (segment.p_type) {
    case PT_LOAD:
      if (!inFile(segment.p_offset, segment.p_filesz) || segment.p_filesz > segment.p_memsz ||
          segment.p_memsz > kMaxArtifactBytes || segment.p_vaddr > kMaxArtifactBytes)
        fail("has a loadable segment (" + std::to_string(i) +
             ") outside the image or of an implausible size: truncated or corrupt?");
      loads_.push_back(segment);
      break;
    case PT_DYNAMIC:
      if (dynamic)
        fail("has two dynamic segments");
      dynamic = segment;
      break;
    case PT_GNU_STACK:
      if (segment.p_flags & PF_X)
        fail("asks for an executable stack");
      stackChecked = true;
      break;
    case PT_INTERP:
    case PT_TLS:
      fail("has a program interpreter or thread-local storage, which a layer never has");
    default:
      break;
    }
  }
  if (loads_.empty() || !dynamic)
    fail("has no loadable or no dynamic segment");
  if (!stackChecked)
    fail("has no PT_GNU_STACK header (the loader would make the stack executable)");
  checkDynamic(*dynamic);
  CpuImageInfo info;
  checkSections(info);
  return info;
}

void ElfImage::checkDynamic(const Elf64_Phdr &dynamic) {
  if (!inFile(dynamic.p_offset, dynamic.p_filesz))
    fail("has its dynamic segment past the end of the image: truncated?");
  std::vector<Elf64_Dyn> entries;
  for (uint64_t at = 0;; at += sizeof(Elf64_Dyn)) {
    if (at + sizeof(Elf64_Dyn) > dynamic.p_filesz)
      fail("has a dynamic table without its end marker");
    auto entry = this->at<Elf64_Dyn>(dynamic.p_offset + at, "dynamic table");
    if (entry.d_tag == DT_NULL)
      break;
    entries.push_back(entry);
  }
  uint64_t rela = 0, relaSize = 0, plt = 0, pltSize = 0;
  bool haveStrings = false, haveSymbols = false;
  std::vector<uint64_t> needed;
  for (const Elf64_Dyn &entry : entries) {
    const uint64_t value = entry.d_un.d_val;
    switch (entry.d_tag) {
    case DT_INIT:
    case DT_INIT_ARRAY:
    case DT_PREINIT_ARRAY:
    case DT_FINI:
    case DT_FINI_ARRAY:
      fail("has initializers or finalizers (code that would run when it is loaded or "
           "unloaded); fwp-compile never emits them");
    case DT_RPATH:
    case DT_RUNPATH:
    case DT_AUDIT:
    case DT_DEPAUDIT:
    case DT_AUXILIARY:
    case DT_FILTER:
      fail("asks the loader to search paths or load audit or filter libraries");
    case DT_TEXTREL:
    case DT_REL:
#ifdef DT_RELR
    case DT_RELR:
#endif
      fail("has text, REL or RELR relocations, which fwp-compile never emits");
    case DT_FLAGS:
      if (value & DF_TEXTREL)
        fail("has text relocations");
      break;
    case DT_NEEDED:
      needed.push_back(value);
      break;
    case DT_STRTAB:
      stringsAddress_ = value;
      haveStrings = true;
      break;
    case DT_STRSZ:
      stringsSize_ = value;
      break;
    case DT_SYMTAB:
      symbolsAddress_ = value;
      haveSymbols = true;
      break;
    case DT_RELA:
      rela = value;
      break;
    case DT_RELASZ:
      relaSize = value;
      break;
    case DT_RELAENT:
      if (value != sizeof(Elf64_Rela))
        fail("has relocation entries of an unexpected size");
      break;
    case DT_JMPREL:
      plt = value;
      break;
    case DT_PLTRELSZ:
      pltSize = value;
      break;
    case DT_PLTREL:
      if (value != DT_RELA)
        fail("has PLT relocations that are not RELA");
      break;
    default:
      break;
    }
  }
  if (!haveStrings || !haveSymbols)
    fail("has no dynamic symbol or string table");
  strings_ = offsetOf(stringsAddress_, stringsSize_, "dynamic string table");
  for (uint64_t name : needed) {
    std::string library = dynamicString(name);
    if (library != "libc.so.6" && library != "libm.so.6")
      fail("needs the library '" + library + "'; a layer may only need libc.so.6 and libm.so.6");
  }
  if (relaSize)
    checkRelocations(rela, relaSize, "relocation table");
  if (pltSize)
    checkRelocations(plt, pltSize, "PLT relocation table");
}

void ElfImage::checkRelocations(uint64_t address, uint64_t size, const char *what) {
  if (size % sizeof(Elf64_Rela) != 0)
    fail(std::string("has a ") + what + " of a size that is not a whole number of entries");
  const uint64_t offset = offsetOf(address, size, what);
  for (uint64_t at = 0; at < size; at += sizeof(Elf64_Rela)) {
    const auto relocation = this->at<Elf64_Rela>(offset + at, what);
    const uint32_t type = ELF64_R_TYPE(relocation.r_info);
    if (type != R_X86_64_NONE && type != R_X86_64_64 && type != R_X86_64_GLOB_DAT &&
        type != R_X86_64_JUMP_SLOT && type != R_X86_64_RELATIVE)
      fail("has a relocation of type " + std::to_string(type) +
           " (IFUNC, TLS or other kinds that a layer never needs)");
    // Every relocation writes 8 bytes inside a writable segment.
    bool inside = false;
    for (const Elf64_Phdr &segment : loads_)
      if ((segment.p_flags & PF_W) && relocation.r_offset >= segment.p_vaddr &&
          relocation.r_offset - segment.p_vaddr <= segment.p_memsz &&
          segment.p_memsz - (relocation.r_offset - segment.p_vaddr) >= 8)
        inside = true;
    if (!inside)
      fail("has a relocation at address " + std::to_string(relocation.r_offset) +
           " outside its writable segments");
  }
}

void ElfImage::checkSections(CpuImageInfo &info) {
  const auto header = at<Elf64_Ehdr>(0, "ELF header");
  if (header.e_shentsize != sizeof(Elf64_Shdr) || header.e_shnum == 0 ||
      header.e_shstrndx >= header.e_shnum)
    fail("has no valid section headers");
  std::vector<Elf64_Shdr> sections;
  for (unsigned i = 0; i < header.e_shnum; ++i)
    sections.push_back(
        at<Elf64_Shdr>(header.e_shoff + uint64_t(i) * sizeof(Elf64_Shdr), "section headers"));
  const Elf64_Shdr &names = sections[header.e_shstrndx];
  if (!inFile(names.sh_offset, names.sh_size))
    fail("has its section names past the end of the image: truncated?");
  auto sectionName = [&](uint32_t offset) {
    if (offset >= names.sh_size)
      fail("has a section name outside its name table");
    const char *start = bytes_.data() + names.sh_offset + offset;
    const void *end = std::memchr(start, 0, names.sh_size - offset);
    if (!end)
      fail("has an unterminated section name");
    return std::string(start, static_cast<const char *>(end));
  };
  const Elf64_Shdr *symbols = nullptr;
  for (const Elf64_Shdr &section : sections) {
    std::string name = sectionName(section.sh_name);
    bool constructors = section.sh_type == SHT_INIT_ARRAY || section.sh_type == SHT_FINI_ARRAY ||
                        section.sh_type == SHT_PREINIT_ARRAY || name == ".init_array" ||
                        name == ".fini_array" || name == ".preinit_array" || name == ".ctors" ||
                        name == ".dtors" || name == ".init" || name == ".fini";
    if (constructors && section.sh_size > 0)
      fail("has a " + name + " section (code that would run when it is loaded or unloaded)");
    if (section.sh_type == SHT_DYNSYM) {
      if (symbols)
        fail("has two dynamic symbol tables");
      symbols = &section;
    }
  }
  // The table the loader uses (DT_SYMTAB/DT_STRTAB) must be the one read here.
  if (!symbols || symbols->sh_entsize != sizeof(Elf64_Sym) ||
      symbols->sh_addr != symbolsAddress_ || symbols->sh_link >= sections.size() ||
      sections[symbols->sh_link].sh_addr != stringsAddress_ ||
      symbols->sh_size % sizeof(Elf64_Sym) != 0 ||
      offsetOf(symbolsAddress_, symbols->sh_size, "symbol table") != symbols->sh_offset)
    fail("has a dynamic symbol table that disagrees with its section headers");
  bool haveManifest = false;
  for (uint64_t at = 0; at < symbols->sh_size; at += sizeof(Elf64_Sym)) {
    const auto symbol = this->at<Elf64_Sym>(symbols->sh_offset + at, "symbol table");
    if (symbol.st_shndx == SHN_UNDEF)
      continue;
    const std::string name = dynamicString(symbol.st_name);
    if (ELF64_ST_TYPE(symbol.st_info) == STT_GNU_IFUNC ||
        ELF64_ST_BIND(symbol.st_info) == STB_GNU_UNIQUE)
      fail("defines '" + name + "' as an IFUNC or unique symbol (code the loader would run)");
    if (ELF64_ST_TYPE(symbol.st_info) == STT_FUNC)
      info.functions.push_back(name);
    if (name == "fwp_manifest") {
      uint64_t offset = offsetOf(symbol.st_value, symbol.st_size, "manifest");
      if (symbol.st_size == 0 || bytes_[offset + symbol.st_size - 1] != '\0')
        fail("has an unterminated fwp_manifest");
      info.embeddedManifest =
          json::parse(bytes_.data() + offset, bytes_.data() + offset + symbol.st_size - 1,
                      nullptr, /*allow_exceptions=*/false);
      if (info.embeddedManifest.is_discarded())
        fail("exports an fwp_manifest that is not valid JSON");
      haveManifest = true;
    }
  }
  if (!haveManifest)
    fail("exports no fwp_manifest (the manifest it was compiled with)");
}

} // namespace

CpuImageInfo checkCpuImage(const std::string &image, const std::string &origin) {
  return ElfImage(image, origin).check();
}

} // namespace fwp
