// A random sequence of acquire / find / store / reset / refund /
// evict_expired on one small CounterPartition, checked against a std::map
// model: same keys, same states, count() == model size <= capacity(), and
// acquire() fails only when the partition is full of live counters.  Keys
// come from a small pool whose low halves collide on purpose (long probe
// sequences, backward-shift deletion across the array's end).
#include <map>
#include <vector>

#include "fuzz_common.hpp"
#include "rate_limiter/core/counter_table.hpp"

namespace {
using namespace rate_limiter::core;
// Equal but for the slot generation (reserved[1..2]), which the model
// checks on its own.
bool same(const CounterState& a, const CounterState& b) {
  CounterState x = a, y = b;
  CounterPartition::set_generation(&x, 0);
  CounterPartition::set_generation(&y, 0);
  return std::memcmp(&x, &y, sizeof x) == 0;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const uint32_t cap = in.ConsumeIntegralInRange<uint32_t>(1, 12);
  const uint32_t nslots = cap + cap / 3 + 1;
  PartitionHeader header;
  std::vector<CounterSlot> slots(nslots);
  CounterPartition::initialize(&header, slots.data(), cap, nslots);
  CounterPartition part(&header, slots.data());

  Hash128 pool[16];
  for (Hash128& k : pool) {
    k.hi = in.ConsumeIntegral<uint64_t>();
    // High bits of lo choose the home slot: few distinct values, many collisions.
    k.lo = (static_cast<uint64_t>(in.ConsumeIntegralInRange<int>(0, 3)) << 62) |
           in.ConsumeIntegralInRange<uint64_t>(1, 1000);
  }
  LimitRule rules[3];
  for (LimitRule& r : rules) r = fuzz::rule(in);

  std::map<Hash128, CounterState> model;
  int64_t now = kWindowOriginMicros + in.ConsumeIntegralInRange<int64_t>(0, int64_t{1} << 50);
  auto evict_model = [&](int64_t t) {
    for (auto it = model.begin(); it != model.end();)
      it = state_expired(it->second, t) ? model.erase(it) : std::next(it);
  };

  while (in.remaining_bytes() > 0) {
    const Hash128 key = pool[in.ConsumeIntegralInRange<int>(0, 15)];
    const LimitRule& rule = rules[in.ConsumeIntegralInRange<int>(0, 2)];
    if (in.ConsumeBool()) now += in.ConsumeIntegralInRange<int64_t>(0, 2 * rule.window_micros);
    switch (in.ConsumeIntegralInRange<int>(0, 6)) {
      case 0: {  // acquire, then maybe consume
        const bool present = model.count(key) != 0;
        if (!present && model.size() >= cap) evict_model(now);
        uint32_t evicted = 0;
        CounterSlot* s = part.acquire(key, rule, now, &evicted);
        if (!present && model.size() >= cap) {
          FUZZ_CHECK(s == nullptr);
          break;
        }
        FUZZ_CHECK(s != nullptr && s->key == key);
        const CounterState st = advance(rule, present ? model[key] : CounterState{}, now);
        FUZZ_CHECK(same(s->state, st));
        FUZZ_CHECK(!state_expired(s->state, now));
        const int64_t avail = available(rule, s->state, now);
        consume(rule, &s->state, fuzz::quantity(in, 0, avail), now);
        model[key] = s->state;
        break;
      }
      case 1: {  // store a state built for the rule
        const CounterState st = fuzz::history(in, rule, now);
        const bool present = model.count(key) != 0;
        if (!present && model.size() >= cap) evict_model(now);
        const bool ok = part.store(key, st, now);
        FUZZ_CHECK(ok == (present || model.size() < cap));
        if (ok) model[key] = st;
        break;
      }
      case 2: {  // reset: a new generation
        const CounterSlot* before = part.find(key);
        const uint16_t old_generation =
            before != nullptr ? CounterPartition::generation_of(*before) : 0;
        const bool ok = part.reset(key);
        FUZZ_CHECK(ok == (model.count(key) != 0));
        if (ok) FUZZ_CHECK(CounterPartition::generation_of(*part.find(key)) != old_generation);
        if (ok) model[key] = CounterState{};
        break;
      }
      case 3: {  // refund
        const int64_t units = fuzz::quantity(in, 0, kMaxQuantity);
        const int64_t window = aligned_window_start(now, rule.window_micros);
        // At the slot's generation, or (stale) at another: then nothing.
        const CounterSlot* slot = part.find(key);
        const bool stale = in.ConsumeBool();
        const uint16_t current = slot != nullptr ? CounterPartition::generation_of(*slot) : 0;
        const uint16_t generation = stale ? static_cast<uint16_t>(current ^ 1) : current;
        const bool ok = part.refund(key, rule, units, window, now, generation);
        FUZZ_CHECK(ok == (model.count(key) != 0));
        if (ok && !stale) refund(rule, &model[key], units, window, now);
        if (ok) FUZZ_CHECK(CounterPartition::generation_of(*part.find(key)) == current);
        break;
      }
      case 4: {  // evict_expired
        const std::size_t before = model.size();
        evict_model(now);
        FUZZ_CHECK(part.evict_expired(now) == before - model.size());
        break;
      }
      default: {  // find
        const CounterSlot* s = part.find(key);
        const auto it = model.find(key);
        FUZZ_CHECK((s != nullptr) == (it != model.end()));
        break;
      }
    }
    // Full comparison with the model.
    FUZZ_CHECK(part.count() == model.size());
    FUZZ_CHECK(model.size() <= cap);
    for (const auto& [k, st] : model) {
      const CounterSlot* s = part.find(k);
      FUZZ_CHECK(s != nullptr && same(s->state, st));
    }
    std::size_t occupied = 0;
    part.for_each([&](const CounterSlot&) { ++occupied; });
    FUZZ_CHECK(occupied == model.size());
  }
  return 0;
}
