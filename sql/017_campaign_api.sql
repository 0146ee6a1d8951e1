-- 017_campaign_api.sql — the campaign API and dead-letter replay
-- (DESIGN.md section 10) on the tables of 015_campaigns.sql.
--
-- Owns: the call resource's campaignId and priority; intake_calls() with
-- priority and events_url; campaign_status_counts and the triggers on
-- calls that keep it exact; campaign_check_finished(), the one place a
-- campaign becomes FINISHED (and RUNNING again when a replay brings one
-- of its calls back); the campaign resource (campaign_json()); creating a
-- campaign with its calls, adding calls, pause/resume/cancel; replaying
-- dead letters one by one and in bulk.
--
-- What the C side decides (src/api/): validation, campaign defaults on
-- each item, each call's zones and first hold (as for POST /api/v1/calls).
-- What PostgreSQL decides: the do-not-call list, idempotency, the state
-- changes (one conditional statement each) and every rendering.

-- ---------------------------------------------------- call resource ----

ALTER TYPE call_resource
    ADD ATTRIBUTE "campaignId" uuid,
    ADD ATTRIBUTE "priority" smallint;

CREATE OR REPLACE FUNCTION call_json(c calls) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT row_to_json(ROW(c.id, c.to_number, c.script_id, COALESCE(c.metadata, '{}'),
        c.status, c.attempts, c.max_attempts, c.last_error, c.external_call_id,
        callorch_ts(c.next_attempt_at), callorch_ts(c.created_at), callorch_ts(c.updated_at),
        callorch_ts(c.started_at), callorch_ts(c.ended_at),
        c.timezone, COALESCE(c.timezones, '{}'), c.calling_window,
        callorch_ts(c.not_before), callorch_ts(c.expires_at),
        CASE WHEN c.status = 'PENDING' AND c.due_at > now() THEN c.hold_reason END,
        c.campaign_id, c.priority
        )::call_resource)
$$;

-- updatedAt also moves when the priority or the events URL changes.
CREATE OR REPLACE FUNCTION calls_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.to_number, NEW.script_id, NEW.metadata, NEW.status, NEW.attempts,
        NEW.max_attempts, NEW.last_error, NEW.external_call_id, NEW.next_attempt_at,
        NEW.started_at, NEW.ended_at, NEW.timezone, NEW.timezones, NEW.calling_window,
        NEW.not_before, NEW.expires_at, NEW.hold_reason, NEW.priority, NEW.events_url)
       IS DISTINCT FROM
       (OLD.to_number, OLD.script_id, OLD.metadata, OLD.status, OLD.attempts,
        OLD.max_attempts, OLD.last_error, OLD.external_call_id, OLD.next_attempt_at,
        OLD.started_at, OLD.ended_at, OLD.timezone, OLD.timezones, OLD.calling_window,
        OLD.not_before, OLD.expires_at, OLD.hold_reason, OLD.priority, OLD.events_url) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- intake_calls() of 009_compliance.sql with priority (absent: 5) and
-- events_url in each input item.
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
            next_attempt_at timestamptz, hold_reason text, priority smallint, events_url text)
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
                           next_attempt_at, hold_reason, priority, events_url)
        SELECT i.id, i.to_number, i.script_id, COALESCE(i.metadata, '{}'), p_max_attempts,
               CASE WHEN i.next_attempt_at IS NULL THEN now() END,
               i.timezone, i.timezones, i.calling_window, i.not_before, i.expires_at,
               i.next_attempt_at, i.hold_reason, COALESCE(i.priority, 5), i.events_url
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

-- ------------------------------------------------- campaign counts ----
--
-- The calls of each campaign by status, kept as calls change, the way
-- 005_status_counts.sql keeps the global counts: a writer adds its delta
-- to its own slot's row (backend pid modulo 16; campaign_create() makes
-- them), never waits for a row another transaction holds (SKIP LOCKED: it
-- takes another, or inserts one with slot NULL), so the many dispatchers
-- settling one campaign's calls do not serialize on a counter.  Readers
-- sum the rows.
--
-- The triggers: INSERT and DELETE statement level with transition tables
-- (a 10 000-call campaign costs one update per status); UPDATE row level
-- WHEN the status of a campaign's call changed, because a statement-level
-- UPDATE trigger would copy every updated row of every statement
-- (publishing, leases, PATCH, single calls) into transition tables.

CREATE TABLE campaign_status_counts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id uuid   NOT NULL REFERENCES campaigns (id),
    status      text   NOT NULL,
    slot        int,              -- NULL: added when the slot's row was held
    n           bigint NOT NULL
);
CREATE UNIQUE INDEX campaign_status_counts_slot_idx
    ON campaign_status_counts (campaign_id, status, slot);

-- Add P_DELTA to campaign P_CAMPAIGN's calls counted under P_STATUS.
CREATE FUNCTION campaign_counts_add(p_campaign uuid, p_status text, p_delta bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_delta = 0 THEN
        RETURN;
    END IF;
    UPDATE campaign_status_counts SET n = n + p_delta
     WHERE id = (SELECT s.id FROM campaign_status_counts s
                  WHERE s.campaign_id = p_campaign AND s.status = p_status
                    AND s.slot = pg_backend_pid() % 16
                  FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        RETURN;
    END IF;
    UPDATE campaign_status_counts SET n = n + p_delta
     WHERE id = (SELECT s.id FROM campaign_status_counts s
                  WHERE s.campaign_id = p_campaign AND s.status = p_status
                  LIMIT 1 FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        RETURN;
    END IF;
    -- slot NULL: an insert that can conflict with nobody's, so never
    -- waits (a slot row another transaction inserted and not yet
    -- committed would make us wait for it while it may be waiting for the
    -- campaign row we hold: a deadlock)
    INSERT INTO campaign_status_counts (campaign_id, status, n)
    VALUES (p_campaign, p_status, p_delta);
END
$$;

-- A row per slot and status for a new campaign, so that writers find
-- their slot's row and never have to insert one.
CREATE FUNCTION campaign_counts_init(p_campaign uuid) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO campaign_status_counts (campaign_id, status, slot, n)
    SELECT p_campaign, s.status, g, 0
      FROM unnest(ARRAY['PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED',
                        'SUPPRESSED', 'EXPIRED']) AS s(status),
           generate_series(0, 15) g
$$;

-- The one place a campaign finishes: a RUNNING campaign none of whose
-- calls is PENDING or IN_PROGRESS any more becomes FINISHED (and a
-- FINISHED one whose call a replay made PENDING again is RUNNING again).
-- Called by the triggers whenever one of P_ID's calls enters or leaves
-- that active set.  The campaign row lock serializes those checks: the
-- last transaction to take it reads the counts (a new snapshot, after
-- the lock) with every earlier one's change committed, so two calls
-- finishing at once cannot both see the other still active.  A PAUSED
-- campaign does not finish here (resume finishes it when nothing is left);
-- CANCELLED is final.  (The events outbox adds campaign.finished where
-- this sets FINISHED.)
CREATE FUNCTION campaign_check_finished(p_id uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_active bigint;
BEGIN
    SELECT c.status INTO v_status FROM campaigns c WHERE c.id = p_id FOR UPDATE;
    IF v_status IS NULL OR v_status NOT IN ('RUNNING', 'FINISHED') THEN
        RETURN;
    END IF;
    SELECT COALESCE(sum(s.n), 0) INTO v_active FROM campaign_status_counts s
     WHERE s.campaign_id = p_id AND s.status IN ('PENDING', 'IN_PROGRESS');
    IF v_status = 'RUNNING' AND v_active = 0 THEN
        UPDATE campaigns SET status = 'FINISHED', finished_at = now(), updated_at = now()
         WHERE id = p_id;
    ELSIF v_status = 'FINISHED' AND v_active > 0 THEN
        UPDATE campaigns SET status = 'RUNNING', finished_at = NULL, updated_at = now()
         WHERE id = p_id;
    END IF;
END
$$;

CREATE FUNCTION calls_campaign_count_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT campaign_id, status, count(*) AS d FROM new_calls
              WHERE campaign_id IS NOT NULL
              GROUP BY campaign_id, status ORDER BY campaign_id, status LOOP
        PERFORM campaign_counts_add(r.campaign_id, r.status, r.d);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION calls_campaign_count_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT campaign_id, status, count(*) AS d FROM old_calls
              WHERE campaign_id IS NOT NULL
              GROUP BY campaign_id, status ORDER BY campaign_id, status LOOP
        PERFORM campaign_counts_add(r.campaign_id, r.status, -r.d);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION calls_campaign_status_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('callorch.bulk_status', true) = 'on' THEN
        RETURN NULL; -- counted once per statement by calls_bulk_counted()
    END IF;
    PERFORM campaign_counts_add(NEW.campaign_id, OLD.status, -1);
    PERFORM campaign_counts_add(NEW.campaign_id, NEW.status, 1);
    IF (OLD.status IN ('PENDING', 'IN_PROGRESS')) <> (NEW.status IN ('PENDING', 'IN_PROGRESS')) THEN
        PERFORM campaign_check_finished(NEW.campaign_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION calls_campaign_count_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM campaign_status_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER calls_campaign_count_inserted AFTER INSERT ON calls
    REFERENCING NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_campaign_count_inserted();

CREATE TRIGGER calls_campaign_count_deleted AFTER DELETE ON calls
    REFERENCING OLD TABLE AS old_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_campaign_count_deleted();

CREATE TRIGGER calls_campaign_status_changed AFTER UPDATE ON calls
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.campaign_id IS NOT NULL)
    EXECUTE FUNCTION calls_campaign_status_changed();

CREATE TRIGGER calls_campaign_count_truncated AFTER TRUNCATE ON calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_campaign_count_truncated();

-- Bulk status changes (a campaign's cancel, the bulk replay: up to 10 000
-- rows).  The row-level triggers add to one counter row per row changed,
-- and a transaction that updates the same row 10 000 times walks a chain
-- of its own row versions each time: 10 000 calls took 5 s for the global
-- counts and 9 s for the campaign's.  So such a statement runs with
-- callorch.bulk_status 'on' (transaction-local, set and reset around it
-- alone); both row triggers then leave the counting to
-- calls_bulk_counted(), which adds each (campaign, old status, new status)
-- group once.  calls_count_status_changed() of 005 gains only that test.
CREATE OR REPLACE FUNCTION calls_count_status_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('callorch.bulk_status', true) = 'on' THEN
        RETURN NULL; -- counted once per statement by calls_bulk_counted()
    END IF;
    PERFORM call_status_counts_add(OLD.status, -1);
    PERFORM call_status_counts_add(NEW.status, 1);
    RETURN NULL;
END
$$;

-- Count what a bulk statement changed: P_GROUPS is a JSON array of
-- {"campaign_id","old","new","n"} (campaign_id null: single calls).  Then
-- the finish check of each campaign whose calls entered or left the
-- active set.
CREATE FUNCTION calls_bulk_counted(p_groups json) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM json_to_recordset(p_groups)
                    AS t(campaign_id uuid, old text, new text, n bigint)
              ORDER BY campaign_id, old, new LOOP
        PERFORM call_status_counts_add(r.old, -r.n);
        PERFORM call_status_counts_add(r.new, r.n);
        IF r.campaign_id IS NOT NULL THEN
            PERFORM campaign_counts_add(r.campaign_id, r.old, -r.n);
            PERFORM campaign_counts_add(r.campaign_id, r.new, r.n);
        END IF;
    END LOOP;
    FOR r IN SELECT DISTINCT t.campaign_id FROM json_to_recordset(p_groups)
                    AS t(campaign_id uuid, old text, new text, n bigint)
              WHERE t.campaign_id IS NOT NULL
                AND (t.old IN ('PENDING', 'IN_PROGRESS')) <> (t.new IN ('PENDING', 'IN_PROGRESS'))
              ORDER BY 1 LOOP
        PERFORM campaign_check_finished(r.campaign_id);
    END LOOP;
END
$$;

-- Calls stored before this migration (015 added the column; none has one
-- unless something wrote them by hand).
INSERT INTO campaign_status_counts (campaign_id, status, n)
SELECT c.campaign_id, c.status, count(*) FROM calls c
 WHERE c.campaign_id IS NOT NULL GROUP BY c.campaign_id, c.status;

-- ------------------------------------------------ campaign resource ----

-- Counts of every status, 0 included, in the order of the call statuses.
CREATE TYPE campaign_counts AS (
    "PENDING" bigint, "IN_PROGRESS" bigint, "COMPLETED" bigint, "FAILED" bigint,
    "CANCELLED" bigint, "SUPPRESSED" bigint, "EXPIRED" bigint);

CREATE FUNCTION campaign_counts_json(p_id uuid) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT row_to_json(ROW(
        COALESCE(sum(s.n) FILTER (WHERE s.status = 'PENDING'), 0),
        COALESCE(sum(s.n) FILTER (WHERE s.status = 'IN_PROGRESS'), 0),
        COALESCE(sum(s.n) FILTER (WHERE s.status = 'COMPLETED'), 0),
        COALESCE(sum(s.n) FILTER (WHERE s.status = 'FAILED'), 0),
        COALESCE(sum(s.n) FILTER (WHERE s.status = 'CANCELLED'), 0),
        COALESCE(sum(s.n) FILTER (WHERE s.status = 'SUPPRESSED'), 0),
        COALESCE(sum(s.n) FILTER (WHERE s.status = 'EXPIRED'), 0))::campaign_counts)
      FROM campaign_status_counts s WHERE s.campaign_id = p_id
$$;

CREATE TYPE campaign_resource AS (
    "id" uuid, "name" text, "scriptId" text, "status" text, "counts" json,
    "maxConcurrent" integer, "callsPerSecond" double precision, "priority" smallint,
    "callingWindow" jsonb, "notBefore" text, "expiresAt" text, "retry" jsonb,
    "maxAttempts" integer, "eventsUrl" text, "metadata" jsonb,
    "createdAt" text, "updatedAt" text, "finishedAt" text);

-- The campaign resource of DESIGN.md section 10, compact, keys in order.
CREATE FUNCTION campaign_json(c campaigns) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT row_to_json(ROW(c.id, c.name, c.script_id, c.status, campaign_counts_json(c.id),
        c.max_concurrent, c.calls_per_second, c.priority, c.calling_window,
        callorch_ts(c.not_before), callorch_ts(c.expires_at), c.retry, c.max_attempts,
        c.events_url, c.metadata, callorch_ts(c.created_at), callorch_ts(c.updated_at),
        callorch_ts(c.finished_at))::campaign_resource)
$$;

-- ------------------------------------------------ creating, adding ----

-- Idempotency-Key of POST /api/v1/campaigns (its own namespace: a key of
-- POST /api/v1/calls names a call).  The answer's rejected list is kept,
-- so a replay answers what the first request did.  The campaign row is
-- inserted after the key (deferred reference) so that a lost key race
-- stores nothing.
CREATE TABLE campaign_idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash bytea       NOT NULL,
    campaign_id  uuid        NOT NULL REFERENCES campaigns (id) DEFERRABLE INITIALLY DEFERRED,
    rejected     json        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 255)
);

-- The message of a rejected item whose number is on the do-not-call list
-- (as the 422 of POST /api/v1/calls says it).
CREATE FUNCTION campaign_listed_rejection(p_ord int) RETURNS json
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('{"index":' || p_ord || ',"errors":[{"field":"to","message":'
            || '"is on the do-not-call list (DELETE /api/v1/dnc/{number} removes it)"}]}')::json
$$;

-- Insert P_CALLS (rows as intake_calls() takes them, without ids or keys)
-- into campaign P_ID, each with P_MAX_ATTEMPTS; numbers on the do-not-call
-- list are left out.  Returns how many were stored and the rejected list:
-- P_REJECTED (what the API refused) with the listed ones merged in, by
-- index.  Nothing is published: the scheduler publishes due calls
-- (published_at NULL), at the pace of the free slots.
CREATE FUNCTION campaign_insert_calls(p_id uuid, p_calls json, p_max_attempts int,
                                      p_rejected json, OUT r_created int, OUT r_rejected json)
LANGUAGE plpgsql AS $$
BEGIN
    WITH input AS (
        SELECT t.*,
               EXISTS (SELECT 1 FROM dnc d WHERE d.number = t.to_number) AS listed
          FROM json_to_recordset(p_calls) AS t(ord int, to_number text,
            script_id text, metadata jsonb, timezone text, timezones text[],
            calling_window jsonb, not_before timestamptz, expires_at timestamptz,
            next_attempt_at timestamptz, hold_reason text, priority smallint, events_url text)
    ), created AS (
        INSERT INTO calls (to_number, script_id, metadata, max_attempts, published_at,
                           timezone, timezones, calling_window, not_before, expires_at,
                           next_attempt_at, hold_reason, priority, events_url, campaign_id)
        SELECT i.to_number, i.script_id, COALESCE(i.metadata, '{}'), p_max_attempts, NULL,
               i.timezone, i.timezones, i.calling_window, i.not_before, i.expires_at,
               i.next_attempt_at, i.hold_reason, COALESCE(i.priority, 5), i.events_url, p_id
          FROM input i WHERE NOT i.listed
        RETURNING 1
    ), rej AS (
        SELECT r.value AS v, (r.value->>'index')::int AS ord
          FROM json_array_elements(COALESCE(p_rejected, '[]')) r
        UNION ALL
        SELECT campaign_listed_rejection(i.ord), i.ord FROM input i WHERE i.listed
    )
    SELECT (SELECT count(*) FROM created),
           COALESCE((SELECT array_to_json(array_agg(rej.v ORDER BY rej.ord)) FROM rej), '[]')
      INTO r_created, r_rejected;
END
$$;

-- POST /api/v1/campaigns: P_CAMPAIGN holds the validated settings
-- (name, script_id, max_concurrent, calls_per_second, priority,
-- calling_window, not_before, expires_at, retry, max_attempts, events_url,
-- metadata), P_CALLS the valid items, P_REJECTED the invalid ones.  One
-- row: ('C', answer) created, ('R', answer) the same key and body again,
-- ('X', NULL) the same key with another body.  The answer is the campaign
-- resource with "rejected" appended.
CREATE FUNCTION campaign_create(p_campaign json, p_calls json, p_rejected json,
                                p_max_attempts int, p_key text, p_hash text)
RETURNS TABLE (r_kind text, r_body json)
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid := gen_random_uuid();
    v_c campaigns;
    v_created int;
    v_rejected json;
    v_key campaign_idempotency_keys;
BEGIN
    IF p_key IS NOT NULL THEN
        INSERT INTO campaign_idempotency_keys (key, request_hash, campaign_id, rejected)
        VALUES (p_key, decode(p_hash, 'hex'), v_id, '[]')
        ON CONFLICT (key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO v_key FROM campaign_idempotency_keys k WHERE k.key = p_key;
            IF v_key.request_hash <> decode(p_hash, 'hex') THEN
                RETURN QUERY SELECT 'X'::text, NULL::json;
                RETURN;
            END IF;
            RETURN QUERY SELECT 'R'::text,
                (left(campaign_json(c)::text, -1) || ',"rejected":' || v_key.rejected::text
                 || '}')::json
              FROM campaigns c WHERE c.id = v_key.campaign_id;
            RETURN;
        END IF;
    END IF;
    INSERT INTO campaigns (id, name, script_id, max_concurrent, calls_per_second, priority,
                           calling_window, not_before, expires_at, retry, max_attempts,
                           events_url, metadata)
    SELECT v_id, t.name, t.script_id, t.max_concurrent, t.calls_per_second,
           COALESCE(t.priority, 5), t.calling_window, t.not_before, t.expires_at, t.retry,
           t.max_attempts, t.events_url, COALESCE(t.metadata, '{}')
      FROM json_to_record(p_campaign) AS t(name text, script_id text, max_concurrent int,
           calls_per_second double precision, priority smallint, calling_window jsonb,
           not_before timestamptz, expires_at timestamptz, retry jsonb, max_attempts int,
           events_url text, metadata jsonb);
    PERFORM campaign_counts_init(v_id);
    SELECT i.r_created, i.r_rejected INTO v_created, v_rejected
      FROM campaign_insert_calls(v_id, p_calls, p_max_attempts, p_rejected) i;
    IF p_key IS NOT NULL THEN
        UPDATE campaign_idempotency_keys SET rejected = v_rejected WHERE key = p_key;
    END IF;
    SELECT * INTO v_c FROM campaigns c WHERE c.id = v_id;
    RETURN QUERY SELECT 'C'::text,
        (left(campaign_json(v_c)::text, -1) || ',"rejected":' || v_rejected::text || '}')::json;
END
$$;

-- The settings a campaign gives the calls added to it, read before the
-- API validates them (the defaults decide each call's first hold).
CREATE FUNCTION campaign_defaults(p_id uuid)
RETURNS TABLE (status text, script_id text, calling_window text, not_before_us bigint,
               expires_at_us bigint, max_attempts int, priority smallint)
LANGUAGE sql STABLE AS $$
    SELECT c.status, c.script_id, c.calling_window::text,
           (extract(epoch FROM c.not_before) * 1000000)::bigint,
           (extract(epoch FROM c.expires_at) * 1000000)::bigint,
           c.max_attempts, c.priority
      FROM campaigns c WHERE c.id = p_id
$$;

-- POST /api/v1/campaigns/{id}/calls.  The campaign row is locked first:
-- a campaign that is FINISHED or CANCELLED takes no calls ('F', its
-- status), and one that takes them cannot finish before they are
-- committed (campaign_check_finished() waits for the lock).  ('N') no
-- such campaign; ('C', {"created":N,"rejected":[…]}).
CREATE FUNCTION campaign_add_calls(p_id uuid, p_calls json, p_rejected json, p_max_attempts int)
RETURNS TABLE (r_kind text, r_body json)
LANGUAGE plpgsql AS $$
DECLARE
    v_c campaigns;
    v_created int;
    v_rejected json;
BEGIN
    SELECT * INTO v_c FROM campaigns c WHERE c.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'N'::text, NULL::json;
        RETURN;
    END IF;
    IF v_c.status IN ('FINISHED', 'CANCELLED') THEN
        RETURN QUERY SELECT 'F'::text, campaign_json(v_c);
        RETURN;
    END IF;
    SELECT i.r_created, i.r_rejected INTO v_created, v_rejected
      FROM campaign_insert_calls(p_id, p_calls, COALESCE(v_c.max_attempts, p_max_attempts),
                                 p_rejected) i;
    UPDATE campaigns SET updated_at = now() WHERE id = p_id;
    RETURN QUERY SELECT 'C'::text,
        json_build_object('created', v_created, 'rejected', v_rejected);
END
$$;

-- -------------------------------------------- pause, resume, cancel ----

-- P_ACTION 'pause' (RUNNING → PAUSED), 'resume' (PAUSED → RUNNING, or
-- FINISHED when nothing of it is left to do), 'cancel' (RUNNING or
-- PAUSED → CANCELLED, its PENDING calls CANCELLED).  Pausing a PAUSED
-- campaign or resuming a RUNNING one changes nothing and answers it.
-- ('O', campaign), ('F', campaign) from a final state, ('N') none.
--
-- Cancel takes the campaign row first, so that the calls' triggers find
-- it CANCELLED and leave it; the calls are taken with SKIP LOCKED: one
-- that another transaction is changing right now (a start, the expiry
-- sweep) is left to that change, which never waits for us while holding
-- it and so cannot deadlock with us.
CREATE FUNCTION campaign_set_status(p_id uuid, p_action text)
RETURNS TABLE (r_kind text, r_body json)
LANGUAGE plpgsql AS $$
DECLARE
    v_c campaigns;
    v_active bigint;
BEGIN
    SELECT * INTO v_c FROM campaigns c WHERE c.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'N'::text, NULL::json;
        RETURN;
    END IF;
    IF v_c.status IN ('FINISHED', 'CANCELLED') THEN
        RETURN QUERY SELECT 'F'::text, campaign_json(v_c);
        RETURN;
    END IF;
    IF p_action = 'pause' AND v_c.status = 'RUNNING' THEN
        UPDATE campaigns SET status = 'PAUSED', updated_at = now() WHERE id = p_id;
    ELSIF p_action = 'resume' AND v_c.status = 'PAUSED' THEN
        UPDATE campaigns SET status = 'RUNNING', updated_at = now() WHERE id = p_id;
        PERFORM campaign_check_finished(p_id); -- nothing left: FINISHED, there only
    ELSIF p_action = 'cancel' THEN
        UPDATE campaigns SET status = 'CANCELLED', finished_at = now(), updated_at = now()
         WHERE id = p_id;
        PERFORM set_config('callorch.bulk_status', 'on', true);
        WITH upd AS (
            UPDATE calls SET status = 'CANCELLED', ended_at = now(), next_attempt_at = NULL,
                             published_at = NULL, hold_reason = NULL
             WHERE id IN (SELECT k.id FROM calls k
                           WHERE k.campaign_id = p_id AND k.status = 'PENDING'
                           FOR UPDATE SKIP LOCKED)
            RETURNING 1
        )
        SELECT count(*) INTO v_active FROM upd;
        PERFORM set_config('callorch.bulk_status', 'off', true);
        PERFORM calls_bulk_counted(json_build_array(json_build_object('campaign_id', p_id,
            'old', 'PENDING', 'new', 'CANCELLED', 'n', v_active)));
    END IF;
    RETURN QUERY SELECT 'O'::text, campaign_json(c) FROM campaigns c WHERE c.id = p_id;
END
$$;

-- ------------------------------------------------------------ replay ----
--
-- A dead letter (FAILED, EXPIRED, SUPPRESSED) goes back to PENDING with a
-- fresh budget: max_attempts := attempts + the budget, so the attempt log
-- stays as it is and attempt numbers keep increasing (they name Kafka
-- messages and provider references "<id>:<attempt>").  Its expiry is
-- cleared when it has passed (an EXPIRED call would expire again at
-- once), unless the request sets a new one.  Not published: due now, the
-- scheduler publishes it on its next tick; with a notBefore still ahead
-- (the request's, else its own) it is held ("schedule") until then; the
-- calling window is the dispatcher's to check, as for any due call.  A number on the do-not-call list stays
-- suppressed; a call of a CANCELLED campaign stays as it is; a call of a
-- FINISHED campaign makes it RUNNING again (campaign_check_finished()).

-- One call.  P_BUDGET NULL: the campaign's maxAttempts, else P_DEFAULT.
-- ('O', call), ('S', call) not a dead letter, ('L', call) its number is
-- listed, ('K', call) its campaign is CANCELLED, ('E', call) its expiry
-- would not be after its notBefore, ('N') none.
CREATE FUNCTION call_retry(p_id uuid, p_budget int, p_default int, p_not_before timestamptz,
                           p_expires_given boolean, p_expires_at timestamptz)
RETURNS TABLE (r_kind text, r_body json)
LANGUAGE plpgsql AS $$
DECLARE
    v calls;
    v_campaign text;
BEGIN
    SELECT * INTO v FROM calls c WHERE c.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'N'::text, NULL::json;
        RETURN;
    END IF;
    SELECT m.status INTO v_campaign FROM campaigns m WHERE m.id = v.campaign_id;
    IF v.status NOT IN ('FAILED', 'EXPIRED', 'SUPPRESSED') THEN
        RETURN QUERY SELECT 'S'::text, call_json(v);
    ELSIF EXISTS (SELECT 1 FROM dnc d WHERE d.number = v.to_number) THEN
        RETURN QUERY SELECT 'L'::text, call_json(v);
    ELSIF v_campaign = 'CANCELLED' THEN
        RETURN QUERY SELECT 'K'::text, call_json(v);
    ELSIF (CASE WHEN p_expires_given THEN p_expires_at
                WHEN v.expires_at <= now() THEN NULL ELSE v.expires_at END)
          <= COALESCE(p_not_before, v.not_before) THEN
        RETURN QUERY SELECT 'E'::text, call_json(v);
    ELSE
        RETURN QUERY
        WITH u AS (
        UPDATE calls c
           SET status = 'PENDING', ended_at = NULL, slot_owner = NULL, published_at = NULL,
               max_attempts = c.attempts + COALESCE(p_budget,
                   (SELECT m.max_attempts FROM campaigns m WHERE m.id = c.campaign_id), p_default),
               not_before = COALESCE(p_not_before, c.not_before),
               expires_at = CASE WHEN p_expires_given THEN p_expires_at
                                 WHEN c.expires_at <= now() THEN NULL ELSE c.expires_at END,
               next_attempt_at = CASE WHEN COALESCE(p_not_before, c.not_before) > now()
                                      THEN COALESCE(p_not_before, c.not_before) END,
               hold_reason = CASE WHEN COALESCE(p_not_before, c.not_before) > now()
                                  THEN 'schedule' END
         WHERE c.id = p_id
        RETURNING call_json(c) AS b)
        SELECT 'O'::text, u.b FROM u;
    END IF;
END
$$;

-- In bulk: up to P_LIMIT dead letters matching the filter (P_STATUS NULL:
-- all three; the others NULL: no condition; P_LAST_ERROR exact), oldest
-- first, those whose number is listed, whose campaign is CANCELLED or that
-- another transaction holds left out.  Returns how many.
CREATE FUNCTION calls_retry_bulk(p_status text, p_campaign uuid, p_last_error text,
                                 p_created_before timestamptz, p_limit int, p_budget int,
                                 p_default int)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_groups json;
BEGIN
    PERFORM set_config('callorch.bulk_status', 'on', true);
    WITH pick AS (
        SELECT k.id, k.status, k.campaign_id FROM calls k
         WHERE k.status IN ('FAILED', 'EXPIRED', 'SUPPRESSED')
           AND (p_status IS NULL OR k.status = p_status)
           AND (p_campaign IS NULL OR k.campaign_id = p_campaign)
           AND (p_last_error IS NULL OR k.last_error = p_last_error)
           AND (p_created_before IS NULL OR k.created_at < p_created_before)
           AND NOT EXISTS (SELECT 1 FROM dnc d WHERE d.number = k.to_number)
           AND NOT EXISTS (SELECT 1 FROM campaigns m
                            WHERE m.id = k.campaign_id AND m.status = 'CANCELLED')
         ORDER BY k.created_at, k.id
         LIMIT p_limit
         FOR UPDATE OF k SKIP LOCKED
    ), upd AS (
        UPDATE calls c
           SET status = 'PENDING', ended_at = NULL, slot_owner = NULL, published_at = NULL,
               max_attempts = c.attempts + COALESCE(p_budget,
                   (SELECT m.max_attempts FROM campaigns m WHERE m.id = c.campaign_id), p_default),
               expires_at = CASE WHEN c.expires_at <= now() THEN NULL ELSE c.expires_at END,
               next_attempt_at = CASE WHEN c.not_before > now() THEN c.not_before END,
               hold_reason = CASE WHEN c.not_before > now() THEN 'schedule' END
          FROM pick p
         WHERE c.id = p.id
        RETURNING p.campaign_id, p.status AS old
    )
    SELECT COALESCE(array_to_json(array_agg(g)), '[]') INTO v_groups
      FROM (SELECT u.campaign_id, u.old, 'PENDING' AS new, count(*) AS n
              FROM upd u GROUP BY u.campaign_id, u.old) g;
    PERFORM set_config('callorch.bulk_status', 'off', true);
    PERFORM calls_bulk_counted(v_groups);
    RETURN (SELECT COALESCE(sum(t.n), 0)::int
              FROM json_to_recordset(v_groups) AS t(campaign_id uuid, old text, new text, n bigint));
END
$$;
