-- 021_published_index.sql — calls_pending_published_idx of 018 holds only
-- the calls that were published.
--
-- Owns: the index of the publish query's count of calls "on the way"
-- (src/store/sched.c, PUBLISH_SQL: "published_at >= now() - grace", which
-- implies published_at IS NOT NULL, so the query still matches it).
--
-- Why: the index of 018 held every PENDING call.  Each statement that
-- changes one PENDING call by id (start_attempt(), suppress_if_listed(),
-- the dispatcher's unpublish) also says "status = 'PENDING'", so the
-- planner could read that index whole and filter on id instead of using
-- the primary key.  After an ANALYZE that saw few PENDING calls, that
-- plan costs the same as the primary key's, and PL/pgSQL keeps it as the
-- generic plan of the connection: bench/dispatch then spent several times
-- the primary key's time per start, walking every PENDING call.
-- A statement that does not say "published_at IS NOT NULL" cannot use
-- this index at all, and the index is smaller.
DROP INDEX calls_pending_published_idx;
CREATE INDEX calls_pending_published_idx ON calls (published_at)
    WHERE status = 'PENDING' AND published_at IS NOT NULL;
