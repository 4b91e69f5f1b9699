// Config: typed reads, defaults, --set overrides, unknown-key detection.

#include "TestUtil.h"

#include "fwp/train/Config.h"

using fwp::train::Config;
using fwp::train::test::expectErrorContaining;

namespace {
const char *kText = R"(
name = "demo"
[model]
layers = 4
hidden = 256
dropout = 0.1
reference = true
[train]
lr = 3e-4
betas = [0.9, 0.995]
steps = 1000
)";
} // namespace

TEST(Config, TypedReadsAndDefaults) {
  Config c = Config::fromString(kText, "demo.toml");
  EXPECT_EQ(c.getString("name"), "demo");
  EXPECT_EQ(c.getInt("model.layers"), 4);
  EXPECT_DOUBLE_EQ(c.getDouble("model.dropout"), 0.1);
  EXPECT_DOUBLE_EQ(c.getDouble("model.hidden"), 256.0); // integers read as numbers
  EXPECT_TRUE(c.getBool("model.reference"));
  EXPECT_EQ(c.getDoubles("train.betas"), (std::vector<double>{0.9, 0.995}));
  EXPECT_EQ(c.getInt("train.batch", 64), 64);
  EXPECT_FALSE(c.has("train.batch"));
  expectErrorContaining<fwp::Error>([&] { c.getInt("model.dropout"); },
                                    "demo.toml: key 'model.dropout': expected an integer, found a number");
  expectErrorContaining<fwp::Error>([&] { c.getString("model.missing"); },
                                    "demo.toml: missing required key 'model.missing'");
}

TEST(Config, OverridesParseTomlOrBareStrings) {
  Config c = Config::fromString(kText, "demo.toml");
  c.set("train.steps=100");
  c.set("train.lr=1e-3");
  c.set("model.layer=rdn");          // bare string
  c.set("data.dir=data/x y");        // bare string with a space and a slash
  c.set("train.betas=[0.5, 0.6]");
  c.set("model.reference=false");
  EXPECT_EQ(c.getInt("train.steps"), 100);
  EXPECT_DOUBLE_EQ(c.getDouble("train.lr"), 1e-3);
  EXPECT_EQ(c.getString("model.layer"), "rdn");
  EXPECT_EQ(c.getString("data.dir"), "data/x y");
  EXPECT_EQ(c.getDoubles("train.betas"), (std::vector<double>{0.5, 0.6}));
  EXPECT_FALSE(c.getBool("model.reference"));
  expectErrorContaining<fwp::Error>([&] { c.set("no_equals"); }, "expected key=value");
  expectErrorContaining<fwp::Error>([&] { c.set("model=3"); }, "cannot replace a whole table");
  expectErrorContaining<fwp::Error>([&] { c.set("name.x=3"); }, "'name' is not a table");
  // The overridden document survives a round trip through TOML text.
  Config back = Config::fromString(c.toToml(), "roundtrip");
  EXPECT_EQ(back.getInt("train.steps"), 100);
  EXPECT_EQ(back.getString("data.dir"), "data/x y");
}

TEST(Config, UnusedKeysAreReported) {
  Config c = Config::fromString(kText, "demo.toml");
  c.set("train.stpes=5");
  c.getString("name");
  c.getInt("model.layers");
  c.getInt("model.hidden");
  c.getDouble("model.dropout");
  c.getBool("model.reference");
  c.getDouble("train.lr");
  c.getDoubles("train.betas");
  c.getInt("train.steps");
  expectErrorContaining<fwp::Error>([&] { c.checkUnused(); }, "train.stpes");
  c.markUsed("train");
  EXPECT_NO_THROW(c.checkUnused());
}

TEST(Config, SyntaxErrorsNameTheLine) {
  expectErrorContaining<fwp::Error>(
      [] { Config::fromString("a = 1\nb = [1,\n", "bad.toml"); }, "bad.toml:");
  expectErrorContaining<fwp::Error>([] { Config::fromFile("/nonexistent/x.toml"); },
                                    "cannot open the config file");
}
