-- 005_status_counts.sql — the number of calls by status, kept as calls
-- change, so that nobody counts the calls table per request (issue 9,
-- item 7).
--
-- Owns: call_status_counts and the triggers on calls that keep it exact.
-- Readers (GET /metrics, /api/v1/metrics, the list's "total") SUM its rows
-- by status: a few dozen rows however many calls are stored, read in the
-- reader's own snapshot, so the sum is exactly what count(*) would say.
--
-- Every status has several rows.  A writer adds its delta to whichever row
-- of the status no other transaction holds (FOR UPDATE SKIP LOCKED) and
-- inserts a new row only when all of them are held: writers never wait for
-- one another on a counter and never deadlock on one, whatever order their
-- transactions change statuses in.  The rows of a status therefore number
-- at most the writers that were ever changing that status at once; their n
-- may be negative (a row that only ever took decrements); only the sum
-- means anything.
--
-- The triggers:
--   INSERT    statement level, NEW TABLE: one update per status per
--             statement, so an intake batch of 100 calls costs one update;
--   UPDATE    row level, WHEN the status changed: the many updates that do
--             not change it (publishing, lease tokens, PATCH, the external
--             id) cost nothing, where a statement-level trigger would copy
--             every updated row into transition tables first;
--   DELETE    statement level, OLD TABLE (retention deletes in batches);
--   TRUNCATE  statement level: every count back to 0.

CREATE TABLE call_status_counts (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status text   NOT NULL,
    n      bigint NOT NULL
);

-- Add DELTA to the calls counted under P_STATUS, waiting for no one.
CREATE FUNCTION call_status_counts_add(p_status text, p_delta bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_delta = 0 THEN
        RETURN;
    END IF;
    UPDATE call_status_counts SET n = n + p_delta
     WHERE id = (SELECT s.id FROM call_status_counts s WHERE s.status = p_status
                  LIMIT 1 FOR UPDATE SKIP LOCKED);
    IF NOT FOUND THEN
        INSERT INTO call_status_counts (status, n) VALUES (p_status, p_delta);
    END IF;
END
$$;

CREATE FUNCTION calls_count_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT status, count(*) AS d FROM new_calls GROUP BY status ORDER BY status LOOP
        PERFORM call_status_counts_add(r.status, r.d);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION calls_count_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT status, count(*) AS d FROM old_calls GROUP BY status ORDER BY status LOOP
        PERFORM call_status_counts_add(r.status, -r.d);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION calls_count_status_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM call_status_counts_add(OLD.status, -1);
    PERFORM call_status_counts_add(NEW.status, 1);
    RETURN NULL;
END
$$;

CREATE FUNCTION calls_count_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE call_status_counts SET n = 0 WHERE n <> 0;
    RETURN NULL;
END
$$;

-- Creating the triggers locks calls against writers until this migration
-- commits, so the counts below miss no change and count none twice.
CREATE TRIGGER calls_count_inserted AFTER INSERT ON calls
    REFERENCING NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_count_inserted();

CREATE TRIGGER calls_count_deleted AFTER DELETE ON calls
    REFERENCING OLD TABLE AS old_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_count_deleted();

CREATE TRIGGER calls_count_status_changed AFTER UPDATE ON calls
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION calls_count_status_changed();

CREATE TRIGGER calls_count_truncated AFTER TRUNCATE ON calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_count_truncated();

-- Eight rows per status to start with (eight writers at once before any
-- has to add a row), then the calls already stored.
INSERT INTO call_status_counts (status, n)
SELECT s.status, 0
  FROM generate_series(1, 8) g,
       unnest(ARRAY['PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED']) AS s(status);

INSERT INTO call_status_counts (status, n)
SELECT c.status, count(*) FROM calls c GROUP BY c.status;
