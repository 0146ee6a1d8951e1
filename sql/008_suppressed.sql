-- 008_suppressed.sql — the status SUPPRESSED and the opt-out disposition
-- (DESIGN.md sections 4 and 9).
--
-- Owns: the status SUPPRESSED (terminal, like CANCELLED: a call whose
-- number was on the do-not-call list when it would have been dialled), the
-- dial-time check (suppress_if_listed(), called by start_attempt(), which
-- replaces the dispatcher's start statement of src/store/attempts.c), and
-- the new apply_webhook() with P_DISPOSITION: "OPT_OUT" lists the number
-- (source 'opt-out:<call id>') and suppresses its PENDING calls, in the
-- webhook's own transaction.
--
-- A suppressed call was never dialled: it has no attempt row for the
-- suppression, attempts counts only what was dialled, ended_at is when it
-- was suppressed and last_error says why.

ALTER TABLE calls DROP CONSTRAINT calls_status_check;
ALTER TABLE calls ADD CONSTRAINT calls_status_check CHECK
    (status IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED', 'SUPPRESSED'));

-- The counters of 005_status_counts.sql: a row per slot for the new status,
-- as the others have.
INSERT INTO call_status_counts (status, slot, n)
SELECT 'SUPPRESSED', g, 0 FROM generate_series(0, 63) g;

-- The retention of finished calls (006_retention.sql) deletes terminal
-- calls by this index: SUPPRESSED is terminal too.
DROP INDEX calls_finished_idx;
CREATE INDEX calls_finished_idx ON calls (ended_at)
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'SUPPRESSED');

-- An opt-out suppresses the PENDING calls of one number: found by this
-- index, as small as the backlog.
CREATE INDEX calls_pending_number_idx ON calls (to_number) WHERE status = 'PENDING';

-- Suppress call P_ID when it could start attempt P_ATTEMPT now (due,
-- PENDING, that attempt next, still for number P_TO) and P_TO is on the
-- do-not-call list.  Returns whether it did.  The dispatcher calls it
-- when the call it loaded is listed (before taking a slot), and
-- start_attempt() calls it first (the list may have changed since).
CREATE FUNCTION suppress_if_listed(p_id uuid, p_attempt int, p_to text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE calls c
       SET status = 'SUPPRESSED', ended_at = now(), next_attempt_at = NULL,
           published_at = NULL, last_error = 'number is on the do-not-call list'
     WHERE c.id = p_id AND c.status = 'PENDING' AND c.attempts = p_attempt - 1
       AND c.due_at <= now() AND c.to_number = p_to
       AND EXISTS (SELECT 1 FROM dnc d WHERE d.number = p_to);
    RETURN FOUND;
END
$$;

-- Move a due PENDING call to IN_PROGRESS as attempt P_ATTEMPT with
-- P_OWNER as the lease token of its slot, and record the attempt; only
-- when it is still for the number locked (P_TO: a PATCH may have changed
-- it) and that number is not on the do-not-call list — a listed one is
-- suppressed instead.  Returns one row ('IN_PROGRESS', script_id,
-- metadata) when the call started, ('SUPPRESSED', NULL, NULL) when it was
-- suppressed, none when it did not qualify (a race lost).  A second call
-- IN_PROGRESS for the number raises 23505 (calls_one_in_progress_per_number).
CREATE FUNCTION start_attempt(p_id uuid, p_attempt int, p_to text, p_owner text)
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
               slot_owner = p_owner
         WHERE c.id = p_id AND c.status = 'PENDING' AND c.attempts = p_attempt - 1
           AND c.due_at <= now() AND c.to_number = p_to
        RETURNING c.id, c.attempts, c.script_id, c.metadata
    ), att AS (
        INSERT INTO call_attempts (call_id, attempt) SELECT u.id, u.attempts FROM upd u
    )
    SELECT 'IN_PROGRESS'::text, u.script_id, u.metadata::text FROM upd u;
END
$$;

-- apply_webhook() of 004_unknown_outcomes.sql with one more parameter,
-- P_DISPOSITION (NULL or 'OPT_OUT'; the API refuses any other), and one
-- more column, opted_out: NULL without an opt-out, else how many other
-- PENDING calls of the number it suppressed.  The old signature is dropped (a new
-- parameter makes a new function); the default keeps a 7-argument call
-- working.
--
-- OPT_OUT, when the webhook is applied or late (the person said "stop"
-- whatever the daemon's bookkeeping of the attempt), not when it is a
-- duplicate webhook-id (applied once already): the call's number goes on
-- the do-not-call list with source 'opt-out:<call id>' (an existing entry
-- is kept), and every PENDING call of that number — this call's own planned
-- retry included — ends SUPPRESSED (status 'SUPPRESSED' in the answer).
-- The webhook's call is locked first (settle_attempt()), then the others
-- in id order.
DROP FUNCTION apply_webhook(text, uuid, int, text, text, bigint, bigint);

CREATE FUNCTION apply_webhook(p_webhook_id text, p_call_id uuid, p_attempt int,
                              p_external text, p_outcome text, p_base_ms bigint,
                              p_max_ms bigint, p_disposition text DEFAULT NULL)
RETURNS TABLE (result text, call_id uuid, attempt int, status text, to_number text,
               slot_owner text, opted_out int)
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid := p_call_id;
    v_attempt int := p_attempt;
    v_status text;
    v_to text;
    v_owner text;
    v_number text;
    v_suppressed int;
    v_self_suppressed boolean;
BEGIN
    IF v_id IS NULL OR v_attempt IS NULL THEN
        SELECT a.call_id, a.attempt INTO v_id, v_attempt
          FROM call_attempts a WHERE a.external_call_id = p_external
         ORDER BY a.attempt DESC LIMIT 1;
    END IF;
    IF v_id IS NULL OR NOT EXISTS (SELECT 1 FROM calls c WHERE c.id = v_id) THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::uuid, NULL::int, NULL::text, NULL::text,
                            NULL::text, NULL::int;
        RETURN;
    END IF;
    IF p_webhook_id IS NOT NULL THEN
        INSERT INTO webhook_events (id, call_id) VALUES (p_webhook_id, v_id)
            ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'duplicate'::text, v_id, v_attempt, NULL::text, NULL::text,
                                NULL::text, NULL::int;
            RETURN;
        END IF;
    END IF;
    SELECT s.status, s.to_number, s.slot_owner INTO v_status, v_to, v_owner
      FROM settle_attempt(v_id, v_attempt, p_outcome,
                          CASE WHEN p_outcome = 'COMPLETED' THEN NULL
                               ELSE 'provider reported ' || p_outcome END,
                          p_external, p_outcome <> 'COMPLETED', p_base_ms, p_max_ms, 0) s;
    IF v_status IS NULL AND p_outcome = 'COMPLETED' THEN
        -- calls first, then call_attempts (the order of settle_attempt)
        UPDATE calls c
           SET status = 'COMPLETED', ended_at = now(), next_attempt_at = NULL,
               last_error = NULL, published_at = NULL,
               external_call_id = COALESCE(p_external, c.external_call_id)
         WHERE c.id = v_id AND c.attempts = v_attempt AND c.status = 'PENDING'
           AND EXISTS (SELECT 1 FROM call_attempts a
                        WHERE a.call_id = v_id AND a.attempt = v_attempt
                          AND a.outcome = 'TIMEOUT')
        RETURNING c.status, c.to_number, c.slot_owner INTO v_status, v_to, v_owner;
        IF v_status IS NOT NULL THEN
            UPDATE call_attempts a
               SET outcome = 'COMPLETED', error = NULL,
                   external_call_id = COALESCE(a.external_call_id, p_external)
             WHERE a.call_id = v_id AND a.attempt = v_attempt;
        END IF;
    END IF;
    IF p_disposition = 'OPT_OUT' THEN
        -- the webhook's call is locked already (settle_attempt)
        SELECT c.to_number INTO v_number FROM calls c WHERE c.id = v_id FOR UPDATE;
        INSERT INTO dnc (number, reason, source)
        VALUES (v_number, 'opted out during a call', 'opt-out:' || v_id)
            ON CONFLICT (number) DO NOTHING;
        WITH locked AS (
            SELECT c.id FROM calls c
             WHERE c.to_number = v_number AND c.status = 'PENDING'
             ORDER BY c.id FOR UPDATE
        ), sup AS (
            UPDATE calls c
               SET status = 'SUPPRESSED', ended_at = now(), next_attempt_at = NULL,
                   published_at = NULL,
                   last_error = 'number opted out during call ' || v_id
              FROM locked l
             WHERE c.id = l.id AND c.status = 'PENDING'
            RETURNING c.id
        )
        SELECT count(*) FILTER (WHERE s.id <> v_id), COALESCE(bool_or(s.id = v_id), false)
          INTO v_suppressed, v_self_suppressed
          FROM sup s;
        -- a retry of this call planned just now is suppressed too
        IF v_self_suppressed AND v_status IS NOT NULL THEN
            v_status := 'SUPPRESSED';
        END IF;
    END IF;
    IF v_status IS NULL THEN
        RETURN QUERY SELECT 'late'::text, v_id, v_attempt, NULL::text, NULL::text, NULL::text,
                            v_suppressed;
    ELSE
        RETURN QUERY SELECT 'applied'::text, v_id, v_attempt, v_status, v_to, v_owner,
                            v_suppressed;
    END IF;
END
$$;
