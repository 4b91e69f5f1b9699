//===- ArtifactContainerTest.cpp - Nothing runs before it is checked ------===//
//
// The .fwpk container (docs/design.md): SHA-256 against the standard's
// examples; real artifacts from fwp-compile (whose digests LLVM's SHA-256
// computed) load; and a bounded fuzz set of corrupt, truncated, swapped,
// future-version and foreign files, every one of which must be refused with
// an fwp::Error before any code is mapped (a shared library whose
// constructor writes a file must never get to write it). A sample of the
// same files through fwp-inspect and fwp-run must exit with code 2.
// docs/reliability.md gives the counts.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/ArtifactContainer.h"
#include "fwp/runtime/CompiledLayer.h"
#include "fwp/runtime/Safetensors.h"
#include "fwp/runtime/Sha256.h"

#include "ArtifactTestSupport.h"

#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using fwp::test::artifactPath;


std::string readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A scratch folder, removed at the end of the test.
class Scratch {
public:
  Scratch() {
    std::string pattern = (fs::temp_directory_path() / "fwp-container-XXXXXX").string();
    dir_ = mkdtemp(pattern.data()) ? pattern : throw std::runtime_error("mkdtemp failed");
  }
  // Not fs::remove_all: the LibTorch wheel's copy crashes on non-empty folders.
  ~Scratch() { std::system(("rm -rf '" + dir_ + "'").c_str()); }
  std::string write(const std::string &name, const std::string &bytes) const {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return path;
  }
  const std::string &dir() const { return dir_; }

private:
  std::string dir_;
};

/// The message of Artifact::load's fwp::Error ("" when it loaded).
std::string loadError(const std::string &path) {
  try {
    fwp::Artifact::load(path);
  } catch (const fwp::Error &error) {
    return error.what();
  }
  return "";
}

/// Runs a shell command; returns its exit code (-1 for a signal).
int exitCodeOf(const std::string &command) {
  int status = std::system((command + " > /dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// The container's sections, to rebuild it with chosen contents.
std::vector<fwp::ArtifactSection> sectionsOf(const fwp::ArtifactContainer &container) {
  return container.sections;
}

json manifestWithoutSections(const fwp::ArtifactContainer &container) {
  json manifest = container.manifest;
  manifest.erase("sections");
  return manifest;
}

TEST(Sha256, MatchesTheStandardsExamples) {
  // FIPS 180-4 examples (NIST's "SHA256.pdf" and the long message test).
  EXPECT_EQ(fwp::sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(fwp::sha256Hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(fwp::sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a', fed in uneven pieces (the incremental path).
  fwp::Sha256 hash;
  size_t fed = 0;
  for (size_t piece = 1; fed < 1000000; piece = piece * 7 % 1000 + 1) {
    size_t take = std::min(piece, 1000000 - fed);
    hash.update(std::string(take, 'a'));
    fed += take;
  }
  auto digest = hash.finish();
  char hex[65];
  for (int i = 0; i < 32; ++i)
    std::snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  EXPECT_EQ(std::string(hex), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(ArtifactContainer, CompiledArtifactsVerifyAndDescribeWhatTheyWereCompiledFor) {
  REQUIRE_ARTIFACT("delta_net");
  // fwp-compile computed these digests with LLVM's SHA-256; this runtime's
  // own implementation must agree on every section.
  fwp::ArtifactContainer container = fwp::readArtifactContainer(artifactPath("delta_net"));
  EXPECT_EQ(container.manifest["layer"], "delta_net");
  EXPECT_EQ(container.manifest["dims"]["d"], 16);
  EXPECT_EQ(container.manifest["dtype"], "f32");
  // fwp-compile's default --cpu=native,x86-64-v3: two images, each its section.
  const json &targets = container.manifest["targets"];
  ASSERT_EQ(targets.size(), 2u) << targets.dump();
  EXPECT_EQ(targets[1]["cpu"], "x86-64-v3");
  EXPECT_NE(targets[1]["features"].dump().find("\"avx2\""), std::string::npos);
  for (const json &target : targets) {
    const fwp::ArtifactSection *section = container.section(target["section"]);
    ASSERT_NE(section, nullptr) << target.dump();
    EXPECT_EQ(section->kind, "elf");
    EXPECT_EQ(target["section"], "cpu." + target["cpu"].get<std::string>());
  }
  for (const fwp::ArtifactSection &section : container.sections)
    EXPECT_EQ(fwp::sha256Hex(section.bytes), section.sha256) << section.name;
  EXPECT_NO_THROW(fwp::Artifact::load(artifactPath("delta_net")));
  EXPECT_EQ(fwp::describeArtifact(artifactPath("delta_net")), container.manifestText);
  // The same layer twice, and another layer, side by side.
  auto first = fwp::Artifact::load(artifactPath("delta_net"));
  auto second = fwp::Artifact::load(artifactPath("delta_net"));
  EXPECT_NE(first->forward().entry, nullptr);
  EXPECT_NE(first->forward().entry, second->forward().entry);
}

/// What a shell command writes to stderr (stdout discarded).
std::string stderrOf(const std::string &command) {
  std::string text;
  if (FILE *pipe = popen((command + " 2>&1 >/dev/null").c_str(), "r")) {
    char buffer[4096];
    while (size_t got = std::fread(buffer, 1, sizeof buffer, pipe))
      text.append(buffer, got);
    pclose(pipe);
  }
  return text;
}

TEST(ArtifactContainer, InspectListsEveryCpuImageAndRefusesAHostWithoutAny) {
  REQUIRE_ARTIFACT("delta_net");
  const std::string path = artifactPath("delta_net");
  const json targets = fwp::readArtifactContainer(path).manifest["targets"];
  ASSERT_EQ(targets.size(), 2u);
  const std::string chosen = fwp::Artifact::load(path)->cpuSection();
  std::string listing = stderrOf(std::string(FWP_INSPECT_PATH) + " " + path);
  for (const json &target : targets) {
    std::string line = "CPU image '" + target["section"].get<std::string>() + "': processor " +
                       target["cpu"].get<std::string>() + ", " +
                       std::to_string(target["features"].size()) + " features" +
                       (target["section"] == chosen ? " (the one this machine runs)\n" : "\n");
    EXPECT_NE(listing.find(line), std::string::npos) << line << "\n" << listing;
  }
  EXPECT_EQ(exitCodeOf("FWP_HIDE_CPU_FEATURES=avx2 " + std::string(FWP_INSPECT_PATH) + " " + path),
            2);
  EXPECT_NE(stderrOf("FWP_HIDE_CPU_FEATURES=avx2 " + std::string(FWP_INSPECT_PATH) + " " + path)
                .find("none of its CPU images runs on this machine"),
            std::string::npos);
}

/// Every file here must be refused; returns how many were tried.
class Refusals {
public:
  explicit Refusals(const Scratch &scratch) : scratch_(scratch) {}
  void expect(const std::string &name, const std::string &bytes, const std::string &why = "") {
    std::string path = scratch_.write("case.fwpk", bytes);
    std::string message = loadError(path);
    ++count_;
    EXPECT_FALSE(message.empty()) << name << ": the corrupt artifact loaded";
    if (!why.empty())
      EXPECT_NE(message.find(why), std::string::npos) << name << ": " << message;
    if (sample_.size() < 40 && count_ % 7 == 1)
      sample_.push_back(scratch_.write("sample-" + std::to_string(count_) + ".fwpk", bytes));
  }
  int count() const { return count_; }
  const std::vector<std::string> &sample() const { return sample_; }

private:
  const Scratch &scratch_;
  int count_ = 0;
  std::vector<std::string> sample_;
};

TEST(ArtifactFuzz, EveryCorruptionIsAClearErrorBeforeAnyCodeRuns) {
  REQUIRE_ARTIFACT("delta_net");
  Scratch scratch;
  Refusals refusals(scratch);
  const std::string bytes = readBytes(artifactPath("delta_net"));
  const fwp::ArtifactContainer container = fwp::readArtifactContainer(artifactPath("delta_net"));
  std::mt19937_64 random(13);

  // Bit flips: 50 in the header, in every section and in the manifest.
  std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> regions{
      {"header", {0, fwp::kArtifactHeaderBytes}}};
  for (const fwp::ArtifactSection &section : container.sections)
    regions.push_back({section.name, {section.offset, section.bytes.size()}});
  uint64_t manifestOffset = bytes.size() - container.manifestText.size();
  regions.push_back({"manifest", {manifestOffset, container.manifestText.size()}});
  for (const auto &[region, range] : regions) {
    for (int i = 0; i < 50; ++i) {
      std::string copy = bytes;
      uint64_t at = range.first + random() % range.second;
      copy[at] = static_cast<char>(copy[at] ^ (1 << (random() % 8)));
      refusals.expect("bit flip in " + region + " at byte " + std::to_string(at), copy);
    }
  }
  // Truncations (at every section boundary and at random) and extensions.
  for (const auto &[region, range] : regions) {
    refusals.expect("truncated at " + region, bytes.substr(0, range.first));
    refusals.expect("truncated inside " + region,
                    bytes.substr(0, range.first + random() % std::max<uint64_t>(range.second, 1)));
  }
  for (int i = 0; i < 20; ++i)
    refusals.expect("truncated at random", bytes.substr(0, random() % bytes.size()));
  refusals.expect("extended", bytes + std::string(64, '\0'));
  refusals.expect("extended by one byte", bytes + "x");

  // Foreign files.
  refusals.expect("empty file", "", "shorter than the header");
  refusals.expect("text file", std::string(200, 'x') + "\n", "no FWPK header");
  refusals.expect("the manifest alone", container.manifestText, "no FWPK header");
  const std::string firstImage = container.manifest["targets"][0]["section"];
  refusals.expect("the bare CPU image (a format-1 artifact)", container.section(firstImage)->bytes,
                  "an ELF file, not a .fwpk container");
  for (const char *libm :
       {"/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6"})
    if (fs::exists(libm)) {
      refusals.expect("libm", readBytes(libm), "an ELF file");
      break;
    }

  // Future and past versions.
  std::string future = bytes;
  future[8] = 4;
  refusals.expect("future version", future, "by a newer fwp-compile");
  std::string past = bytes;
  past[8] = 1;
  refusals.expect("past version", past, "is not supported");
  past[8] = 2;
  refusals.expect("format 2 header on a format 3 manifest", past, "not the header's version");

  // Swapped manifests: another size, layer and dtype. Naively (the
  // manifest's digests then name other bytes) and consistently (every digest
  // recomputed: only the manifest the CPU code carries can tell).
  for (const char *other : {"delta_net_d5", "delta_net_d128", "rdn", "delta_net_f64",
                            "delta_mlp", "linear_transformer_d8"}) {
    if (!fs::exists(artifactPath(other)))
      continue;
    fwp::ArtifactContainer donor = fwp::readArtifactContainer(artifactPath(other));
    refusals.expect(std::string("the manifest of ") + other + " with these sections",
                    fwp::buildArtifactContainer(manifestWithoutSections(donor),
                                                sectionsOf(container)),
                    "does not describe the CPU code");
    // The donor's manifest (with its own PTX sections) beside this code.
    std::vector<fwp::ArtifactSection> sections;
    for (const fwp::ArtifactSection &section : donor.sections)
      sections.push_back(section.kind == "elf" && container.section(section.name)
                             ? *container.section(section.name)
                             : section);
    refusals.expect(std::string("consistent swap with ") + other,
                    fwp::buildArtifactContainer(manifestWithoutSections(donor), sections),
                    "does not describe the CPU code");
  }

  // Well-formed containers around a CPU image with a constructor that would
  // write a file, and around one that needs such a library.
  std::string marker = scratch.dir() + "/constructor-ran";
  std::string source = scratch.write("evil.c", "#include <stdio.h>\n"
                                               "__attribute__((constructor)) static void run(void)"
                                               " { fclose(fopen(\"" + marker + "\", \"w\")); }\n"
                                               "void fwp_delta_net(void) {}\n"
                                               "void evil_helper(void) {}\n");
  std::string evil = scratch.dir() + "/libevil.so", needing = scratch.dir() + "/needing.so";
  // It calls into the library, so the linker records it as needed.
  std::string empty = scratch.write("empty.c", "void evil_helper(void);\n"
                                               "void fwp_delta_net_train(void) { evil_helper(); }\n");
  if (exitCodeOf("cc -shared -fPIC -o " + evil + " " + source) == 0 &&
      exitCodeOf("cc -shared -fPIC -nostartfiles -o " + needing + " " + empty + " " + evil) == 0) {
    // In place of each CPU image: the one this host would not run is
    // checked before any is mapped, too.
    for (const auto &[library, why] : {std::pair<std::string, std::string>{evil, "initializers"},
                                       {needing, "needs the library"}}) {
      for (const json &target : container.manifest["targets"]) {
        std::vector<fwp::ArtifactSection> sections = sectionsOf(container);
        for (fwp::ArtifactSection &section : sections)
          if (section.name == target["section"])
            section.bytes = readBytes(library);
        refusals.expect("constructor library " + library + " as " + target["section"].dump(),
                        fwp::buildArtifactContainer(manifestWithoutSections(container), sections),
                        why);
      }
      refusals.expect("raw constructor library " + library, readBytes(library), "an ELF file");
    }
  } else {
    ADD_FAILURE() << "cc could not build the constructor library (fwp-compile needs cc too)";
  }

  EXPECT_GE(refusals.count(), 300);
  EXPECT_FALSE(fs::exists(marker)) << "a constructor ran";
  std::cout << "[ fuzz     ] " << refusals.count() << " corrupt artifacts, all refused\n";

  // The tools: exit code 2, never a signal, for a sample of the same files.
  for (const std::string &path : refusals.sample()) {
    EXPECT_EQ(exitCodeOf(std::string(FWP_INSPECT_PATH) + " " + path), 2) << path;
  }
  std::string inputs = scratch.dir() + "/in.safetensors";
  fwp::writeSafetensors(inputs, {{"q", torch::zeros({1, 1, 2, 16})}});
  for (size_t i = 0; i < refusals.sample().size() && i < 5; ++i)
    EXPECT_EQ(exitCodeOf(std::string(FWP_RUN_PATH) + " --artifact " + refusals.sample()[i] +
                         " --inputs " + inputs + " --out " + scratch.dir() + "/out.safetensors"),
              2);
  EXPECT_FALSE(fs::exists(marker)) << "a constructor ran";
  EXPECT_FALSE(fs::exists(scratch.dir() + "/out.safetensors"));
}

/// Containers whose every digest is right but whose manifest and code were
/// edited alike: the manifest's own checks must still name the field.
TEST(ArtifactContainer, ManifestFieldsAreCheckedAfterTheDigests) {
  REQUIRE_ARTIFACT("delta_net");
  Scratch scratch;
  const fwp::ArtifactContainer container = fwp::readArtifactContainer(artifactPath("delta_net"));
  auto edited = [&](const std::string &from, const std::string &to, bool manifestToo) {
    std::vector<fwp::ArtifactSection> sections = sectionsOf(container);
    for (fwp::ArtifactSection &section : sections)
      if (section.kind == "elf") {
        size_t at = section.bytes.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        section.bytes.replace(at, from.size(), to);
      }
    std::string text = container.manifestText;
    if (manifestToo)
      text.replace(text.find(from), from.size(), to);
    return loadError(scratch.write(
        "edited.fwpk", fwp::buildArtifactContainer(
                           [&] {
                             json manifest = json::parse(text);
                             manifest.erase("sections");
                             return manifest;
                           }(),
                           sections)));
  };
  EXPECT_NE(edited("\"role\": \"tape\"", "\"role\": \"taps\"", true).find("not a known role"),
            std::string::npos);
  EXPECT_NE(edited("\"symbol\": \"fwp_delta_net_grad\"", "\"symbol\": \"fwp_delta_net_xxxx\"", true)
                .find("which the CPU code does not export"),
            std::string::npos);
  std::string stagesError = edited("\"stages\": 1", "\"stages\": 0", true);
  EXPECT_NE(stagesError.find("'kernels.cpu.backward.stages' must be a positive integer"),
            std::string::npos)
      << stagesError;
  EXPECT_NE(edited("\"dims\": {", "\"dims\"  {", false).find("not valid JSON"),
            std::string::npos);
}

} // namespace
