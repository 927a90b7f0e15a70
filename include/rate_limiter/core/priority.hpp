// Priority levels as users spell them.
#pragma once

#include <optional>
#include <string_view>

#include "rate_limiter/core/types.hpp"

namespace rate_limiter::core {

// 'high', 'medium' or 'low', in any letter case, without surrounding blanks.
std::optional<Priority> parse_priority(std::string_view text) noexcept;

const char* priority_name(Priority p) noexcept;

}  // namespace rate_limiter::core
