#include "core/redact.hpp"

#include <random>

#include <gtest/gtest.h>

namespace cutover::core {
namespace {

TEST(Redactor, MasksEveryOccurrence) {
  Redactor r({"hunter2"});
  EXPECT_EQ(r.redact("password=hunter2 again hunter2"), "password=*** again ***");
  EXPECT_EQ(r.redact("hunter"), "hunter");
  EXPECT_EQ(r.redact(""), "");
}

TEST(Redactor, EmptyRedactorPassesTextThrough) {
  Redactor r(std::vector<std::string>{});
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.redact("nothing to hide"), "nothing to hide");
  Redactor only_empty({"", "\n"});
  EXPECT_TRUE(only_empty.empty());
}

TEST(Redactor, LongestPatternWinsAndMatchesDoNotOverlap) {
  Redactor r({"abc", "abcdef", "cd"});
  EXPECT_EQ(r.redact("xabcdefx"), "x***x");
  EXPECT_EQ(r.redact("abcd"), "***d");  // "abc" at 0 consumes the "c" of "cd"
  EXPECT_EQ(r.max_pattern_size(), 6u);
}

TEST(Redactor, MultiLineValuesAreMaskedLineByLine) {
  Redactor r({"-----BEGIN KEY-----\r\nMIIEsecretbody\n-----END KEY-----\n"});
  EXPECT_EQ(r.redact("MIIEsecretbody"), "***");
  EXPECT_EQ(r.redact("key: -----BEGIN KEY-----"), "key: ***");
  EXPECT_EQ(r.redact("MIIEsecret"), "MIIEsecret");
}

TEST(RedactingStream, ValueSplitAtEveryPositionIsStillMasked) {
  Redactor r({"s3cr3t-value", "tok"});
  const std::string text = "a s3cr3t-value b\nline two tok s3cr3t-value\ntrailing s3cr3t-value";
  const std::string expected = r.redact(text);
  ASSERT_EQ(expected, "a *** b\nline two *** ***\ntrailing ***");
  for (size_t a = 0; a <= text.size(); ++a) {
    for (size_t b = a; b <= text.size(); b += 3) {
      RedactingStream s(r);
      std::string out = s.feed(text.substr(0, a));
      out += s.feed(text.substr(a, b - a));
      out += s.feed(text.substr(b));
      out += s.finish();
      ASSERT_EQ(out, expected) << "split at " << a << " and " << b;
    }
  }
}

TEST(RedactingStream, RandomChunkingsAgreeWithWholeTextRedaction) {
  Redactor r({"pa55word", "word", "x\ny"});
  std::mt19937 rng(42);
  const std::string alphabet = "pa5word xy\n";
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const int len = static_cast<int>(rng() % 200);
    for (int i = 0; i < len; ++i) {
      if (rng() % 10 == 0) {
        text += "pa55word";
      } else {
        text += alphabet[rng() % alphabet.size()];
      }
    }
    RedactingStream s(r);
    std::string out;
    for (size_t pos = 0; pos < text.size();) {
      size_t n = std::min<size_t>(text.size() - pos, 1 + rng() % 9);
      out += s.feed(std::string_view(text).substr(pos, n));
      pos += n;
    }
    out += s.finish();
    ASSERT_EQ(out, r.redact(text)) << "text: " << text;
    ASSERT_EQ(out.find("pa55word"), std::string::npos);
  }
}

TEST(RedactingStream, HoldsBackOnlyWhatMightBeginAValue) {
  Redactor r({"0123456789"});
  RedactingStream s(r);
  // Output without newlines (a progress bar) is released as it comes, minus a possible prefix.
  std::string out = s.feed(std::string(100000, 'x'));
  EXPECT_EQ(out.size(), 100000u - 9);
  EXPECT_EQ(s.pending(), 9u);
  out = s.feed("x\n");
  EXPECT_EQ(out, std::string(10, 'x') + "\n");
  EXPECT_EQ(s.pending(), 0u);
  out = s.feed("012345678");
  EXPECT_EQ(out, "");
  out = s.feed("9 done");
  out += s.finish();
  EXPECT_EQ(out, "*** done");
}

TEST(RedactingStream, NoSecretsMeansNoBuffering) {
  Redactor r;
  RedactingStream s(r);
  EXPECT_EQ(s.feed("abc"), "abc");
  EXPECT_EQ(s.pending(), 0u);
  EXPECT_EQ(s.finish(), "");
}

}  // namespace
}  // namespace cutover::core
