-- 009_compliance.sql — who may be called, and when (DESIGN.md section 9):
-- a call's own zone, calling window, schedule and expiry, why it is held,
-- and the status EXPIRED.
--
-- Owns: the columns below, the status EXPIRED (terminal: a call not
-- finished by its expires_at; never dialled after it), hold_call() (the
-- dispatcher puts a call back to wait for its window or the number's
-- attempt budget), expire_calls() (the scheduler's sweep), and the new
-- call_json(), intake_calls() and start_attempt().
--
-- The rules themselves (which zones, which window, when it opens) are
-- computed in C (src/compliance/) by the HTTP workers at create and PATCH
-- time and by the dispatcher just before each attempt; PostgreSQL stores
-- what they decided.

ALTER TABLE calls
    ADD COLUMN timezone       text,        -- the call's "timezone": overrides the number's zones
    ADD COLUMN timezones      text[],      -- the zones the rules use; NULL = no zone data
    ADD COLUMN calling_window jsonb,       -- {"start","end","days":[…]}; NULL = [compliance]
    ADD COLUMN not_before     timestamptz,
    ADD COLUMN expires_at     timestamptz,
    ADD COLUMN hold_reason    text,
    ADD CONSTRAINT calls_hold_reason_check
        CHECK (hold_reason IN ('schedule', 'window', 'frequency')),
    ADD CONSTRAINT calls_expiry_check CHECK (expires_at > not_before);

ALTER TABLE calls DROP CONSTRAINT calls_status_check;
ALTER TABLE calls ADD CONSTRAINT calls_status_check CHECK
    (status IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED', 'SUPPRESSED',
                'EXPIRED'));

-- The counters of 005_status_counts.sql: a row per slot, as the others have.
INSERT INTO call_status_counts (status, slot, n)
SELECT 'EXPIRED', g, 0 FROM generate_series(0, 63) g;

-- The retention of finished calls (006_retention.sql): EXPIRED is terminal.
DROP INDEX calls_finished_idx;
CREATE INDEX calls_finished_idx ON calls (ended_at)
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'SUPPRESSED', 'EXPIRED');

-- The expiry sweep: only PENDING calls that have an expiry.
CREATE INDEX calls_expiry_idx ON calls (expires_at)
    WHERE status = 'PENDING' AND expires_at IS NOT NULL;

-- The call resource gains the section 9 fields, after the section 4 ones.
ALTER TYPE call_resource
    ADD ATTRIBUTE "timezone" text,
    ADD ATTRIBUTE "timezones" text[],
    ADD ATTRIBUTE "callingWindow" jsonb,
    ADD ATTRIBUTE "notBefore" text,
    ADD ATTRIBUTE "expiresAt" text,
    ADD ATTRIBUTE "holdReason" text;

-- holdReason is shown while the hold lasts: a PENDING call not yet due.
-- A wait for a retry (next_attempt_at set by a settle) has no reason:
-- start_attempt() clears the reason of the last hold.
CREATE OR REPLACE FUNCTION call_json(c calls) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT row_to_json(ROW(c.id, c.to_number, c.script_id, COALESCE(c.metadata, '{}'),
        c.status, c.attempts, c.max_attempts, c.last_error, c.external_call_id,
        callorch_ts(c.next_attempt_at), callorch_ts(c.created_at), callorch_ts(c.updated_at),
        callorch_ts(c.started_at), callorch_ts(c.ended_at),
        c.timezone, COALESCE(c.timezones, '{}'), c.calling_window,
        callorch_ts(c.not_before), callorch_ts(c.expires_at),
        CASE WHEN c.status = 'PENDING' AND c.due_at > now() THEN c.hold_reason END
        )::call_resource)
$$;

-- updatedAt also moves when a section 9 field changes (a PATCH, a hold).
CREATE OR REPLACE FUNCTION calls_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.to_number, NEW.script_id, NEW.metadata, NEW.status, NEW.attempts,
        NEW.max_attempts, NEW.last_error, NEW.external_call_id, NEW.next_attempt_at,
        NEW.started_at, NEW.ended_at, NEW.timezone, NEW.timezones, NEW.calling_window,
        NEW.not_before, NEW.expires_at, NEW.hold_reason)
       IS DISTINCT FROM
       (OLD.to_number, OLD.script_id, OLD.metadata, OLD.status, OLD.attempts,
        OLD.max_attempts, OLD.last_error, OLD.external_call_id, OLD.next_attempt_at,
        OLD.started_at, OLD.ended_at, OLD.timezone, OLD.timezones, OLD.calling_window,
        OLD.not_before, OLD.expires_at, OLD.hold_reason) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- intake_calls() of 007_dnc.sql with the section 9 fields in each input
-- item: timezone, timezones (JSON array or null), calling_window,
-- not_before, expires_at, and what the HTTP worker decided at create time:
-- next_attempt_at (null: due now) and hold_reason.  A held call is not
-- published (published_at NULL): the scheduler publishes it when due.
CREATE OR REPLACE FUNCTION intake_calls(p_input json, p_max_attempts int)
RETURNS TABLE (r_ord int, r_outcome text, r_body json)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT t.*,
               EXISTS (SELECT 1 FROM dnc d WHERE d.number = t.to_number) AS listed
          FROM json_to_recordset(p_input) AS t(ord int, id uuid, to_number text,
            script_id text, metadata jsonb, idem_key text, req_hash text,
            timezone text, timezones text[], calling_window jsonb,
            not_before timestamptz, expires_at timestamptz,
            next_attempt_at timestamptz, hold_reason text)
    ), keys AS (
        INSERT INTO idempotency_keys (key, request_hash, call_id)
        SELECT i.idem_key, decode(i.req_hash, 'hex'), i.id FROM input i
         WHERE i.idem_key IS NOT NULL AND NOT i.listed
         ORDER BY i.idem_key
        ON CONFLICT (key) DO NOTHING
        RETURNING call_id
    ), created AS (
        INSERT INTO calls (id, to_number, script_id, metadata, max_attempts, published_at,
                           timezone, timezones, calling_window, not_before, expires_at,
                           next_attempt_at, hold_reason)
        SELECT i.id, i.to_number, i.script_id, COALESCE(i.metadata, '{}'), p_max_attempts,
               CASE WHEN i.next_attempt_at IS NULL THEN now() END,
               i.timezone, i.timezones, i.calling_window, i.not_before, i.expires_at,
               i.next_attempt_at, i.hold_reason
          FROM input i
         WHERE NOT i.listed AND (i.idem_key IS NULL OR i.id IN (SELECT k.call_id FROM keys k))
        RETURNING calls.id, call_json(calls) AS body
    )
    SELECT i.ord, 'C'::text, c.body FROM created c JOIN input i ON i.id = c.id
    UNION ALL
    SELECT i.ord,
           CASE WHEN k.request_hash = decode(i.req_hash, 'hex') THEN 'R' ELSE 'X' END,
           call_json(c)
      FROM input i
      JOIN idempotency_keys k ON k.key = i.idem_key
      JOIN calls c ON c.id = k.call_id
    UNION ALL
    SELECT i.ord, 'D'::text, NULL::json
      FROM input i
     WHERE i.listed
       AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.key = i.idem_key);
END
$$;

-- start_attempt() of 008_suppressed.sql that also refuses an expired call
-- (no row: the dispatcher releases what it took; the sweep ends the call
-- EXPIRED) and clears the reason of the last hold.
CREATE OR REPLACE FUNCTION start_attempt(p_id uuid, p_attempt int, p_to text, p_owner text)
RETURNS TABLE (status text, script_id text, metadata text)
LANGUAGE plpgsql AS $$
BEGIN
    IF suppress_if_listed(p_id, p_attempt, p_to) THEN
        RETURN QUERY SELECT 'SUPPRESSED'::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    RETURN QUERY
    WITH upd AS (
        UPDATE calls c
           SET status = 'IN_PROGRESS', attempts = c.attempts + 1, started_at = now(),
               ended_at = NULL, next_attempt_at = NULL, published_at = NULL,
               slot_owner = p_owner, hold_reason = NULL
         WHERE c.id = p_id AND c.status = 'PENDING' AND c.attempts = p_attempt - 1
           AND c.due_at <= now() AND c.to_number = p_to
           AND (c.expires_at IS NULL OR c.expires_at > now())
        RETURNING c.id, c.attempts, c.script_id, c.metadata
    ), att AS (
        INSERT INTO call_attempts (call_id, attempt) SELECT u.id, u.attempts FROM upd u
    )
    SELECT 'IN_PROGRESS'::text, u.script_id, u.metadata::text FROM upd u;
END
$$;

-- Hold call P_ID (PENDING, attempt P_ATTEMPT next) until P_UNTIL for
-- P_REASON ('window' or 'frequency'): the dispatcher found it may not be
-- dialled now.  Not published again until due.  Returns whether it did
-- (false: cancelled, changed or started since the load).
CREATE FUNCTION hold_call(p_id uuid, p_attempt int, p_until timestamptz, p_reason text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE calls c
       SET next_attempt_at = p_until, hold_reason = p_reason, published_at = NULL
     WHERE c.id = p_id AND c.status = 'PENDING' AND c.attempts = p_attempt - 1;
    RETURN FOUND;
END
$$;

-- The expiry sweep: up to P_LIMIT PENDING calls whose expires_at has
-- passed end EXPIRED, oldest expiry first; calls locked by someone else
-- are left for the next sweep.  Returns the ids expired.  An IN_PROGRESS
-- call finishes its attempt; a retry it plans waits PENDING and is
-- expired here (start_attempt() never starts it).
CREATE FUNCTION expire_calls(p_limit int)
RETURNS TABLE (id uuid)
LANGUAGE sql AS $$
    UPDATE calls c
       SET status = 'EXPIRED', ended_at = now(), next_attempt_at = NULL,
           published_at = NULL, hold_reason = NULL,
           last_error = 'expired before it could be completed'
     WHERE c.id IN (SELECT e.id FROM calls e
                     WHERE e.status = 'PENDING' AND e.expires_at <= now()
                     ORDER BY e.expires_at
                     LIMIT p_limit
                     FOR UPDATE SKIP LOCKED)
    RETURNING c.id
$$;
