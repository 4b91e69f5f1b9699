// Code execution: interpreter on hand-written programs, generator properties,
// file round trip and loader errors.

#include "TestUtil.h"

#include "fwp/train/CodeExec.h"

#include <map>
#include <set>

using namespace fwp::train;
using namespace fwp::train::codeexec;
using fwp::train::test::expectErrorContaining;
using fwp::train::test::words;

TEST(CodeExec, InterpreterOnHandWrittenProgram) {
  // x=3, print 3, x=4, (4>3) print 4, y=7, (7<5 false) no print, y=6, print 6.
  auto tokens = words("x = 3 ; print x ; x ++ ; if x > 3 : print x ; y = 7 ; "
                      "if y < 5 : print y ; y -- ; print y ;");
  Execution e = run(tokens, 3);
  EXPECT_EQ(e.statements, 8);
  std::vector<std::string> expected(tokens.size(), "_");
  expected[6] = "3";   // the ';' of the first print
  expected[17] = "4";  // if x > 3 : print x ;  -> ';' is token 17
  expected[35] = "6";  // the final print
  // The skipped print (if y < 5 : print y ;) at token 29 stays blank.
  ASSERT_EQ(tokens[17], ";");
  ASSERT_EQ(tokens[29], ";");
  ASSERT_EQ(tokens[35], ";");
  ASSERT_EQ(tokens.size(), 36u);
  EXPECT_EQ(e.targets, expected);
}

TEST(CodeExec, InterpreterNegativeValuesAndSkippedAssignment) {
  // A false condition must not execute its assignment; values go negative.
  auto tokens = words("z = 0 ; z -- ; z -- ; if z > 0 : z = 9 ; print z ; "
                      "if z < 0 : z = 5 ; print z ;");
  Execution e = run(tokens, 3);
  EXPECT_EQ(e.statements, 7);
  EXPECT_EQ(e.targets[21], "-2");
  EXPECT_EQ(e.targets[33], "5");
  int printed = 0;
  for (const auto &t : e.targets)
    printed += t != "_";
  EXPECT_EQ(printed, 2);
}

TEST(CodeExec, InterpreterSkippedBodyMayNameUnassignedVariable) {
  auto ok = words("x = 1 ; if x > 5 : print y ;");
  EXPECT_EQ(run(ok, 3).targets, std::vector<std::string>(ok.size(), "_"));
  auto bad = words("x = 1 ; if x < 5 : print y ;");
  try {
    run(bad, 3);
    ADD_FAILURE() << "expected a ProgramError";
  } catch (const ProgramError &e) {
    EXPECT_EQ(e.token, 10u);
    EXPECT_NE(std::string(e.what()).find("before it is assigned"), std::string::npos);
  }
}

TEST(CodeExec, InterpreterRejectsBadPrograms) {
  struct Case {
    const char *program;
    size_t token;
    const char *message;
  };
  const Case cases[] = {
      {"print y ;", 1, "before it is assigned"},
      {"x = 16 ; x ++ ;", 5, "leaves [-8, 16]"},
      {"x = -8 ; x -- ;", 5, "leaves [-8, 16]"},
      {"x = 3 print x ;", 3, "expected ';'"},
      {"x = 1 ; if x > 0 : if x > 0 : print x ;", 9, "one non-conditional"},
      {"a = 1 ;", 0, "not one of the first 3"},
      {"x = 1", 3, "ends inside a statement"},
      {"x = 17 ;", 2, "outside [-8, 16]"},
      {"x = 07 ;", 2, "expected an integer"},
      {"x * 2 ;", 1, "expected '=', '++' or '--'"},
      {"x = 1 ; if x = 1 : x ++ ;", 6, "expected '<' or '>'"},
      {"while x ;", 0, "expected a variable"},
  };
  for (const auto &c : cases) {
    SCOPED_TRACE(c.program);
    try {
      run(words(c.program), 3);
      ADD_FAILURE() << "no error";
    } catch (const ProgramError &e) {
      EXPECT_EQ(e.token, c.token);
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    }
  }
}

TEST(CodeExec, GeneratorKeepsTheGrammarAndRange) {
  for (int vars : {3, 5}) {
    GeneratorOptions options;
    options.vars = vars;
    options.statements = 100;
    std::map<std::string, int> firstTokens; // statement kinds, by first token
    std::set<std::string> varsSeen;
    int prints = 0, executedPrints = 0;
    for (uint64_t seed = 0; seed < 200; ++seed) {
      Rng rng(mixSeed(7, seed));
      auto tokens = generateProgram(options, rng);
      Execution e = run(tokens, vars); // throws on any grammar/range violation
      ASSERT_EQ(e.statements, 100);
      ASSERT_EQ(tokens[1], "=") << "the first statement must be an assignment";
      ASSERT_EQ(tokens[tokens.size() - 3], "print");
      ASSERT_NE(e.targets.back(), "_") << "the last print always executes";
      for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] == "print") {
          ++prints;
          executedPrints += e.targets[i + 2] != "_";
        }
        if (tokens[i] == "x" || tokens[i] == "y" || tokens[i] == "z" ||
            tokens[i] == "a" || tokens[i] == "b")
          varsSeen.insert(tokens[i]);
        if (i == 0 || tokens[i - 1] == ";")
          ++firstTokens[tokens[i] == "if" || tokens[i] == "print" ? tokens[i] : "var"];
        if (i >= 2 && tokens[i - 2] == "=" ) // the constant of an assignment
          ASSERT_TRUE(tokens[i] == ";");
      }
    }
    EXPECT_EQ(static_cast<int>(varsSeen.size()), vars);
    // 98 free statements per program drawn uniformly over 4 kinds: about a
    // quarter are conditionals (200 * 98 / 4 = 4900; 5 sigma ~ 300).
    EXPECT_NEAR(firstTokens["if"], 4900, 400);
    // Some prints sit under false conditions, most execute.
    EXPECT_GT(executedPrints, prints / 2);
    EXPECT_LT(executedPrints, prints);
  }
}

TEST(CodeExec, GeneratorIsDeterministicBySeed) {
  GeneratorOptions options;
  Rng a(42), b(42), c(43);
  auto pa = generateProgram(options, a);
  EXPECT_EQ(pa, generateProgram(options, b));
  EXPECT_NE(pa, generateProgram(options, c));
  // Pin the first statement for seed 42 so a change of the RNG plumbing
  // (e.g. a switch to std::uniform_int_distribution) is noticed.
  Rng d(42);
  auto again = generateProgram(options, d);
  EXPECT_EQ(std::vector<std::string>(again.begin(), again.begin() + 4),
            std::vector<std::string>(pa.begin(), pa.begin() + 4));
}

TEST(CodeExec, VocabulariesCoverAllValues) {
  EXPECT_EQ(outputVocab().size(), 1 + (kMaxValue - kMinValue + 1));
  EXPECT_EQ(outputVocab().find("_"), 0);
  EXPECT_EQ(outputVocab().find("-8"), 1);
  EXPECT_EQ(outputVocab().find("16"), 25);
  EXPECT_EQ(inputVocab().find("<pad>"), 0);
  for (const char *t : {"x", "b", "=", "++", "--", ";", "print", "if", "<", ">", ":", "-8", "16"})
    EXPECT_GT(inputVocab().find(t), 0) << t;
  Example example{words("x = 2 ; print x ;"), words("_ _ _ _ _ _ 2")};
  SequenceExample encoded = encode(example);
  ASSERT_EQ(encoded.input.size(), 7u);
  EXPECT_EQ(encoded.input[0], inputVocab().find("x"));
  EXPECT_EQ(encoded.target[6], outputVocab().find("2"));
  EXPECT_EQ(encoded.target[0], 0);
}

namespace {
const std::string kHeader = "# fwp-codeexec v1 vars=3 statements=2 max_constant=9 seed=1 "
                      "split=train count=2\n";
} // namespace

TEST(CodeExec, FileRoundTrip) {
  fwp::train::test::TempDir dir("codeexec_roundtrip");
  DataHeader header = DataHeader::parse(kHeader.substr(0, kHeader.size() - 1),
                                        "h", "fwp-codeexec v1");
  std::vector<Example> examples = {
      {words("x = 2 ; print x ;"), words("_ _ _ _ _ _ 2")},
      {words("y = 5 ; if y > 7 : print y ;"), words("_ _ _ _ _ _ _ _ _ _ _ _")}};
  write(dir / "train.txt", header, examples);
  FileContents back = read(dir / "train.txt");
  EXPECT_EQ(back.header.line(), header.line());
  ASSERT_EQ(back.examples.size(), 2u);
  EXPECT_EQ(back.examples[1].tokens, examples[1].tokens);
  EXPECT_EQ(back.examples[1].targets, examples[1].targets);
  EXPECT_FALSE(std::filesystem::exists(dir / "train.txt.tmp"));
}

TEST(CodeExec, LoaderNamesFileAndLine) {
  fwp::train::test::TempDir dir("codeexec_loader");
  const std::string good = "x = 2 ; print x ;\t_ _ _ _ _ _ 2\n";
  struct Case {
    std::string text;
    std::string needle;
  };
  const Case cases[] = {
      {kHeader + good + "x = 2 ; print x ;_ _ _ _ _ _ 2\n", "train.txt:3: expected exactly two tab"},
      {kHeader + good + "x = 2 ; print x ;\t_ _ _ _ _ 2\n", "train.txt:3: 7 tokens but 6 targets"},
      {kHeader + good + "x = 2 ; print x ;\t_ _ _ _ _ _ 3\n", "train.txt:3: target 7 is '3' but the program gives '2'"},
      {kHeader + good + "x = 2 ; print w ;\t_ _ _ _ _ _ 2\n", "train.txt:3: token 6 ('w'): expected a variable"},
      {kHeader + good + "x = 2 ;  print x ;\t_ _ _ _ _ _ _ 2\n", "train.txt:3: empty token at position 5"},
      {kHeader + "x = 2 ; print x ; x ++ ;\t_ _ _ _ _ _ 2 _ _ _\n" + good, "train.txt:2: 3 statements, the header says statements=2"},
      {kHeader + good, "train.txt:1: header says count=2 but the file holds 1"},
      {"# fwp-listops v1 depth=1\n" + good, "train.txt:1: expected a header line starting with '# fwp-codeexec v1'"},
      {"", "train.txt:1: empty file"},
  };
  for (const auto &c : cases) {
    SCOPED_TRACE(c.needle);
    fwp::train::test::writeText(dir / "train.txt", c.text);
    expectErrorContaining<fwp::Error>([&] { read(dir / "train.txt"); }, c.needle);
  }
  expectErrorContaining<fwp::Error>([&] { read(dir / "missing.txt"); },
                                    "missing.txt: cannot open");
}
