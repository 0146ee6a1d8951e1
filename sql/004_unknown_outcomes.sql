-- 004_unknown_outcomes.sql — attempts whose outcome at the provider is not
-- known (DESIGN.md section 5, "Unknown outcomes"), one lock order for every
-- path that ends an attempt, and the webhook of an attempt given up on.
--
-- Owns: call_attempts.outcome_unknown_since / looked_up_at, and the new
-- versions of settle_attempt() and apply_webhook() (002_dispatch.sql).

-- Set when the start request of this attempt got no answer the daemon can
-- trust (a timeout or a lost connection after it was sent, a 2xx without a
-- valid callId): the call stays IN_PROGRESS with its slot and phone lock,
-- and the scheduler looks its status up ([provider] status_url) until it is
-- known.  Also set by the reclaim at call_timeout when status_url is set:
-- the status is looked up before the attempt is given up.  Cleared when the
-- provider's callId is known, or when the attempt ends.
ALTER TABLE call_attempts ADD COLUMN outcome_unknown_since timestamptz;
-- When the status of this attempt was last looked up.
ALTER TABLE call_attempts ADD COLUMN looked_up_at timestamptz;

CREATE INDEX call_attempts_unknown_idx ON call_attempts (outcome_unknown_since)
    WHERE outcome_unknown_since IS NOT NULL AND ended_at IS NULL;

-- As in 002_dispatch.sql, with one change: the call's row is locked before
-- the attempt's.  The reclaim locks calls (FOR UPDATE) and then settles,
-- which updates call_attempts; the old version updated call_attempts first
-- and calls second, so a webhook and a reclaim of one call at the
-- call_timeout boundary could each hold the row the other waited for
-- (deadlock).  Every path now takes calls, then call_attempts.
CREATE OR REPLACE FUNCTION settle_attempt(p_id uuid, p_attempt int, p_outcome text,
                                          p_error text, p_external text, p_retry boolean,
                                          p_base_ms bigint, p_max_ms bigint,
                                          p_min_delay_ms bigint)
RETURNS TABLE (status text, to_number text, slot_owner text)
LANGUAGE plpgsql AS $$
DECLARE
    delay_ms double precision;
BEGIN
    PERFORM 1 FROM calls c WHERE c.id = p_id FOR UPDATE;
    UPDATE call_attempts a
       SET ended_at = now(), outcome = p_outcome, error = p_error,
           external_call_id = COALESCE(a.external_call_id, p_external),
           outcome_unknown_since = NULL
     WHERE a.call_id = p_id AND a.attempt = p_attempt AND a.ended_at IS NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- jitter only downwards, so backoff_max is a hard ceiling
    delay_ms := least(p_base_ms * power(2, p_attempt - 1), p_max_ms)
                * (0.8 + 0.2 * random());
    delay_ms := least(greatest(delay_ms, p_min_delay_ms), greatest(p_max_ms, p_min_delay_ms));
    RETURN QUERY
    UPDATE calls c
       SET status = CASE
               WHEN p_outcome = 'COMPLETED' THEN 'COMPLETED'
               WHEN p_retry AND c.attempts < c.max_attempts THEN 'PENDING'
               ELSE 'FAILED' END,
           next_attempt_at = CASE
               WHEN p_outcome <> 'COMPLETED' AND p_retry AND c.attempts < c.max_attempts
               THEN now() + delay_ms * interval '1 millisecond' END,
           ended_at = CASE
               WHEN p_outcome = 'COMPLETED' OR NOT p_retry OR c.attempts >= c.max_attempts
               THEN now() END,
           last_error = CASE WHEN p_outcome = 'COMPLETED' THEN NULL ELSE p_error END,
           external_call_id = COALESCE(c.external_call_id, p_external),
           published_at = NULL
     WHERE c.id = p_id AND c.attempts = p_attempt AND c.status = 'IN_PROGRESS'
    RETURNING c.status, c.to_number, c.slot_owner;
END
$$;

-- As in 002_dispatch.sql, plus: a COMPLETED report for an attempt that the
-- daemon gave up on (reclaimed at call_timeout: outcome TIMEOUT) of a call
-- now PENDING for a retry that has not started (the attempt is still the
-- call's latest) completes the call — the provider did complete it.  Every
-- other late or repeated webhook still changes nothing ('late').
CREATE OR REPLACE FUNCTION apply_webhook(p_webhook_id text, p_call_id uuid, p_attempt int,
                                         p_external text, p_outcome text, p_base_ms bigint,
                                         p_max_ms bigint)
RETURNS TABLE (result text, call_id uuid, attempt int, status text, to_number text,
               slot_owner text)
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid := p_call_id;
    v_attempt int := p_attempt;
    v_status text;
    v_to text;
    v_owner text;
BEGIN
    IF v_id IS NULL OR v_attempt IS NULL THEN
        SELECT a.call_id, a.attempt INTO v_id, v_attempt
          FROM call_attempts a WHERE a.external_call_id = p_external
         ORDER BY a.attempt DESC LIMIT 1;
    END IF;
    IF v_id IS NULL OR NOT EXISTS (SELECT 1 FROM calls c WHERE c.id = v_id) THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::uuid, NULL::int, NULL::text, NULL::text,
                            NULL::text;
        RETURN;
    END IF;
    IF p_webhook_id IS NOT NULL THEN
        INSERT INTO webhook_events (id, call_id) VALUES (p_webhook_id, v_id)
            ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'duplicate'::text, v_id, v_attempt, NULL::text, NULL::text,
                                NULL::text;
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
    IF v_status IS NULL THEN
        RETURN QUERY SELECT 'late'::text, v_id, v_attempt, NULL::text, NULL::text, NULL::text;
    ELSE
        RETURN QUERY SELECT 'applied'::text, v_id, v_attempt, v_status, v_to, v_owner;
    END IF;
END
$$;

-- Record the provider's callId P_EXTERNAL for attempt P_ATTEMPT of call P_ID
-- while that attempt is the call's current one and has not ended; with
-- P_KNOWN the attempt's outcome is known from now on (outcome_unknown_since
-- cleared).  Locks calls, then call_attempts (the order of settle_attempt).
-- Returns whether the attempt was still open.
CREATE FUNCTION record_attempt_call_id(p_id uuid, p_attempt int, p_external text,
                                       p_known boolean)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE calls c SET external_call_id = p_external
     WHERE c.id = p_id AND c.attempts = p_attempt AND c.status = 'IN_PROGRESS';
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
