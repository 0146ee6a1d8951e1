-- 022_by_id_updates.sql — the dispatcher's updates of one PENDING call find
-- it by its primary key, whatever the statistics say.
--
-- Owns: start_attempt(), suppress_if_listed() and hold_call() (replacing
-- 009's and 008's).  The same rule is followed by the statements of
-- src/store/attempts.c (EXPIRE_SQL, PARK_SQL).
--
-- Why: "c.id = p_id AND c.status = 'PENDING'" makes every index WHERE
-- status = 'PENDING' a candidate (calls_pending_number_idx,
-- calls_publish_prio_idx), read whole and filtered on the id.  A VACUUM or
-- ANALYZE that ran when no call was PENDING leaves such an index with
-- reltuples = 0, and the planner then believes reading it whole costs less
-- than one lookup in the primary key, until the next one.  A backlog that
-- arrives meanwhile is walked once per start: the more calls wait, the
-- slower each starts (t/95-plans.t builds that case).  "IS NOT DISTINCT
-- FROM" means the same as "=" here (status is NOT NULL) but proves no
-- index predicate, so the primary key is the only index these statements
-- can use.  021 removed the first index found this way.
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
