-- 020_campaign_retry.sql — a campaign's own retry rules (DESIGN.md section
-- 10: a campaign carries "retry":{"busy":"5m",...}), over [retry].
--
-- Owns: retry_rule_ms() (a rule as the API stored it, checked like [retry]
-- by src/api/validate.c: "never", "backoff" or a duration from 1s, to the
-- P_RETRY_MS convention of 010_retry_rules.sql) and the settle_attempt()
-- that applies the campaign's rule for the outcome when it has one.  Only
-- outcomes have rules (FAILED, BUSY, ..., TIMEOUT): a start the provider
-- refused keeps the backoff rule the dispatcher hands in.

-- "never" -1, "backoff" 0, a duration in ms; NULL for NULL.
CREATE FUNCTION retry_rule_ms(p_rule text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_rule IS NULL THEN NULL
        WHEN p_rule = 'never' THEN -1
        WHEN p_rule = 'backoff' THEN 0
        ELSE (m[1]::numeric * CASE COALESCE(m[2], 's')
                WHEN 'ms' THEN 1 WHEN 's' THEN 1000 WHEN 'm' THEN 60000
                WHEN 'h' THEN 3600000 WHEN 'd' THEN 86400000 END)::bigint
    END
    FROM (SELECT regexp_match(btrim(p_rule), '^([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?$') AS m) r
$$;

-- settle_attempt() of 010_retry_rules.sql; P_RETRY_MS is [retry]'s rule for
-- P_OUTCOME, and the call's campaign's rule for it, when set, wins.
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
     WHERE c.id = p_id AND c.attempts = p_attempt AND c.status = 'IN_PROGRESS'
    RETURNING c.status, c.to_number, c.slot_owner;
END
$$;
