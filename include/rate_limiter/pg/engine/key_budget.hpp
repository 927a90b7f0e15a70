// The counter table's exhaustion policy, as settings and roles (the
// mechanism is core::Admission, counter_table.hpp; docs/production-scale.md, "Counter table
// exhaustion" states the guarantees).
//
//  - rate_limiter.configured_key_reserve: the fraction of each partition
//    that only counters of scopes with a rule of their own (a user's or an
//    endpoint's rule) may use.  Counters of users who are only under the
//    default rule ("default class") fill at most the rest.
//  - rate_limiter.role_key_share: the fraction of the default class one
//    role (current_user of the call) may hold.  A role over it is refused
//    with RL507 whatever rate_limiter.failure_mode says: failing open here
//    would hand the misbehaving role an unlimited grant.
//
// Roles map onto core::kMaxOwners tallies: the first kMaxOwners - 1 roles
// that create default-class counters since the server started get a tally
// each; every later role shares the last one.  The map is kept in shared
// memory, written under the installations lock, read without it.
#pragma once

#include "rate_limiter/pg/shmem.hpp"

#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

SegmentRequest key_budget_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_key_budget_memory();      // from attach_shared_memory()

// The admission of a new counter for the calling role: configured
// (default_class false) or the default class under the current settings.
// May take the installations lock to give the role a tally; cannot fail.
core::Admission key_admission(bool default_class) noexcept;

// The role an owner tally belongs to (InvalidOid for the shared tally).
Oid key_owner_role(uint8 owner) noexcept;

// The role map across a clean restart (counter_file.hpp): the slots keep
// their owners, so the map must keep its meaning.
void save_key_owners(Oid* roles) noexcept;           // core::kMaxOwners + 1 entries
void restore_key_owners(const Oid* roles) noexcept;  // the postmaster, before any backend

// Counters per partition the default class may hold, and one role of it.
uint32 default_class_cap(uint32 partition_capacity) noexcept;
uint32 role_cap(uint32 partition_capacity) noexcept;

}  // namespace rate_limiter::pg
