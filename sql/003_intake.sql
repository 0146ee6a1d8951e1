-- 003_intake.sql — the create statement of POST /api/v1/calls as a function.
--
-- intake.c stores a whole batch of requests with one statement (group
-- commit).  As plain SQL sent with PQsendQueryParams that statement was
-- parsed, analysed and planned for every batch — half the CPU PostgreSQL
-- spent on intake (bench/intake).  PL/pgSQL caches the plan of a statement
-- per session, so as a function it is planned once per connection.
--
-- P_INPUT: a JSON array of {ord, id, to_number, script_id, metadata,
-- idem_key, req_hash (hex)}; P_MAX_ATTEMPTS: [dispatch] max_attempts.
-- One row per resolved request: (ord, 'C' created | 'R' replay | 'X' key
-- used with another body, the call as call_json()).  A request with no row
-- lost an Idempotency-Key race to a concurrent transaction: the caller
-- tries it again (this statement's snapshot predates that commit).
-- Keys are inserted in key order, so two batches holding the same keys
-- cannot deadlock.
CREATE FUNCTION intake_calls(p_input json, p_max_attempts int)
RETURNS TABLE (r_ord int, r_outcome text, r_body json)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM json_to_recordset(p_input) AS t(ord int, id uuid, to_number text,
            script_id text, metadata jsonb, idem_key text, req_hash text)
    ), keys AS (
        INSERT INTO idempotency_keys (key, request_hash, call_id)
        SELECT i.idem_key, decode(i.req_hash, 'hex'), i.id FROM input i
         WHERE i.idem_key IS NOT NULL
         ORDER BY i.idem_key
        ON CONFLICT (key) DO NOTHING
        RETURNING call_id
    ), created AS (
        INSERT INTO calls (id, to_number, script_id, metadata, max_attempts, published_at)
        SELECT i.id, i.to_number, i.script_id, COALESCE(i.metadata, '{}'), p_max_attempts, now()
          FROM input i
         WHERE i.idem_key IS NULL OR i.id IN (SELECT k.call_id FROM keys k)
        RETURNING calls.id, call_json(calls) AS body
    )
    SELECT i.ord, 'C'::text, c.body FROM created c JOIN input i ON i.id = c.id
    UNION ALL
    SELECT i.ord,
           CASE WHEN k.request_hash = decode(i.req_hash, 'hex') THEN 'R' ELSE 'X' END,
           call_json(c)
      FROM input i
      JOIN idempotency_keys k ON k.key = i.idem_key
      JOIN calls c ON c.id = k.call_id;
END
$$;

-- call_json() as one expression, so the planner inlines it: the earlier
-- body (row_to_json over a subselect) ran as a SQL function, an executor
-- start and stop per call — per row of every list page and intake batch.
-- The composite type carries the member names in the documented order;
-- the rendering is unchanged, byte for byte.
CREATE TYPE call_resource AS (
    "id" uuid, "to" text, "scriptId" text, "metadata" jsonb, "status" text,
    "attempts" integer, "maxAttempts" integer, "lastError" text, "externalCallId" text,
    "nextAttemptAt" text, "createdAt" text, "updatedAt" text, "startedAt" text, "endedAt" text);

CREATE OR REPLACE FUNCTION call_json(c calls) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT row_to_json(ROW(c.id, c.to_number, c.script_id, COALESCE(c.metadata, '{}'),
        c.status, c.attempts, c.max_attempts, c.last_error, c.external_call_id,
        callorch_ts(c.next_attempt_at), callorch_ts(c.created_at), callorch_ts(c.updated_at),
        callorch_ts(c.started_at), callorch_ts(c.ended_at))::call_resource)
$$;
