#include "rate_limiter/pg/engine/grant_charges.hpp"

#include "rate_limiter/core/window.hpp"

namespace rate_limiter::pg {
namespace {

constexpr uint8 kBurstCap = 1 << 4;  // version 1: reserved; version 2: kAncestor
constexpr uint8 kAncestor = 1 << 4;
constexpr uint8 kUnitsAreTokens = 1 << 5;
constexpr uint8 kHasBurst = 1 << 6;
constexpr uint8 kAlignedWindow = 1 << 7;

// Which charges a record holds: token quotas' main counters.  Burst caps
// are not recorded: their counters are keyed with the shape of the limit
// they cap, which the record does not hold, and a refund to them is never
// needed for exactness (they only ever deny).  An ancestor's charge whose
// id could not be found (its link was removed meanwhile) is not recorded:
// settle gives it nothing back.
bool recorded(const ChargedCounter& c, const DecidedLimit& l) noexcept {
  if (c.role != 0 || l.kind != core::LimitKind::Tokens || c.units <= 0 || l.burst_cap) return false;
  return !(l.owner_level > 0 && l.owner_id == nullptr);
}

bool windowed(core::Algorithm a) {
  return a == core::Algorithm::FixedWindow || a == core::Algorithm::SlidingWindow;
}

char* put_varint(char* p, uint64 v) noexcept {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

uint64 zigzag(int64 v) noexcept {
  return (static_cast<uint64>(v) << 1) ^ static_cast<uint64>(v >> 63);
}
int64 unzigzag(uint64 v) noexcept {
  return static_cast<int64>(v >> 1) ^ -static_cast<int64>(v & 1);
}

// Reads one varint from [*p, end); false when it runs past the end or
// beyond 64 bits.
bool get_varint(const char** p, const char* end, uint64* out) noexcept {
  uint64 v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return false;
    const uint8 b = static_cast<uint8>(*(*p)++);
    v |= static_cast<uint64>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) {
      *out = v;
      return true;
    }
  }
  return false;
}

bool get_positive(const char** p, const char* end, int64 max, int64* out) noexcept {
  uint64 v = 0;
  if (!get_varint(p, end, &v) || v > static_cast<uint64>(max)) return false;
  *out = static_cast<int64>(v);
  return true;
}

}  // namespace

uint32 encode_grant_charges(const CallResult& result, int64 tokens, int64 now, char* out) noexcept {
  if (result.status != CallStatus::Decided) return 0;
  char* p = out + 1;
  int n = 0;
  bool ancestors = false;
  // Version 3 adds a period length to every fixed-window charge: only
  // when some charge is a calendar period's.
  bool calendar = false;
  for (int i = 0; i < result.charged_count; ++i) {
    const ChargedCounter& c = result.charged[i];
    const DecidedLimit& l = result.limits[c.limit];
    if (recorded(c, l) && c.rule.origin != core::kWindowOriginMicros) calendar = true;
  }
  for (int i = 0; i < result.charged_count && n < kMaxGrantCharges; ++i) {
    const ChargedCounter& c = result.charged[i];
    const DecidedLimit& l = result.limits[c.limit];
    if (!recorded(c, l)) continue;
    const core::Algorithm a = c.rule.algorithm;
    uint8 flags = static_cast<uint8>(static_cast<uint8>(l.scope) & 3) |
                  static_cast<uint8>((static_cast<uint8>(a) & 3) << 2);
    if (l.owner_level > 0) flags |= kAncestor;
    if (c.units == tokens) flags |= kUnitsAreTokens;
    if (c.rule.burst != 0) flags |= kHasBurst;
    // The aligned window of the recorded (key) window, as the decoder
    // computes it.
    if (windowed(a) && c.window == core::aligned_window_start(now, c.key_window))
      flags |= kAlignedWindow;
    *p++ = static_cast<char>(flags);
    *p++ = static_cast<char>(c.generation & 0xFF);
    *p++ = static_cast<char>(c.generation >> 8);
    if (flags & kAncestor) {
      const size_t len = strnlen(l.owner_id, core::kMaxIdBytes);
      p = put_varint(p, len);
      memcpy(p, l.owner_id, len);
      p += len;
      ancestors = true;
    }
    p = put_varint(p, static_cast<uint64>(c.rule.limit));
    p = put_varint(p, static_cast<uint64>(c.key_window));
    if (flags & kHasBurst) p = put_varint(p, static_cast<uint64>(c.rule.burst));
    if (!(flags & kUnitsAreTokens)) p = put_varint(p, static_cast<uint64>(c.units));
    if (!(flags & kAlignedWindow)) p = put_varint(p, zigzag(c.window - now));
    if (calendar && a == core::Algorithm::FixedWindow)
      p = put_varint(p, c.rule.origin != core::kWindowOriginMicros
                            ? static_cast<uint64>(c.rule.window_micros)
                            : 0);
    ++n;
  }
  if (n == 0) return 0;
  out[0] = static_cast<char>(calendar    ? kGrantChargesVersion
                             : ancestors ? kGrantChargesVersion2
                                         : kGrantChargesVersion1);
  return static_cast<uint32>(p - out);
}

int decode_grant_charges(const char* bytes, uint32 length, int64 tokens, int64 now,
                         GrantCharge* out) noexcept {
  if (length < 1) return -1;
  const uint8 version = static_cast<uint8>(bytes[0]);
  if (version != kGrantChargesVersion && version != kGrantChargesVersion2 &&
      version != kGrantChargesVersion1)
    return -1;
  const char* p = bytes + 1;
  const char* end = bytes + length;
  int n = 0;
  while (p < end) {
    if (n == kMaxGrantCharges || end - p < 3) return -1;
    GrantCharge& c = out[n++];
    const uint8 flags = static_cast<uint8>(*p++);
    c.generation = static_cast<uint16>(static_cast<uint8>(p[0]) | (static_cast<uint8>(p[1]) << 8));
    p += 2;
    c.scope = static_cast<core::ScopeKind>(flags & 3);
    c.rule.algorithm = static_cast<core::Algorithm>((flags >> 2) & 3);
    c.owner = std::string_view();
    if (version == kGrantChargesVersion1 && (flags & kBurstCap))
      return -1;  // reserved: burst caps are not recorded
    if (version != kGrantChargesVersion1 && (flags & kAncestor)) {
      // An ancestor's counters are its user and user+endpoint scopes only.
      if (c.scope != core::ScopeKind::User && c.scope != core::ScopeKind::UserEndpoint) return -1;
      int64 len = 0;
      if (!get_positive(&p, end, core::kMaxIdBytes, &len) || len < 1 || end - p < len) return -1;
      c.owner = std::string_view(p, static_cast<size_t>(len));
      p += len;
    }
    if (!get_positive(&p, end, core::kMaxQuantity, &c.rule.limit) || c.rule.limit < 1) return -1;
    if (!get_positive(&p, end, core::kMaxWindowMicros, &c.rule.window_micros) ||
        c.rule.window_micros < core::kMinWindowMicros)
      return -1;
    c.rule.burst = 0;
    c.key_window = c.rule.window_micros;
    if ((flags & kHasBurst) && !get_positive(&p, end, core::kMaxQuantity, &c.rule.burst)) return -1;
    c.units = tokens;
    if (!(flags & kUnitsAreTokens) && !get_positive(&p, end, core::kMaxQuantity, &c.units))
      return -1;
    if (flags & kAlignedWindow) {
      if (!windowed(c.rule.algorithm)) return -1;
      c.window = core::aligned_window_start(now, c.rule.window_micros);
    } else {
      uint64 delta = 0;
      if (!get_varint(&p, end, &delta)) return -1;
      const int64 d = unzigzag(delta);
      if (d > core::kMaxWindowMicros * 4 || d < -core::kMaxWindowMicros * 4) return -1;
      c.window = now + d;
    }
    if (version == kGrantChargesVersion && c.rule.algorithm == core::Algorithm::FixedWindow) {
      int64 period = 0;
      if (!get_positive(&p, end, core::kMaxWindowMicros, &period)) return -1;
      if (period != 0) {
        if (period < core::kMinWindowMicros) return -1;
        // The period's window: what its counter was built for.
        c.rule.window_micros = period;
        c.rule.origin = c.window;
      }
    }
  }
  return n;
}

}  // namespace rate_limiter::pg
