#include "core/redact.hpp"

#include <algorithm>
#include <cstring>

namespace cutover::core {

Redactor::Redactor(const std::vector<std::string>& secret_values) {
  for (const std::string& value : secret_values) {
    size_t start = 0;
    while (start <= value.size()) {
      size_t end = value.find('\n', start);
      if (end == std::string::npos) end = value.size();
      std::string_view line(value.data() + start, end - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) patterns_.emplace_back(line);
      start = end + 1;
    }
  }
  std::sort(patterns_.begin(), patterns_.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() > b.size() : a < b;
  });
  patterns_.erase(std::unique(patterns_.begin(), patterns_.end()), patterns_.end());
  for (const std::string& p : patterns_) {
    max_size_ = std::max(max_size_, p.size());
    first_byte_[static_cast<unsigned char>(p[0])] = true;
  }
}

size_t Redactor::mask_until(std::string_view text, size_t cut, std::string& out) const {
  size_t i = 0;
  size_t copied_from = 0;  // text[copied_from, i) is still to be copied
  while (i < cut && i < text.size()) {
    if (first_byte_[static_cast<unsigned char>(text[i])]) {
      const std::string* hit = nullptr;
      for (const std::string& p : patterns_) {  // longest first: the first hit is the longest
        if (p.size() <= text.size() - i && std::memcmp(text.data() + i, p.data(), p.size()) == 0) {
          hit = &p;
          break;
        }
      }
      if (hit != nullptr) {
        out.append(text.data() + copied_from, i - copied_from);
        out += kRedactedMark;
        i += hit->size();
        copied_from = i;
        continue;
      }
    }
    ++i;
  }
  out.append(text.data() + copied_from, i - copied_from);
  return i;
}

std::string Redactor::redact(std::string_view text) const {
  if (patterns_.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  mask_until(text, text.size(), out);
  return out;
}

std::string RedactingStream::feed(std::string_view data) {
  std::string out;
  if (redactor_.empty()) {
    out.assign(data);
    return out;
  }
  pending_.append(data);
  // Everything up to the last newline can go (no pattern contains '\n', so none started before it
  // can continue after it), and so can everything before the last (longest pattern - 1) bytes.
  size_t cut = 0;
  const size_t nl = pending_.rfind('\n');
  if (nl != std::string::npos) cut = nl + 1;
  const size_t keep = redactor_.max_pattern_size() - 1;
  if (pending_.size() > keep) cut = std::max(cut, pending_.size() - keep);
  if (cut == 0) return out;
  const size_t consumed = redactor_.mask_until(pending_, cut, out);
  pending_.erase(0, consumed);
  return out;
}

std::string RedactingStream::finish() {
  std::string out;
  redactor_.mask_until(pending_, pending_.size(), out);
  pending_.clear();
  return out;
}

}  // namespace cutover::core
