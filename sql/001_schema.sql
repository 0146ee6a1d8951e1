-- 001_schema.sql — the initial callorch schema (DESIGN.md sections 3 and 4).
--
-- Owns: the calls table (the source of truth for every call), the per-attempt
-- log, the Idempotency-Key table, the indexes the API and the scheduler rely
-- on, and the SQL functions that render the API's call resource as JSON so
-- the C code can pass PostgreSQL's text straight through.
--
-- Applied by `callorchctl migrate` inside one transaction, so this file holds
-- no BEGIN/COMMIT and nothing that cannot run in a transaction block (e.g. no
-- CREATE INDEX CONCURRENTLY).  schema_migrations is created by the tool.
-- Requires PostgreSQL 13 or later (gen_random_uuid() in core).

-- ---------------------------------------------------------------- calls ----

CREATE TABLE calls (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    to_number        text        NOT NULL,
    script_id        text        NOT NULL,
    -- What the client sent, or {} when it sent no metadata: the API always
    -- returns an object, never null.  jsonb normalises key order (shorter
    -- keys first), so a client may get its keys back reordered.
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status           text        NOT NULL DEFAULT 'PENDING',
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    last_error       text,
    external_call_id text        UNIQUE,
    -- NULL = due now.  Set to now() + backoff when an attempt is retried.
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    ended_at         timestamptz,
    -- When the scheduler considers the call due: a fresh call at once, a
    -- retry at its next_attempt_at.  Stored so that the scheduler's query
    -- ("due_at <= now() ORDER BY due_at, id") matches calls_due_idx exactly.
    due_at           timestamptz GENERATED ALWAYS AS
                         (COALESCE(next_attempt_at, created_at)) STORED,

    CONSTRAINT calls_status_check CHECK
        (status IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED')),
    CONSTRAINT calls_attempts_check CHECK (attempts BETWEEN 0 AND max_attempts),
    CONSTRAINT calls_max_attempts_check CHECK (max_attempts >= 1),
    -- The API validates these too (400 with a field message); the database
    -- repeats the rules so that no other writer can store a call that the
    -- provider would reject.
    CONSTRAINT calls_to_number_check CHECK (to_number ~ '^\+[1-9][0-9]{7,14}$'),
    CONSTRAINT calls_script_id_check CHECK (script_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    CONSTRAINT calls_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT calls_external_call_id_check CHECK (length(external_call_id) BETWEEN 1 AND 256)
);

-- GET /api/v1/calls, newest first, offset or keyset paging.  A keyset page is
-- "WHERE (created_at, id) < ($1, $2) ORDER BY created_at DESC, id DESC", which
-- this index serves as a plain range scan (row comparison), so no separate
-- cursor index is needed.
CREATE INDEX calls_created_idx ON calls (created_at DESC, id DESC);

-- The same with ?status=…: equality on status, then the same order.
CREATE INDEX calls_status_created_idx ON calls (status, created_at DESC, id DESC);

-- The scheduler: "WHERE status = 'PENDING' AND due_at <= now()
-- ORDER BY due_at, id LIMIT n FOR UPDATE SKIP LOCKED".  Partial, so it stays
-- as small as the backlog, however many finished calls the table holds.
CREATE INDEX calls_due_idx ON calls (due_at, id) WHERE status = 'PENDING';

-- The scheduler's reclaim pass: IN_PROGRESS calls started too long ago.
CREATE INDEX calls_in_progress_started_idx ON calls (started_at)
    WHERE status = 'IN_PROGRESS';

-- Never two calls in progress for one phone number (DESIGN.md section 3),
-- enforced by the database as the last line behind the Redis lock: the
-- conditional PENDING -> IN_PROGRESS update fails with 23505 instead.
CREATE UNIQUE INDEX calls_one_in_progress_per_number ON calls (to_number)
    WHERE status = 'IN_PROGRESS';

-- updated_at follows every change without each UPDATE having to remember it.
CREATE FUNCTION calls_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER calls_touch_updated_at BEFORE UPDATE ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_touch_updated_at();

-- ------------------------------------------------------- call_attempts ----

CREATE TABLE call_attempts (
    call_id          uuid        NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    -- Webhook outcomes (COMPLETED, FAILED, BUSY, NO_ANSWER) and the
    -- dispatcher's own (e.g. a provider error or a reclaimed timeout).  Not
    -- constrained here: the set belongs to the dispatcher, not the schema.
    outcome          text,
    error            text,
    external_call_id text,
    PRIMARY KEY (call_id, attempt),
    CONSTRAINT call_attempts_attempt_check CHECK (attempt >= 1)
);

-- ---------------------------------------------------- idempotency_keys ----

CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    -- SHA-256 of the request body as received: the same key with another
    -- body is a 422.  Send it as a text parameter in bytea hex form ('\x…').
    request_hash bytea       NOT NULL,
    call_id      uuid        NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_hash_check CHECK (octet_length(request_hash) = 32)
);

-- For expiring old keys.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- ----------------------------------------------------- JSON rendering ----

-- RFC 3339 UTC with milliseconds, "2026-01-01T12:00:00.000Z"; NULL stays NULL
-- (and so becomes JSON null).  The format does not depend on the session's
-- TimeZone or DateStyle.
CREATE FUNCTION callorch_ts(ts timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- The call resource of DESIGN.md section 4, keys in the documented order.
-- (Redefined as one inlinable expression in 003_intake.sql, same output.)
-- row_to_json over a subselect keeps the column order (jsonb would sort the
-- keys) and prints compactly, {"id":"…","to":"…",…}.
CREATE FUNCTION call_json(c calls) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT row_to_json(r) FROM (SELECT
        c.id                             AS "id",
        c.to_number                      AS "to",
        c.script_id                      AS "scriptId",
        COALESCE(c.metadata, '{}')       AS "metadata",
        c.status                         AS "status",
        c.attempts                       AS "attempts",
        c.max_attempts                   AS "maxAttempts",
        c.last_error                     AS "lastError",
        c.external_call_id               AS "externalCallId",
        callorch_ts(c.next_attempt_at)   AS "nextAttemptAt",
        callorch_ts(c.created_at)        AS "createdAt",
        callorch_ts(c.updated_at)        AS "updatedAt",
        callorch_ts(c.started_at)        AS "startedAt",
        callorch_ts(c.ended_at)          AS "endedAt") r
$$;

-- The attemptLog array of GET /api/v1/calls/{id}, by attempt number; [] when
-- the call has no attempts (or does not exist).
CREATE FUNCTION call_attempt_log(id uuid) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    -- array_to_json, not json_agg: json_agg puts a newline between elements.
    SELECT COALESCE(array_to_json(array_agg(r ORDER BY r.attempt)), '[]')
    FROM (SELECT
        a.attempt                    AS "attempt",
        callorch_ts(a.started_at)    AS "startedAt",
        callorch_ts(a.ended_at)      AS "endedAt",
        a.outcome                    AS "outcome",
        a.error                      AS "error",
        a.external_call_id           AS "externalCallId"
        FROM call_attempts a
        WHERE a.call_id = call_attempt_log.id) r
$$;

-- GET /api/v1/calls/{id}: the call resource with "attemptLog" appended, as
-- one json value: SELECT call_detail_json(c) FROM calls c WHERE c.id = $1.
-- Spliced onto call_json's text (which always ends in "}") so that the two
-- renderings cannot drift apart.
CREATE FUNCTION call_detail_json(c calls) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (left(call_json(c)::text, -1)
            || ',"attemptLog":' || call_attempt_log(c.id)::text || '}')::json
$$;
