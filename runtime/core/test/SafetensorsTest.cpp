//===- SafetensorsTest.cpp - The safetensors reader and writer ------------===//
#include "TestSupport.h"

#include "fwp/runtime/Safetensors.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace fwp::test {
namespace {

namespace fs = std::filesystem;

/// A fresh, empty folder for the running test.
fs::path freshFolder() {
  const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path folder = fs::path(FWP_TEST_TMPDIR) / "safetensors" / info->name();
  removeTree(folder);
  fs::create_directories(folder);
  return folder;
}

std::string littleEndian64(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

/// A file built by hand: length prefix, header text, data bytes.
std::string rawFile(const std::string &header, const std::string &data) {
  return littleEndian64(header.size()) + header + data;
}

std::string floatBytes(const std::vector<float> &values) {
  std::string out(values.size() * sizeof(float), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

std::vector<std::string> filesIn(const fs::path &folder) {
  std::vector<std::string> names;
  for (const auto &entry : fs::directory_iterator(folder))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Safetensors, ParsesAHandWrittenFile) {
  // Two F32 tensors in reverse offset order, metadata, and header padding.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}    )";
  const SafetensorsFile file =
      parseSafetensors(rawFile(header, floatBytes({1.0f, -2.5f, 7.0f})), "hand.safetensors");
  ASSERT_EQ(file.tensors.size(), 2u);
  EXPECT_EQ(file.metadata, (SafetensorsMetadata{{"format", "pt"}}));
  const torch::Tensor a = file.tensors.at("a"), b = file.tensors.at("b");
  EXPECT_EQ(a.scalar_type(), torch::kFloat);
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({2}));
  EXPECT_EQ(a[0].item<float>(), 1.0f);
  EXPECT_EQ(a[1].item<float>(), -2.5f);
  EXPECT_EQ(b[0].item<float>(), 7.0f);
}

TEST(Safetensors, WritesTheDocumentedLayout) {
  const TensorMap tensors{{"x", torch::tensor({1.5, -3.0}, torch::kDouble)},
                          {"n", torch::tensor({int64_t{7}}, torch::kLong).reshape({1, 1})}};
  const std::string bytes = serializeSafetensors(tensors, {{"layer", "rdn"}});
  uint64_t headerBytes = 0;
  std::memcpy(&headerBytes, bytes.data(), 8);
  EXPECT_EQ(headerBytes % 8, 0u) << "the data buffer starts 8-byte aligned";
  ASSERT_EQ(bytes.size(), 8 + headerBytes + 8 + 16);
  const auto header = nlohmann::json::parse(bytes.substr(8, headerBytes));
  EXPECT_EQ(header["__metadata__"]["layer"], "rdn");
  EXPECT_EQ(header["n"]["dtype"], "I64");
  EXPECT_EQ(header["n"]["shape"], nlohmann::json({1, 1}));
  EXPECT_EQ(header["x"]["dtype"], "F64");
  const auto n = header["n"]["data_offsets"], x = header["x"]["data_offsets"];
  EXPECT_EQ(n, nlohmann::json({0, 8}));
  EXPECT_EQ(x, nlohmann::json({8, 24}));
  double second = 0;
  std::memcpy(&second, bytes.data() + 8 + headerBytes + 8 + 8, 8);
  EXPECT_EQ(second, -3.0);
}

TEST(Safetensors, RoundTripsEveryDtypeAndShape) {
  const fs::path folder = freshFolder();
  torch::manual_seed(1);
  TensorMap tensors{
      {"f64", torch::randn({2, 3, 4}, torch::kDouble)},
      {"f32", torch::randn({5}, torch::kFloat)},
      {"f16", torch::randn({3, 2}).to(torch::kHalf)},
      {"bf16", torch::randn({4}).to(torch::kBFloat16)},
      {"i64", torch::arange(-3, 3, torch::kLong).reshape({2, 3})},
      {"i32", torch::arange(0, 4, torch::kInt)},
      {"i16", torch::arange(-2, 2, torch::kShort)},
      {"i8", torch::arange(-4, 4, torch::kChar)},
      {"u8", torch::arange(250, 256, torch::kInt).to(torch::kByte)},
      {"scalar", torch::tensor(3.25, torch::kDouble)},
      {"empty", torch::zeros({0, 3}, torch::kFloat)},
      {"strided", torch::randn({4, 3}, torch::kDouble).t()}, // not contiguous
  };
  const fs::path path = folder / "all.safetensors";
  writeSafetensors(path.string(), tensors, {{"note", "round trip"}});
  EXPECT_EQ(filesIn(folder), std::vector<std::string>{"all.safetensors"}) << "no temp file left";
  const SafetensorsFile back = readSafetensors(path.string());
  EXPECT_EQ(back.metadata, (SafetensorsMetadata{{"note", "round trip"}}));
  ASSERT_EQ(back.tensors.size(), tensors.size());
  for (const auto &[name, tensor] : tensors) {
    SCOPED_TRACE(name);
    const torch::Tensor &read = back.tensors.at(name);
    EXPECT_EQ(read.scalar_type(), tensor.scalar_type());
    EXPECT_EQ(read.sizes(), tensor.sizes());
    EXPECT_TRUE(torch::equal(read, tensor));
  }
  // Rewriting replaces the file atomically, again leaving nothing else.
  writeSafetensors(path.string(), {{"only", torch::ones({2})}});
  EXPECT_EQ(readSafetensors(path.string()).tensors.size(), 1u);
  EXPECT_EQ(filesIn(folder), std::vector<std::string>{"all.safetensors"});
}

/// Parses `bytes` and expects an fwp::Error mentioning the origin and `needles`.
::testing::AssertionResult rejects(const std::string &bytes, std::vector<std::string> needles) {
  needles.push_back("bad.safetensors");
  return throwsErrorMentioning([&] { parseSafetensors(bytes, "bad.safetensors"); }, needles);
}

const std::string kData8 = floatBytes({1.0f, 2.0f});

TEST(SafetensorsRejects, Truncated) {
  EXPECT_TRUE(rejects("abc", {"truncated"}));
  EXPECT_TRUE(rejects(littleEndian64(100) + "{}", {"truncated", "header length 100"}));
  const std::string good = serializeSafetensors({{"w", torch::ones({4, 4})}});
  EXPECT_NO_THROW(parseSafetensors(good, "good"));
  EXPECT_TRUE(rejects(good.substr(0, good.size() - 3), {"'w'", "data_offsets", "out of range"}));
  EXPECT_TRUE(rejects(littleEndian64(uint64_t{1} << 40), {"header length"}));
}

TEST(SafetensorsRejects, BadJson) {
  EXPECT_TRUE(rejects(rawFile(R"({"a": {"dtype": "F32",)", kData8), {"not valid JSON"}));
  EXPECT_TRUE(rejects(rawFile("[1, 2]", ""), {"JSON object"}));
}

TEST(SafetensorsRejects, BadFields) {
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", kData8),
                      {"'a'", "dtype", "F33"}));
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", kData8),
                      {"'a'", "missing field 'shape'"}));
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kData8),
                      {"'a'", "shape", "non-negative"}));
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", kData8),
                      {"'a'", "data_offsets"}));
  EXPECT_TRUE(rejects(
      rawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", kData8),
      {"'a'", "unknown field 'extra'"}));
  EXPECT_TRUE(rejects(rawFile(R"({"__metadata__":{"k":1}})", ""), {"__metadata__.k"}));
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                              kData8),
                      {"'a' twice"}));
}

TEST(SafetensorsRejects, OffsetsOutOfRange) {
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", kData8),
                      {"'a'", "data_offsets", "out of range", "8 bytes"}));
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", kData8),
                      {"'a'", "begin > end"}));
}

TEST(SafetensorsRejects, OverlappingOrGappedOffsets) {
  const std::string twelve = floatBytes({1, 2, 3});
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              twelve),
                      {"'b'", "overlaps tensor 'a'"}));
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                              twelve),
                      {"'b'", "unused"}));
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", twelve),
                      {"cover only 8"}));
}

TEST(SafetensorsRejects, ShapeDisagreesWithByteLength) {
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", kData8),
                      {"'a'", "shape", "needs 12 bytes", "spans 8"}));
  EXPECT_TRUE(rejects(rawFile(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", kData8),
                      {"'a'", "needs 16 bytes"}));
  // A shape whose product overflows 64 bits must not wrap around to 8 bytes.
  EXPECT_TRUE(rejects(
      rawFile(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,8]}})", kData8),
      {"'a'", "shape"}));
}

TEST(SafetensorsFiles, MissingFileAndUnwritableFolder) {
  const fs::path folder = freshFolder();
  EXPECT_TRUE(throwsErrorMentioning([&] { readSafetensors((folder / "absent.safetensors").string()); },
                                    {"absent.safetensors", "cannot open"}));
  const fs::path nowhere = folder / "no-such-dir" / "out.safetensors";
  EXPECT_TRUE(throwsErrorMentioning([&] { writeSafetensors(nowhere.string(), {{"a", torch::ones({1})}}); },
                                    {"out.safetensors"}));
  EXPECT_TRUE(filesIn(folder).empty());
}

TEST(SafetensorsFiles, FailedWriteLeavesTheOldFile) {
  const fs::path folder = freshFolder();
  const fs::path path = folder / "keep.safetensors";
  writeSafetensors(path.string(), {{"a", torch::ones({2})}});
  const TensorMap unsupported{{"z", torch::ones({2}, torch::kComplexFloat)}};
  EXPECT_TRUE(throwsErrorMentioning([&] { writeSafetensors(path.string(), unsupported); },
                                    {"keep.safetensors", "'z'"}));
  EXPECT_EQ(filesIn(folder), std::vector<std::string>{"keep.safetensors"});
  EXPECT_TRUE(torch::equal(readSafetensors(path.string()).tensors.at("a"), torch::ones({2})));
}

} // namespace
} // namespace fwp::test
