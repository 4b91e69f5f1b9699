// Sequential ListOps: evaluator on hand-written trees, generator properties,
// file round trip and loader errors.

#include "TestUtil.h"

#include "fwp/train/ListOps.h"

#include <algorithm>
#include <map>

using namespace fwp::train;
using namespace fwp::train::listops;
using fwp::train::test::expectErrorContaining;
using fwp::train::test::words;

TEST(ListOps, EvaluatesHandWrittenTrees) {
  struct Case {
    const char *expression;
    int value, depth;
  };
  const Case cases[] = {
      {"[MAX 2 9 [MIN 4 7 ] 0 ]", 9, 2},
      {"[MIN 3 8 ]", 3, 1},
      {"[FIRST [MIN 3 1 ] 7 ]", 1, 2},
      {"[MED 1 5 2 8 ]", 3, 1},         // (2 + 5) / 2 rounded down
      {"[MED 9 0 4 ]", 4, 1},
      {"[SM 9 8 7 ]", 4, 1},            // 24 mod 10
      {"[MIN [MAX [FIRST 5 2 ] 1 ] 9 ]", 5, 3},
      {"[MAX [MIN 1 2 ] [MIN [MIN [MIN 6 7 ] 8 ] 9 ] ]", 6, 4},
  };
  for (const auto &c : cases) {
    SCOPED_TRACE(c.expression);
    Evaluation e = evaluate(words(c.expression));
    EXPECT_EQ(e.value, c.value);
    EXPECT_EQ(e.depth, c.depth);
  }
  Evaluation e = evaluate(words("[MAX 2 9 [MIN 4 7 1 ] 0 ]"));
  EXPECT_EQ(e.minArgs, 3);
  EXPECT_EQ(e.maxArgs, 4);
}

TEST(ListOps, EvaluatorRejectsMalformedExpressions) {
  struct Case {
    const char *expression;
    size_t token;
    const char *message;
  };
  const Case cases[] = {
      {"[MAX 1 2", 3, "still open"},
      {"]", 0, "without an open operator"},
      {"[FOO 1 ]", 0, "unknown operator"},
      {"[MAX ]", 1, "has no arguments"},
      {"[MAX 1 ] 2", 3, "after the end"},
      {"5", 0, "outside any operator"},
      {"[MAX 1 12 ]", 2, "unknown token"},
  };
  for (const auto &c : cases) {
    SCOPED_TRACE(c.expression);
    try {
      evaluate(words(c.expression));
      ADD_FAILURE() << "no error";
    } catch (const ExpressionError &e) {
      EXPECT_EQ(e.token, c.token);
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    }
  }
}

TEST(ListOps, GeneratorHitsTheExactDepth) {
  for (int depth : {3, 10, 15}) {
    GeneratorOptions options;
    options.depth = depth;
    Rng rng(mixSeed(3, depth));
    std::map<int, int> labels;
    for (int i = 0; i < 60; ++i) {
      auto tokens = generate(options, rng);
      Evaluation e = evaluate(tokens);
      ASSERT_EQ(e.depth, depth);
      ASSERT_GE(e.minArgs, 2);
      ASSERT_LE(e.maxArgs, 5);
      for (const auto &op : e.operatorsUsed)
        ASSERT_TRUE(op == "MIN" || op == "MAX" || op == "FIRST") << op;
      ++labels[e.value];
    }
    EXPECT_GE(labels.size(), 4u) << "labels should vary";
  }
}

TEST(ListOps, GeneratorHonoursOperatorsAndLength) {
  GeneratorOptions options;
  options.depth = 4;
  options.operators = {"MED", "SM"};
  options.maxArgs = 3;
  options.maxLength = 40;
  Rng rng(11);
  for (int i = 0; i < 50; ++i) {
    auto tokens = generate(options, rng);
    ASSERT_LE(tokens.size(), 40u);
    Evaluation e = evaluate(tokens);
    ASSERT_EQ(e.depth, 4);
    ASSERT_LE(e.maxArgs, 3);
    for (const auto &op : e.operatorsUsed)
      ASSERT_TRUE(op == "MED" || op == "SM") << op;
  }
  options.operators = {"POW"};
  expectErrorContaining<fwp::Error>([&] { generate(options, rng); }, "unknown operator 'POW'");
}

TEST(ListOps, GeneratorIsDeterministicBySeed) {
  GeneratorOptions options;
  Rng a(5), b(5), c(6);
  auto ta = generate(options, a);
  EXPECT_EQ(ta, generate(options, b));
  EXPECT_NE(ta, generate(options, c));
}

TEST(ListOps, EncodeReadsTheLabelAtTheLastToken) {
  Example example{7, words("[MAX 2 7 ]")};
  SequenceExample encoded = encode(example);
  ASSERT_EQ(encoded.input.size(), 4u);
  EXPECT_EQ(encoded.input[0], inputVocab().find("[MAX"));
  EXPECT_EQ(encoded.target, (std::vector<int32_t>{-1, -1, -1, 7}));
}

namespace {
const std::string kHeader = "# fwp-listops v1 depth=2 max_args=5 operators=MIN,MAX,FIRST "
                            "max_length=0 seed=1 split=train count=2\n";
} // namespace

TEST(ListOps, FileRoundTripAndLoaderErrors) {
  fwp::train::test::TempDir dir("listops_loader");
  const std::string good = "9\t[MAX 2 9 [MIN 4 7 ] 0 ]\n";
  fwp::train::test::writeText(dir / "train.txt", kHeader + good + "1\t[FIRST [MIN 3 1 ] 7 ]\n");
  FileContents contents = read(dir / "train.txt");
  ASSERT_EQ(contents.examples.size(), 2u);
  EXPECT_EQ(contents.examples[1].label, 1);
  write(dir / "copy.txt", contents.header, contents.examples);
  FileContents again = read(dir / "copy.txt");
  EXPECT_EQ(again.header.line() + "\n", kHeader);
  EXPECT_EQ(again.examples[0].tokens, contents.examples[0].tokens);

  struct Case {
    std::string text;
    std::string needle;
  };
  const Case cases[] = {
      {kHeader + good + "8\t[MAX 2 9 [MIN 4 7 ] 0 ]\n", "train.txt:3: label 8 but the expression evaluates to 9"},
      {kHeader + good + "x\t[MAX 2 9 ]\n", "train.txt:3: label 'x' is not a digit"},
      {kHeader + good + "9 [MAX 2 9 ]\n", "train.txt:3: expected exactly two tab-separated fields"},
      {kHeader + good + "9\t[MAX 2 9 ]\n", "train.txt:3: expression depth 1, the header says depth=2"},
      {kHeader + good + "3\t[MED 2 9 [MIN 4 7 ] 0 ]\n", "train.txt:3: operator '[MED' is not in the header's operators"},
      {kHeader + good + "9\t[MAX 2 9 [MIN 4 7 ] 0\n", "train.txt:3: end of expression: the expression ends with 1 operator(s) still open"},
      {kHeader + good + "9\t[MAX 2 9 [MIN 4 7 ] 0 ] ]\n", "train.txt:3: token 10 (']'): token after the end"},
      {kHeader + good + "9\t[MAX 2  9 [MIN 4 7 ] 0 ]\n", "train.txt:3: empty token at position 3"},
      {kHeader + good + "9\t[MAX 2 9 [MIN 4 7 1 1 1 1 ] 0 ]\n", "train.txt:3: an operator has 6 arguments"},
      {kHeader + good, "train.txt:1: header says count=2 but the file holds 1"},
      {"# fwp-listops v1 depth=two max_args=5 operators=MIN max_length=0 count=1\n" + good,
       "train.txt:1: header field 'depth' must be an integer"},
  };
  for (const auto &c : cases) {
    SCOPED_TRACE(c.needle);
    fwp::train::test::writeText(dir / "train.txt", c.text);
    expectErrorContaining<fwp::Error>([&] { read(dir / "train.txt"); }, c.needle);
  }
}
