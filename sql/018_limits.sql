-- 018_limits.sql — the publish order of DESIGN.md section 10: higher
-- priority first, then oldest first, and no backlog of a campaign that is
-- paused or at its maxConcurrent.
--
-- Owns: the indexes of the scheduler's publish query (src/store/sched.c,
-- PUBLISH_SQL).  That query takes each priority, 9 down to 0, as an
-- index range (priority = p AND due_at <= now()) in (due_at, id) order and
-- stops at its LIMIT: the not-yet-due rows of a priority (retries, holds)
-- are never walked, and no sort of all due rows is made.  published_at is
-- included for the grace filter, campaign_id for the campaign filter.
CREATE INDEX calls_publish_prio_idx ON calls (priority, due_at, id)
    INCLUDE (published_at, campaign_id) WHERE status = 'PENDING';

-- The publish query's count of a campaign's calls in progress, against its
-- maxConcurrent: a full campaign's backlog is not published.
CREATE INDEX calls_campaign_in_progress_idx ON calls (campaign_id)
    WHERE status = 'IN_PROGRESS' AND campaign_id IS NOT NULL;

-- The same query's count of the calls "on the way" (published within the
-- grace, not yet started or parked) read every row of calls: a sequential
-- scan of 210 ms a tick with 1 000 000 calls, against 0.04 ms on this
-- index (the whole publish: 218 ms -> 8 ms).
CREATE INDEX calls_pending_published_idx ON calls (published_at) WHERE status = 'PENDING';

-- Superseded: (due_at, id) of the PENDING calls was read only by the
-- publish query (calls_due_idx of 001 even before 002 added the other);
-- dropping them keeps the indexes an insert of a call maintains at the
-- count before this migration.
DROP INDEX calls_publish_idx;
DROP INDEX calls_due_idx;

-- What a dispatch job loads of its call (src/store/attempts.c), with its
-- campaign's status and limits.  A function so that its plan is cached:
-- sent as text, the join was planned again for every message (0.35 ms of
-- PostgreSQL's time each, against 0.26 ms for the statement without it).
CREATE FUNCTION load_call(p_id uuid)
RETURNS TABLE (status text, attempts int, to_number text, due bool, listed bool, expired bool,
               zones text, calling_window text, campaign_id text, campaign_status text,
               campaign_max int, campaign_cps double precision)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT c.status, c.attempts, c.to_number, c.due_at <= now(),
           EXISTS (SELECT 1 FROM dnc d WHERE d.number = c.to_number),
           COALESCE(c.expires_at <= now(), false),
           COALESCE(array_to_json(c.timezones)::text, '[]'), c.calling_window::text,
           c.campaign_id::text, g.status, COALESCE(g.max_concurrent, 0),
           COALESCE(g.calls_per_second, 0)
      FROM calls c LEFT JOIN campaigns g ON g.id = c.campaign_id
     WHERE c.id = p_id;
END
$$;
