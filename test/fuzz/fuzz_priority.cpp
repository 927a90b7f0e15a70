// parse_priority() and parse_algorithm() on arbitrary bytes: they must
// accept exactly the documented spellings and never read out of bounds.
#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "rate_limiter/core/priority.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace rate_limiter::core;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto p = parse_priority(text);
  const bool expect_p = lower == "high" || lower == "medium" || lower == "low";
  FUZZ_CHECK(p.has_value() == expect_p);
  if (p) FUZZ_CHECK(lower == priority_name(*p));

  // A heap copy of exactly `size` bytes, so ASan sees any over-read.
  const std::string copy(text);
  Algorithm a{};
  const bool ok = parse_algorithm(copy.data(), copy.size(), &a);
  const bool expect_a = text == "fixed_window" || text == "sliding_window" ||
                        text == "token_bucket" || text == "gcra";
  FUZZ_CHECK(ok == expect_a);
  if (ok) FUZZ_CHECK(text == algorithm_name(a));
  return 0;
}
