------------------------------------------------------------------------------
-- Argument checks shared by the SQL-language functions.  Same rules and
-- SQLSTATEs as the C functions: 22004 NULL, 22023 invalid, 22001 too long,
-- 22003 out of range.
------------------------------------------------------------------------------

CREATE FUNCTION rate_limiter_check_id(what text, value text, nullable boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF value IS NULL THEN
    IF nullable THEN RETURN; END IF;
    RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF value = '' THEN
    RAISE EXCEPTION '% must not be empty', what USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF octet_length(value) > 255 THEN
    RAISE EXCEPTION '% is too long (% bytes)', what, octet_length(value)
      USING ERRCODE = 'string_data_right_truncation',
            DETAIL = 'The maximum length is 255 bytes.';
  END IF;
END $$;

CREATE FUNCTION rate_limiter_check_limit(what text, value bigint)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF value IS NULL THEN
    RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF value < 1 THEN
    RAISE EXCEPTION '% must be at least 1, not %', what, value USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF value > 1000000000000000 THEN
    RAISE EXCEPTION '% is too large: %', what, value
      USING ERRCODE = 'numeric_value_out_of_range', DETAIL = 'The maximum is 1000000000000000.';
  END IF;
END $$;

CREATE FUNCTION rate_limiter_check_window(what text, value interval)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF value IS NULL THEN
    RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF value < interval '1 second' OR value > interval '3650 days' THEN
    RAISE EXCEPTION '% must be between 1 second and 3650 days, not %', what, value
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
END $$;

COMMENT ON FUNCTION rate_limiter_check_id(text, text, boolean) IS
  'Internal: validates an id argument (NULL, empty, longer than 255 bytes)';
COMMENT ON FUNCTION rate_limiter_check_limit(text, bigint) IS
  'Internal: validates a limit argument (1 .. 10^15)';
COMMENT ON FUNCTION rate_limiter_check_window(text, interval) IS
  'Internal: validates a window argument (1 second .. 3650 days)';
REVOKE ALL ON FUNCTION rate_limiter_check_id(text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION rate_limiter_check_limit(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION rate_limiter_check_window(text, interval) FROM PUBLIC;
