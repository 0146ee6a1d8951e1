-- 018_limits.sql — the publish order of DESIGN.md section 10: higher
-- priority first, then oldest first.
--
-- Owns: the index the scheduler's publish query (src/store/sched.c,
-- PUBLISH_SQL) reads.  That query takes each priority, 9 down to 0, as an
-- index range (priority = p AND due_at <= now()) in (due_at, id) order and
-- stops at its LIMIT: the not-yet-due rows of a priority (retries, holds)
-- are never walked, and no sort of all due rows is made.  published_at is
-- included for the grace filter, campaign_id for the paused-campaign
-- filter.  calls_publish_idx (002) stays: the "on the way" count of the
-- same query reads it.
CREATE INDEX calls_publish_prio_idx ON calls (priority, due_at, id)
    INCLUDE (published_at, campaign_id) WHERE status = 'PENDING';
