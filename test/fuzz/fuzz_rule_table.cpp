// Random upsert / insert_if_absent / erase (with and without tombstones) /
// sweep_tag / sweep_tombstones / find on a small RulePartition, checked
// against a std::map model (key -> (limit, deleted)).
#include <map>
#include <utility>
#include <vector>

#include "fuzz_common.hpp"
#include "rate_limiter/core/rule_table.hpp"
#include "rate_limiter/core/scope_key.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace rate_limiter::core;
  FuzzedDataProvider in(data, size);
  const uint32_t cap = in.ConsumeIntegralInRange<uint32_t>(1, 12);
  const uint32_t nslots = cap + cap / 3 + 1;
  RulePartitionHeader header;
  std::vector<RuleSlot> slots(nslots);
  RulePartition::initialize(&header, slots.data(), cap, nslots);
  RulePartition table(&header, slots.data());

  // Keys of three tags, with clustered homes (lo's top bits choose the slot).
  Hash128 pool[16];
  for (Hash128& k : pool) {
    k.hi = in.ConsumeIntegral<uint64_t>();
    k.lo = (static_cast<uint64_t>(in.ConsumeIntegralInRange<int>(0, 3)) << 62) |
           in.ConsumeIntegral<uint8_t>();
    k = with_tag(k, static_cast<uint16_t>(in.ConsumeIntegralInRange<int>(1, 3)));
  }
  std::map<std::pair<uint64_t, uint64_t>, std::pair<int64_t, bool>> model;
  auto id = [](const Hash128& k) { return std::make_pair(k.hi, k.lo); };
  while (in.remaining_bytes() > 0) {
    const Hash128 key = pool[in.ConsumeIntegralInRange<int>(0, 15)];
    const auto m = model.find(id(key));
    RuleRecord r;
    r.limit = in.ConsumeIntegralInRange<int64_t>(1, 1000);
    switch (in.ConsumeIntegralInRange<int>(0, 6)) {
      case 0: {
        const RuleWrite w = table.upsert(key, r);
        if (m != model.end()) {
          FUZZ_CHECK(w == (m->second.second ? RuleWrite::Inserted : RuleWrite::Updated));
          m->second = {r.limit, false};
        } else if (model.size() >= cap) {
          FUZZ_CHECK(w == RuleWrite::Full);
        } else {
          FUZZ_CHECK(w == RuleWrite::Inserted);
          model[id(key)] = {r.limit, false};
        }
        break;
      }
      case 1: {
        const RuleWrite w = table.insert_if_absent(key, r);
        if (m != model.end()) {
          FUZZ_CHECK(w == RuleWrite::Present);
        } else if (model.size() >= cap) {
          FUZZ_CHECK(w == RuleWrite::Full);
        } else {
          FUZZ_CHECK(w == RuleWrite::Inserted);
          model[id(key)] = {r.limit, false};
        }
        break;
      }
      case 2:
      case 3: {
        const bool tomb = in.ConsumeBool();
        FUZZ_CHECK(table.erase(key, tomb) == (m != model.end() && !m->second.second));
        if (tomb) {
          if (m != model.end())
            m->second.second = true;
          else if (model.size() < cap)
            model[id(key)] = {0, true};
        } else if (m != model.end()) {
          model.erase(m);
        }
        break;
      }
      case 4: {
        const auto tag = static_cast<uint16_t>(in.ConsumeIntegralInRange<int>(1, 3));
        const bool tombstones_only = in.ConsumeBool();
        uint32_t expected = 0;
        for (auto it = model.begin(); it != model.end();) {
          const bool ours = (it->first.first & kTagMask) == tag;
          if (ours && (!tombstones_only || it->second.second)) {
            if (tombstones_only || !it->second.second) ++expected;
            it = model.erase(it);
          } else {
            ++it;
          }
        }
        FUZZ_CHECK((tombstones_only ? table.sweep_tombstones(tag) : table.sweep_tag(tag)) ==
                   expected);
        break;
      }
      default: {
        const RuleSlot* s = table.find(key);
        FUZZ_CHECK((s != nullptr) == (m != model.end()));
        if (s != nullptr) {
          FUZZ_CHECK((s->record.deleted != 0) == m->second.second);
          if (!m->second.second) FUZZ_CHECK(s->record.limit == m->second.first);
        }
        break;
      }
    }
    FUZZ_CHECK(table.count() == model.size());
    uint32_t live = 0;
    for (const auto& e : model) live += e.second.second ? 0 : 1;
    FUZZ_CHECK(table.live() == live);
  }
  return 0;
}
