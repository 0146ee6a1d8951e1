-- 019_campaign_events.sql — the campaign.finished client event (DESIGN.md
-- section 10): written to the call_events outbox (sql/016_events.sql) in
-- the transaction that makes a campaign FINISHED
-- (campaign_check_finished(), sql/017_campaign_api.sql).
--
-- Owns: campaigns_event_outbox() and its trigger.  A campaign event has no
-- call: call_id NULL, campaign_id set; the deliverer keeps such events in
-- order per campaign.  As for calls, nothing is stored when no URL applies
-- (no campaign eventsUrl and no [events] url).  A campaign that finishes
-- again after a replay reopened it sends campaign.finished again.

CREATE FUNCTION campaigns_event_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.events_url IS NULL AND NOT (SELECT s.default_url_set FROM events_settings s) THEN
        RETURN NULL;
    END IF;
    INSERT INTO call_events (call_id, campaign_id, type, payload, url)
    VALUES (NULL, NEW.id, 'campaign.finished',
            json_build_object('type', 'campaign.finished', 'data', campaign_json(NEW),
                              'timestamp', callorch_ts(now())),
            NEW.events_url);
    RETURN NULL;
END
$$;

CREATE TRIGGER campaigns_event_outbox
    AFTER UPDATE OF status ON campaigns
    FOR EACH ROW
    WHEN (NEW.status = 'FINISHED' AND OLD.status IS DISTINCT FROM 'FINISHED')
    EXECUTE FUNCTION campaigns_event_outbox();
