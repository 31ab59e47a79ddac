#include "core/id.hpp"

#include <sys/random.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

namespace cutover::core {

std::string random_hex(size_t n_bytes) {
  std::vector<uint8_t> buf(n_bytes);
  size_t got = 0;
  while (got < n_bytes) {
    ssize_t r = getrandom(buf.data() + got, n_bytes - got, 0);
    if (r < 0) continue;  // EINTR; getrandom never fails otherwise once the pool is initialised
    got += static_cast<size_t>(r);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n_bytes * 2);
  for (uint8_t b : buf) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xf]);
  }
  return out;
}

std::string new_id(std::string_view prefix) {
  std::string hex = random_hex(5);
  return std::string(prefix) + "-" + hex;
}

}  // namespace cutover::core
