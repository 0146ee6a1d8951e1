-- 016_events.sql — client events (DESIGN.md section 10): the trigger that
-- writes the outbox, the switch that keeps it from growing when no URL
-- applies, and what the events child needs to claim rows.
--
-- Owns: calls_event_outbox() and its trigger on calls; the one-row table
-- events_settings; call_events.call_id becoming nullable (a
-- campaign.finished event has a campaign and no call) and a foreign key
-- (a call's events are deleted with it).  The delivery
-- itself (claiming, sending, retrying) is src/events/deliver.c with its
-- statements in src/store/events.c.

-- Written by the events child at start (and so at every reload, which
-- replaces it): whether [events] url is set.  Read by the trigger, so that
-- a state change with no URL at all (none on the call, none on its
-- campaign, none configured) writes nothing.  Several daemons sharing the
-- database should share [events]; the last one started wins.
CREATE TABLE events_settings (
    id              boolean PRIMARY KEY DEFAULT true,
    default_url_set boolean NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_settings_one_row CHECK (id)
);
INSERT INTO events_settings DEFAULT VALUES;

-- campaign.finished (added with the campaign engine): campaign_id, no call.
-- A call's events go with it ([retention] finished_calls deletes calls in
-- batches; call_events_call_idx serves the cascade), so the outbox does not
-- keep growing after delivery.
ALTER TABLE call_events
    ALTER COLUMN call_id DROP NOT NULL,
    ADD CONSTRAINT call_events_subject_check
        CHECK (call_id IS NOT NULL OR campaign_id IS NOT NULL),
    ADD CONSTRAINT call_events_call_fk
        FOREIGN KEY (call_id) REFERENCES calls (id) ON DELETE CASCADE;

-- The first pending event of each call (and of each campaign's call-less
-- events) is the only one the deliverer may claim: this index answers
-- "is there an earlier pending one?" without reading delivered rows.
CREATE INDEX call_events_pending_call_idx ON call_events (call_id, seq)
    WHERE state = 'pending';
CREATE INDEX call_events_pending_campaign_idx ON call_events (campaign_id, seq)
    WHERE state = 'pending' AND call_id IS NULL;

-- One outbox row per status change, in the transaction of the change.  The
-- row holds the whole POST body ({"type","data","timestamp"}) as it will be
-- signed and sent: the deliverer adds nothing, and a retry sends the same
-- bytes.  url NULL means "[events] url", read by the deliverer at send
-- time.  The campaign's URL costs a lookup by primary key only for a
-- campaign's calls without a URL of their own.
CREATE FUNCTION calls_event_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_type text := call_event_type(OLD.status, NEW.status);
    v_url  text := NEW.events_url;
BEGIN
    IF v_type IS NULL THEN
        RETURN NULL;
    END IF;
    IF v_url IS NULL AND NEW.campaign_id IS NOT NULL THEN
        SELECT c.events_url INTO v_url FROM campaigns c WHERE c.id = NEW.campaign_id;
    END IF;
    IF v_url IS NULL AND NOT (SELECT s.default_url_set FROM events_settings s) THEN
        RETURN NULL;
    END IF;
    INSERT INTO call_events (call_id, campaign_id, type, payload, url)
    VALUES (NEW.id, NEW.campaign_id, v_type,
            json_build_object('type', v_type, 'data', call_json(NEW),
                              'timestamp', callorch_ts(now())),
            v_url);
    RETURN NULL;
END
$$;

CREATE TRIGGER calls_event_outbox
    AFTER UPDATE OF status ON calls
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION calls_event_outbox();
