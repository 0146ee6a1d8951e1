-- 005_status_counts.sql — the number of calls by status, kept as calls
-- change, so that nobody counts the calls table per request (issue 9,
-- item 7).
--
-- Owns: call_status_counts and the triggers on calls that keep it exact.
-- Readers (GET /metrics, /api/v1/metrics, the list's "total") SUM its rows
-- by status: a few hundred rows however many calls are stored, read in the
-- reader's own snapshot, so the sum is exactly what count(*) would say.
--
-- Every status has a row per slot, and a writer adds its delta to the row
-- of its own slot (its backend pid modulo 64): the pool's connections
-- rarely share one, so concurrent transactions do not serialize on one
-- counter row.  It never waits for the row, though: when another
-- transaction holds it (FOR UPDATE SKIP LOCKED), the writer takes any row
-- of the status that nobody holds, and inserts a new one (slot NULL) only
-- when all are held.  So writers never wait for one another on a counter
-- and never deadlock on one, whatever order their transactions change
-- statuses in; a row's n may be negative (a row that only ever took
-- decrements): only the sum per status means anything.
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
    slot   int,                  -- NULL: a row added when every row was held
    n      bigint NOT NULL
);

CREATE UNIQUE INDEX call_status_counts_slot_idx ON call_status_counts (status, slot);

-- Add P_DELTA to the calls counted under P_STATUS, waiting for no one.
CREATE FUNCTION call_status_counts_add(p_status text, p_delta bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_delta = 0 THEN
        RETURN;
    END IF;
    UPDATE call_status_counts SET n = n + p_delta
     WHERE id = (SELECT s.id FROM call_status_counts s
                  WHERE s.status = p_status AND s.slot = pg_backend_pid() % 64
                  FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
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

-- A row per slot and status, then the calls already stored.
INSERT INTO call_status_counts (status, slot, n)
SELECT s.status, g, 0
  FROM unnest(ARRAY['PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED']) AS s(status),
       generate_series(0, 63) g;

INSERT INTO call_status_counts (status, n)
SELECT c.status, count(*) FROM calls c GROUP BY c.status;
