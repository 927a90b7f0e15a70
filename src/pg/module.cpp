// Library entry: _PG_init and the shared-memory hooks.
//
// The library must be in shared_preload_libraries: its counters live in
// shared memory that only the postmaster can reserve.  Loaded any other way,
// _PG_init does nothing and every function raises a clear error
// (require_shared_state()); the install script calls one, so CREATE
// EXTENSION fails with that error too.
#include "rate_limiter/pg/api.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/revocations.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shared_memory.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage.hpp"
#include "rate_limiter/pg/workers.hpp"

extern "C" {
PG_MODULE_MAGIC;
PGDLLEXPORT void _PG_init(void);
}

namespace {

shmem_request_hook_type previous_shmem_request_hook = nullptr;
shmem_startup_hook_type previous_shmem_startup_hook = nullptr;

void on_shmem_request() {
  if (previous_shmem_request_hook) previous_shmem_request_hook();
  rate_limiter::pg::request_shared_memory();
}

void on_shmem_startup() {
  if (previous_shmem_startup_hook) previous_shmem_startup_hook();
  rate_limiter::pg::attach_shared_memory();
}

}  // namespace

void _PG_init(void) {
  if (!process_shared_preload_libraries_in_progress) return;

  rate_limiter::pg::define_settings();

  previous_shmem_request_hook = shmem_request_hook;
  shmem_request_hook = on_shmem_request;
  previous_shmem_startup_hook = shmem_startup_hook;
  shmem_startup_hook = on_shmem_startup;

  rate_limiter::pg::register_transaction_callbacks();
  rate_limiter::pg::register_lease_effects();
  rate_limiter::pg::register_extension_catalog_invalidation();
  rate_limiter::pg::register_rule_change_callbacks();
  rate_limiter::pg::register_rule_lookup_reset();
  rate_limiter::pg::register_parent_link_reset();
  rate_limiter::pg::register_concurrency_limit_reset();
  rate_limiter::pg::register_reclaim_hooks();
  rate_limiter::pg::register_usage_log_reset();
  rate_limiter::pg::register_usage_log_callbacks();
  rate_limiter::pg::register_pending_usage_callbacks();
  rate_limiter::pg::register_launcher();
  rate_limiter::pg::register_database_command_hook();
  rate_limiter::pg::register_emergency_access_reset();
  rate_limiter::pg::register_revocations();
  rate_limiter::pg::register_rate_limit_trigger_invalidation();
  // Last, so that PostgreSQL (which calls the newest callback first) applies
  // the transaction's effects before the other commit callbacks run, as
  // reclaiming a dropped installation: its counters and queue stream must
  // still be live when the effects are applied.  The kinds registered
  // their handlers above.
  rate_limiter::pg::register_transaction_log();
}
