-- pg_temp.error_of(query): runs query, catching its error.  The one
-- SQLSTATE probe of the pg_regress files: fresh_start.sql includes this
-- file (with ECHO off), so every file has the function; being temporary it
-- goes with the file's session.
--
--   code                     the error's SQLSTATE, or 'no error'
--   message, detail, hint    the error's text (NULL without an error)
--   error                    code || ': ' || message, or 'no error'
--   result                   without an error, the first column of the
--                            first row of a SELECT or VALUES query, as text
--
-- The query runs in a subtransaction: an error undoes its effects, as in
-- any EXCEPTION block.  Statements other than SELECT and VALUES run without
-- INTO (INTO would reject a statement that returns no rows).
CREATE FUNCTION pg_temp.error_of(query text,
  OUT code text, OUT message text, OUT detail text, OUT hint text,
  OUT error text, OUT result text)
LANGUAGE plpgsql AS $$
BEGIN
  IF query ~* '^\s*(SELECT|VALUES)\M' THEN
    EXECUTE query INTO result;
  ELSE
    EXECUTE query;
  END IF;
  code := 'no error';
  error := code;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                          detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
  error := code || ': ' || message;
END $$;
