// Redaction of secret values in captured output (DESIGN.md invariant 8): every occurrence of a
// secret's value in a log line becomes "***". Used by the pipeline for stage logs and by the
// runtime's log copier for task logs.
//
// Patterns: each secret value is split at line breaks ('\n', and a '\r' before it); every non-empty
// line of it is a pattern on its own. So a multi-line value (a PEM key) printed in full is masked
// line by line, and no pattern ever contains '\n', which is what lets RedactingStream release
// everything up to a newline at once. At each position the longest pattern that matches wins;
// matches do not overlap. Masking more than the value (a line of a key that also occurs elsewhere)
// is the accepted price.
//
// RedactingStream masks a byte stream that arrives in arbitrary pieces (pipe reads): a value split
// across two reads is still masked. It holds back at most (longest pattern - 1) bytes after the
// last newline it has seen, so memory stays bounded whatever the output.
//
// Thread-safety: a Redactor is immutable after construction and may be shared; a RedactingStream
// belongs to one thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace cutover::core {

inline constexpr std::string_view kRedactedMark = "***";

class Redactor {
 public:
  Redactor() = default;
  explicit Redactor(const std::vector<std::string>& secret_values);

  bool empty() const { return patterns_.empty(); }
  // The longest pattern's length (0 when empty).
  size_t max_pattern_size() const { return max_size_; }
  // text with every occurrence of a pattern replaced by "***".
  std::string redact(std::string_view text) const;

  // Masks text from its start into out: at each position i < cut, a pattern that matches at i
  // (and fits in text) is replaced by the mark, any other byte is copied. Returns where it stopped
  // (>= cut; more when a match crossed cut). The caller picks cut so that no pattern starting
  // before it can continue past the end of text (see RedactingStream::feed).
  size_t mask_until(std::string_view text, size_t cut, std::string& out) const;

 private:
  std::vector<std::string> patterns_;  // longest first
  size_t max_size_ = 0;
  bool first_byte_[256] = {};
};

class RedactingStream {
 public:
  // The redactor must outlive the stream.
  explicit RedactingStream(const Redactor& redactor) : redactor_(redactor) {}

  // Appends data and returns the masked bytes that can be released now (possibly empty).
  std::string feed(std::string_view data);
  // Releases (masked) whatever is held back; call at end of stream.
  std::string finish();
  // Bytes currently held back.
  size_t pending() const { return pending_.size(); }

 private:
  const Redactor& redactor_;
  std::string pending_;
};

}  // namespace cutover::core
