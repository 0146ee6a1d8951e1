-- 010_retry_rules.sql — each outcome's retry rule (DESIGN.md section 9,
-- "Outcomes", and the [retry] block of section 6).
--
-- Owns: settle_attempt() and apply_webhook() with one more parameter,
-- P_RETRY_MS, the rule of the outcome being settled as the daemon computed
-- it from [retry] (src/dispatch/attempt.c, attempt_retry_ms()):
--   -1  never: the call ends FAILED now, whatever attempts remain;
--    0  backoff: the exponential rule of section 3 (backoff_base ×
--       2^(attempt−1) with downward jitter, capped at backoff_max, at least
--       P_MIN_DELAY_MS, the provider's Retry-After);
--   >0  a fixed delay: next_attempt_at = now() + P_RETRY_MS (no jitter: the
--       operator asked for that delay), at least P_MIN_DELAY_MS.
-- The rule lives in the configuration, not the database, so that a reload
-- changes it without a migration; PostgreSQL only applies what it is given.
-- max_attempts exhausted still ends the call FAILED; P_RETRY false (a 4xx
-- refusal) still never retries.
--
-- The old signatures are dropped (a new parameter makes a new function, and
-- a stale overload would keep settling by backoff); P_RETRY_MS defaults to
-- 0, the rule that every outcome had before, so a call written for the old
-- signature means what it meant.  The lock order stays calls, then
-- call_attempts (004_unknown_outcomes.sql).

DROP FUNCTION apply_webhook(text, uuid, int, text, text, bigint, bigint, text);
DROP FUNCTION settle_attempt(uuid, int, text, text, text, boolean, bigint, bigint, bigint);

-- The delay before the next attempt, ms, for a settle that retries.
CREATE FUNCTION retry_delay_ms(p_attempt int, p_base_ms bigint, p_max_ms bigint,
                               p_min_delay_ms bigint, p_retry_ms bigint)
RETURNS double precision
LANGUAGE sql VOLATILE AS $$
    SELECT CASE
        WHEN p_retry_ms > 0 THEN greatest(p_retry_ms, p_min_delay_ms)::double precision
        -- jitter only downwards, so backoff_max is a hard ceiling
        ELSE least(greatest(least(p_base_ms * power(2, p_attempt - 1), p_max_ms)
                            * (0.8 + 0.2 * random()), p_min_delay_ms),
                   greatest(p_max_ms, p_min_delay_ms)) END
$$;

-- As in 004_unknown_outcomes.sql, plus P_RETRY_MS (above).
CREATE FUNCTION settle_attempt(p_id uuid, p_attempt int, p_outcome text, p_error text,
                               p_external text, p_retry boolean, p_base_ms bigint,
                               p_max_ms bigint, p_min_delay_ms bigint,
                               p_retry_ms bigint DEFAULT 0)
RETURNS TABLE (status text, to_number text, slot_owner text)
LANGUAGE plpgsql AS $$
DECLARE
    v_retry boolean := p_outcome <> 'COMPLETED' AND p_retry AND p_retry_ms >= 0;
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
    RETURN QUERY
    UPDATE calls c
       SET status = CASE
               WHEN p_outcome = 'COMPLETED' THEN 'COMPLETED'
               WHEN v_retry AND c.attempts < c.max_attempts THEN 'PENDING'
               ELSE 'FAILED' END,
           next_attempt_at = CASE
               WHEN v_retry AND c.attempts < c.max_attempts
               THEN now() + retry_delay_ms(p_attempt, p_base_ms, p_max_ms, p_min_delay_ms,
                                           p_retry_ms) * interval '1 millisecond' END,
           ended_at = CASE
               WHEN NOT v_retry OR c.attempts >= c.max_attempts THEN now() END,
           last_error = CASE WHEN p_outcome = 'COMPLETED' THEN NULL ELSE p_error END,
           external_call_id = COALESCE(c.external_call_id, p_external),
           published_at = NULL
     WHERE c.id = p_id AND c.attempts = p_attempt AND c.status = 'IN_PROGRESS'
    RETURNING c.status, c.to_number, c.slot_owner;
END
$$;

-- As in 008_suppressed.sql, plus P_RETRY_MS, the rule of P_OUTCOME, handed
-- to settle_attempt().
CREATE FUNCTION apply_webhook(p_webhook_id text, p_call_id uuid, p_attempt int,
                              p_external text, p_outcome text, p_base_ms bigint,
                              p_max_ms bigint, p_disposition text DEFAULT NULL,
                              p_retry_ms bigint DEFAULT 0)
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
                          p_external, p_outcome <> 'COMPLETED', p_base_ms, p_max_ms, 0,
                          p_retry_ms) s;
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
