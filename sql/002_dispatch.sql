-- 002_dispatch.sql — what dispatch, webhooks and the scheduler need
-- (DESIGN.md sections 3 and 5).
--
-- Owns: the publish bookkeeping the scheduler reads, the processed webhook
-- ids, and the two functions every path that ends an attempt goes through
-- (settle_attempt) or that applies a provider webhook (apply_webhook), so
-- the rules of "an attempt ends" live in one place.

-- When the call was last handed to Kafka.  NULL: never, or parked (the
-- consumer found no slot or lock and gave it back): the scheduler publishes
-- due calls whose published_at is NULL or older than its grace period.
ALTER TABLE calls ADD COLUMN published_at timestamptz;

-- Who holds the Redis slot lease and phone lock of the current attempt: a
-- token unique to the dispatch job that took them ("<call id>.<nonce>").
-- Two jobs for one attempt (a redelivered message) never share a lease, so
-- the one that loses the race to IN_PROGRESS cannot free the winner's slot;
-- webhooks, reclaims and the Redis rebuild release/restore by this token.
ALTER TABLE calls ADD COLUMN slot_owner text;

CREATE INDEX calls_publish_idx ON calls (due_at, id) INCLUDE (published_at)
    WHERE status = 'PENDING';

-- updatedAt tells clients when the call changed: the bookkeeping above
-- (publishing, parking, the lease token) is not a change they can see.
CREATE OR REPLACE FUNCTION calls_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.to_number, NEW.script_id, NEW.metadata, NEW.status, NEW.attempts,
        NEW.max_attempts, NEW.last_error, NEW.external_call_id, NEW.next_attempt_at,
        NEW.started_at, NEW.ended_at)
       IS DISTINCT FROM
       (OLD.to_number, OLD.script_id, OLD.metadata, OLD.status, OLD.attempts,
        OLD.max_attempts, OLD.last_error, OLD.external_call_id, OLD.next_attempt_at,
        OLD.started_at, OLD.ended_at) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- Webhook ids already processed (Standard Webhooks "webhook-id"): a repeat
-- is answered 200 and changes nothing.
CREATE TABLE webhook_events (
    id          text        PRIMARY KEY,
    call_id     uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_events_id_check CHECK (length(id) BETWEEN 1 AND 256)
);

CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);

CREATE INDEX call_attempts_external_idx ON call_attempts (external_call_id)
    WHERE external_call_id IS NOT NULL;

-- End attempt P_ATTEMPT of call P_ID, once.  P_OUTCOME is COMPLETED (final
-- success) or why the attempt failed (FAILED, BUSY, NO_ANSWER, PROVIDER_ERROR,
-- PROVIDER_REJECTED, TIMEOUT).  A failed attempt goes back to PENDING with
-- next_attempt_at = now() + backoff while attempts remain and P_RETRY is
-- true; else the call is FAILED.  backoff = base × 2^(attempt−1), capped
-- at P_MAX_MS, then jittered down by up to 20 % (so the cap holds and retries
-- of many calls spread out), and never less than P_MIN_DELAY_MS (a
-- provider's Retry-After).
--
-- Returns one row (status, to_number) when this call ended the attempt, and
-- no row when the attempt had already ended (a duplicate or late webhook, a
-- reclaim that lost to the webhook …): the caller then changes nothing and
-- releases nothing it does not own.
CREATE FUNCTION settle_attempt(p_id uuid, p_attempt int, p_outcome text, p_error text,
                               p_external text, p_retry boolean, p_base_ms bigint,
                               p_max_ms bigint, p_min_delay_ms bigint)
RETURNS TABLE (status text, to_number text, slot_owner text)
LANGUAGE plpgsql AS $$
DECLARE
    delay_ms double precision;
BEGIN
    UPDATE call_attempts a
       SET ended_at = now(), outcome = p_outcome, error = p_error,
           external_call_id = COALESCE(a.external_call_id, p_external)
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

-- Apply a provider webhook.  The attempt is found by P_CALL_ID/P_ATTEMPT
-- (from "reference") when given, else by the provider's call id.  Returns
-- one row: result = 'unknown' (no such call: 404), 'duplicate' (webhook id
-- seen before), 'late' (the attempt had already ended), or 'applied'; with
-- the call's id, attempt, new status and phone number when applied.
CREATE FUNCTION apply_webhook(p_webhook_id text, p_call_id uuid, p_attempt int,
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
    IF v_status IS NULL THEN
        RETURN QUERY SELECT 'late'::text, v_id, v_attempt, NULL::text, NULL::text, NULL::text;
    ELSE
        RETURN QUERY SELECT 'applied'::text, v_id, v_attempt, v_status, v_to, v_owner;
    END IF;
END
$$;
