-- 015_campaigns.sql — campaigns, priorities and the client events outbox
-- (DESIGN.md section 10): the tables and columns that the campaign API,
-- the dispatcher's limits and the events child share.
--
-- Owns: the campaigns table; calls.campaign_id, calls.priority and
-- calls.events_url; the call_events outbox and the trigger that writes it
-- in the same transaction as each state change of a call.  The campaign
-- API, the per-campaign counts, the limits and the delivery are built on
-- these by later migrations and src/.

CREATE TABLE campaigns (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name             text        NOT NULL,
    script_id        text        NOT NULL,
    status           text        NOT NULL DEFAULT 'RUNNING',
    max_concurrent   integer,                -- NULL: only the global cap
    calls_per_second double precision,       -- NULL: unpaced (beyond [provider])
    priority         smallint    NOT NULL DEFAULT 5,
    calling_window   jsonb,
    not_before       timestamptz,
    expires_at       timestamptz,
    retry            jsonb,                  -- {"busy":"5m",...}: per-outcome rules
    max_attempts     integer,
    events_url       text,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT campaigns_status_check
        CHECK (status IN ('RUNNING', 'PAUSED', 'FINISHED', 'CANCELLED')),
    CONSTRAINT campaigns_priority_check CHECK (priority BETWEEN 0 AND 9),
    CONSTRAINT campaigns_max_concurrent_check CHECK (max_concurrent >= 1),
    CONSTRAINT campaigns_cps_check CHECK (calls_per_second > 0)
);
CREATE INDEX campaigns_created_idx ON campaigns (created_at DESC, id DESC);

ALTER TABLE calls
    ADD COLUMN campaign_id uuid REFERENCES campaigns (id),
    ADD COLUMN priority    smallint NOT NULL DEFAULT 5,
    ADD COLUMN events_url  text,
    ADD CONSTRAINT calls_priority_check CHECK (priority BETWEEN 0 AND 9);

-- A campaign's calls, newest first with keyset paging, and its PENDING ones
-- (cancel, pause).
CREATE INDEX calls_campaign_idx ON calls (campaign_id, created_at DESC, id DESC)
    WHERE campaign_id IS NOT NULL;

-- The outbox of client events: one row per event, written by
-- calls_event_outbox() in the transaction that changed the call; the events
-- child delivers them in seq order per call.  url NULL: [events] url, read
-- by the deliverer (a reload may set it).
CREATE TABLE call_events (
    seq           bigserial   PRIMARY KEY,
    call_id       uuid        NOT NULL,
    campaign_id   uuid,
    type          text        NOT NULL,
    payload       json        NOT NULL,     -- the call resource at the change
    url           text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    state         text        NOT NULL DEFAULT 'pending',
    attempts      integer     NOT NULL DEFAULT 0,
    next_try_at   timestamptz NOT NULL DEFAULT now(),
    last_try_at   timestamptz,
    last_status   integer,                  -- HTTP status of the last try; NULL: none
    last_error    text,
    delivered_at  timestamptz,
    CONSTRAINT call_events_state_check CHECK (state IN ('pending', 'delivered', 'failed'))
);
CREATE INDEX call_events_due_idx ON call_events (next_try_at, seq) WHERE state = 'pending';
CREATE INDEX call_events_call_idx ON call_events (call_id, seq);

-- The event type of a status change, NULL for none.  PENDING after
-- IN_PROGRESS is a failed attempt that will be retried.
CREATE FUNCTION call_event_type(p_old text, p_new text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_new = 'IN_PROGRESS' THEN 'call.started'
        WHEN p_new = 'PENDING' AND p_old = 'IN_PROGRESS' THEN 'call.attempt_failed'
        WHEN p_new = 'COMPLETED' THEN 'call.completed'
        WHEN p_new = 'FAILED' THEN 'call.failed'
        WHEN p_new = 'CANCELLED' THEN 'call.cancelled'
        WHEN p_new = 'EXPIRED' THEN 'call.expired'
        WHEN p_new = 'SUPPRESSED' THEN 'call.suppressed'
    END
$$;
