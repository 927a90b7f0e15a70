#include "rate_limiter/core/priority.hpp"

namespace rate_limiter::core {
namespace {

bool equals_ignoring_case(std::string_view text, std::string_view lower) noexcept {
  if (text.size() != lower.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}

}  // namespace

std::optional<Priority> parse_priority(std::string_view text) noexcept {
  if (equals_ignoring_case(text, "high")) return Priority::High;
  if (equals_ignoring_case(text, "medium")) return Priority::Medium;
  if (equals_ignoring_case(text, "low")) return Priority::Low;
  return std::nullopt;
}

const char* priority_name(Priority p) noexcept {
  switch (p) {
    case Priority::High:
      return "high";
    case Priority::Medium:
      return "medium";
    case Priority::Low:
      return "low";
  }
  return "medium";
}

}  // namespace rate_limiter::core
