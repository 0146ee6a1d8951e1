-- 006_retention.sql — the indexes of the scheduler's reconcile and
-- retention (DESIGN.md sections 3 and 6, [retention]).
--
-- Owns: the index the retention of finished calls deletes by (oldest
-- ended_at first, terminal calls only), and the one the reconcile pages
-- IN_PROGRESS calls by (keyset on id).  webhook_events (received_at) and
-- idempotency_keys (created_at) have theirs already (001, 002).

CREATE INDEX calls_finished_idx ON calls (ended_at)
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED');

CREATE INDEX calls_in_progress_id_idx ON calls (id) WHERE status = 'IN_PROGRESS';
