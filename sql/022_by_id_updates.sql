-- 022_by_id_updates.sql — the updates of one call by its id find it by
-- the primary key, whatever the statistics say.
--
-- Owns: start_attempt(), suppress_if_listed(), hold_call() (replacing 009's
-- and 008's), settle_attempt() (020's) and record_attempt_call_id() (004's).
-- The same rule is followed by src/store/attempts.c (EXPIRE_SQL, PARK_SQL)
-- and src/store/calls.c (PATCH, cancel).
--
-- Why: "c.id = p_id AND c.status = 'PENDING'" makes every index WHERE
-- status = 'PENDING' a candidate (calls_pending_number_idx,
-- calls_publish_prio_idx), read whole and filtered on the id; with
-- 'IN_PROGRESS', calls_one_in_progress_per_number and
-- calls_in_progress_started_idx.  A VACUUM or ANALYZE that ran when no call
-- had that status leaves such an index with reltuples = 0, and the planner
-- then believes reading it whole costs less than one lookup in the primary
-- key, until the next one.  A backlog that arrives meanwhile is walked once
-- per start or settle: the more calls wait, the slower each goes
-- (t/95-plans.t builds that case).  "IS NOT DISTINCT FROM" means the same
-- as "=" here (status is NOT NULL) but proves no index predicate, so the
-- primary key is the only index these statements can use.  021 removed the
-- first index found this way.
--
-- Each function is given whole: a migration that has run is never edited,
-- so replacing one statement means replacing its function.
CREATE OR REPLACE FUNCTION suppress_if_listed(p_id uuid, p_attempt int, p_to text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE calls c
       SET status = 'SUPPRESSED', ended_at = now(), next_attempt_at = NULL,
           published_at = NULL, last_error = 'number is on the do-not-call list'
     WHERE c.id = p_id AND c.status IS NOT DISTINCT FROM 'PENDING'
       AND c.attempts = p_attempt - 1 AND c.due_at <= now() AND c.to_number = p_to
       AND EXISTS (SELECT 1 FROM dnc d WHERE d.number = p_to);
    RETURN FOUND;
END
$$;

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
         WHERE c.id = p_id AND c.status IS NOT DISTINCT FROM 'PENDING'
           AND c.attempts = p_attempt - 1 AND c.due_at <= now() AND c.to_number = p_to
           AND (c.expires_at IS NULL OR c.expires_at > now())
        RETURNING c.id, c.attempts, c.script_id, c.metadata
    ), att AS (
        INSERT INTO call_attempts (call_id, attempt) SELECT u.id, u.attempts FROM upd u
    )
    SELECT 'IN_PROGRESS'::text, u.script_id, u.metadata::text FROM upd u;
END
$$;

CREATE OR REPLACE FUNCTION hold_call(p_id uuid, p_attempt int, p_until timestamptz, p_reason text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE calls c
       SET next_attempt_at = p_until, hold_reason = p_reason, published_at = NULL
     WHERE c.id = p_id AND c.status IS NOT DISTINCT FROM 'PENDING'
       AND c.attempts = p_attempt - 1;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION record_attempt_call_id(p_id uuid, p_attempt int, p_external text,
                                                  p_known boolean)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE calls c SET external_call_id = p_external
     WHERE c.id = p_id AND c.attempts = p_attempt
       AND c.status IS NOT DISTINCT FROM 'IN_PROGRESS';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE call_attempts a
       SET external_call_id = COALESCE(a.external_call_id, p_external),
           outcome_unknown_since = CASE WHEN p_known THEN NULL ELSE a.outcome_unknown_since END
     WHERE a.call_id = p_id AND a.attempt = p_attempt AND a.ended_at IS NULL;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION settle_attempt(p_id uuid, p_attempt int, p_outcome text, p_error text,
                                          p_external text, p_retry boolean, p_base_ms bigint,
                                          p_max_ms bigint, p_min_delay_ms bigint,
                                          p_retry_ms bigint DEFAULT 0)
RETURNS TABLE (status text, to_number text, slot_owner text)
LANGUAGE plpgsql AS $$
DECLARE
    v_rule_ms bigint;
    v_retry boolean;
BEGIN
    SELECT retry_rule_ms(k.retry ->> lower(p_outcome)) INTO v_rule_ms
      FROM calls c LEFT JOIN campaigns k ON k.id = c.campaign_id
     WHERE c.id = p_id
       FOR UPDATE OF c;
    v_rule_ms := COALESCE(v_rule_ms, p_retry_ms);
    v_retry := p_outcome <> 'COMPLETED' AND p_retry AND v_rule_ms >= 0;
    UPDATE call_attempts a
       SET ended_at = now(), outcome = p_outcome, error = p_error,
           external_call_id = COALESCE(a.external_call_id, p_external),
           outcome_unknown_since = NULL
     WHERE a.call_id = p_id AND a.attempt = p_attempt AND a.ended_at IS NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE calls c
       SET status = CASE
               WHEN p_outcome = 'COMPLETED' THEN 'COMPLETED'
               WHEN v_retry AND c.attempts < c.max_attempts THEN 'PENDING'
               ELSE 'FAILED' END,
           next_attempt_at = CASE
               WHEN v_retry AND c.attempts < c.max_attempts
               THEN now() + retry_delay_ms(p_attempt, p_base_ms, p_max_ms, p_min_delay_ms,
                                           v_rule_ms) * interval '1 millisecond' END,
           ended_at = CASE
               WHEN NOT v_retry OR c.attempts >= c.max_attempts THEN now() END,
           last_error = CASE WHEN p_outcome = 'COMPLETED' THEN NULL ELSE p_error END,
           external_call_id = COALESCE(c.external_call_id, p_external),
           published_at = NULL
     WHERE c.id = p_id AND c.attempts = p_attempt
       AND c.status IS NOT DISTINCT FROM 'IN_PROGRESS'
    RETURNING c.status, c.to_number, c.slot_owner;
END
$$;
