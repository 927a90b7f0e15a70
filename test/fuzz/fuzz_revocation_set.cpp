// Random insert / contains / erase / erase_installation on a small
// RevocationSet, checked against a std::map model (key -> installation).
#include <map>
#include <vector>

#include "fuzz_common.hpp"
#include "rate_limiter/core/revocation_set.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace rate_limiter::core;
  FuzzedDataProvider in(data, size);
  const uint32_t cap = in.ConsumeIntegralInRange<uint32_t>(1, 12);
  const uint32_t nslots = revocation_slots_for(cap);
  FUZZ_CHECK(nslots > cap);
  RevocationSetHeader header;
  std::vector<RevocationSlot> slots(nslots);
  RevocationSet::initialize(&header, slots.data(), cap, nslots);
  RevocationSet set(&header, slots.data());
  const SipKey sip{in.ConsumeIntegral<uint64_t>(), in.ConsumeIntegral<uint64_t>()};

  Hash128 pool[16];
  for (Hash128& k : pool) {
    if (in.ConsumeBool()) {
      k = revocation_key(sip, in.ConsumeIntegralInRange<uint64_t>(0, 3),
                         in.ConsumeRandomLengthString(16));
      FUZZ_CHECK(!k.is_zero());
    } else {
      k.hi = in.ConsumeIntegral<uint64_t>();
      k.lo = (static_cast<uint64_t>(in.ConsumeIntegralInRange<int>(0, 3)) << 62) | 1;
    }
  }
  std::map<Hash128, uint64_t> model;
  while (in.remaining_bytes() > 0) {
    const Hash128 key = pool[in.ConsumeIntegralInRange<int>(0, 15)];
    const uint64_t inst = in.ConsumeIntegralInRange<uint64_t>(0, 3);
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
      case 0: {
        const InsertResult r = set.insert(key, inst);
        if (model.count(key)) {
          FUZZ_CHECK(r == InsertResult::Present);
        } else if (model.size() >= cap) {
          FUZZ_CHECK(r == InsertResult::Full);
        } else {
          FUZZ_CHECK(r == InsertResult::Inserted);
          model[key] = inst;
        }
        break;
      }
      case 1:
        FUZZ_CHECK(set.erase(key) == (model.erase(key) == 1));
        break;
      case 2: {
        uint32_t removed = 0;
        for (auto it = model.begin(); it != model.end();)
          if (it->second == inst) {
            it = model.erase(it);
            ++removed;
          } else {
            ++it;
          }
        FUZZ_CHECK(set.erase_installation(inst) == removed);
        break;
      }
      default:
        FUZZ_CHECK(set.contains(key) == (model.count(key) != 0));
        break;
    }
    FUZZ_CHECK(set.count() == model.size());
    for (const auto& kv : model) FUZZ_CHECK(set.contains(kv.first));
  }
  return 0;
}
