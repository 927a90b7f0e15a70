------------------------------------------------------------------------------
-- Alerts (README "Alerts").  Backends queue alert records in shared memory;
-- the flusher inserts them here with ON CONFLICT DO NOTHING (at most one row
-- per kind, user, endpoint, scope and window; NULL ids compare equal) and
-- sends pg_notify(rate_limiter.alert_channel, payload) for the rows it
-- inserted, in the same transaction.
------------------------------------------------------------------------------
CREATE TABLE rate_limit_alerts (
  id           bigserial PRIMARY KEY,
  kind         text NOT NULL,
  user_id      text,
  api_endpoint text,
  scope        text,
  window_start timestamptz,
  payload      jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT rate_limit_alerts_dedup
    UNIQUE NULLS NOT DISTINCT (kind, user_id, api_endpoint, scope, window_start)
);
CREATE INDEX rate_limit_alerts_created_idx ON rate_limit_alerts (created_at);
COMMENT ON TABLE rate_limit_alerts IS
  'Alerts (quota thresholds, abuse, emergency overrides, degradation), one per kind, user, endpoint, scope and window; written by the flusher, best effort';
SELECT pg_catalog.pg_extension_config_dump('rate_limit_alerts', '');
SELECT pg_catalog.pg_extension_config_dump('rate_limit_alerts_id_seq', '');
