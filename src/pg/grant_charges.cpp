#include "rate_limiter/pg/grant_charges.hpp"

#include <cstring>

namespace rate_limiter::pg {
namespace {

template <typename T>
char* put(char* p, T v) noexcept {
  memcpy(p, &v, sizeof v);
  return p + sizeof v;
}

template <typename T>
const char* get(const char* p, T* v) noexcept {
  memcpy(v, p, sizeof *v);
  return p + sizeof *v;
}

}  // namespace

uint32 encode_grant_charges(const CallResult& result, char* out) noexcept {
  if (result.status != CallStatus::Decided) return 0;
  char* p = out + 1;
  int n = 0;
  for (int i = 0; i < result.charged_count && n < kMaxGrantCharges; ++i) {
    const ChargedCounter& c = result.charged[i];
    if (c.role != 0 || c.kind != core::LimitKind::Tokens || c.units <= 0) continue;
    p = put(p, static_cast<uint8>(c.scope));
    p = put(p, static_cast<uint8>(c.rule.algorithm));
    p = put(p, c.generation);
    p = put(p, c.key.hi);
    p = put(p, c.key.lo);
    p = put(p, c.rule.limit);
    p = put(p, c.rule.window_micros);
    p = put(p, c.rule.burst);
    p = put(p, c.units);
    p = put(p, c.window);
    ++n;
  }
  if (n == 0) return 0;
  out[0] = static_cast<char>(kGrantChargesVersion);
  return static_cast<uint32>(p - out);
}

int decode_grant_charges(const char* bytes, uint32 length, GrantCharge* out) noexcept {
  if (length < 1 || static_cast<uint8>(bytes[0]) != kGrantChargesVersion) return -1;
  if ((length - 1) % kGrantChargeBytes != 0) return -1;
  const int n = static_cast<int>((length - 1) / kGrantChargeBytes);
  if (n > kMaxGrantCharges) return -1;
  const char* p = bytes + 1;
  for (int i = 0; i < n; ++i) {
    GrantCharge& c = out[i];
    uint8 scope = 0, algorithm = 0;
    p = get(p, &scope);
    p = get(p, &algorithm);
    p = get(p, &c.generation);
    p = get(p, &c.key.hi);
    p = get(p, &c.key.lo);
    p = get(p, &c.rule.limit);
    p = get(p, &c.rule.window_micros);
    p = get(p, &c.rule.burst);
    p = get(p, &c.units);
    p = get(p, &c.window);
    if (scope > static_cast<uint8>(core::ScopeKind::Default) || algorithm >= core::kAlgorithms) return -1;
    c.scope = static_cast<core::ScopeKind>(scope);
    c.rule.algorithm = static_cast<core::Algorithm>(algorithm);
    if (c.units < 0 || c.rule.limit < 1 || c.rule.window_micros < 1) return -1;
  }
  return n;
}

}  // namespace rate_limiter::pg
