-- 007_dnc.sql — the do-not-call list (DESIGN.md section 9).
--
-- One row per listed number.  SOURCE says who listed it: 'api' (PUT
-- /api/v1/dnc/{e164}), 'import' (POST /api/v1/dnc/import) or, later,
-- 'opt-out:<call id>' (a webhook's OPT_OUT disposition).  The entry as the
-- API returns it is dnc_json().
CREATE TABLE dnc (
    number      text        PRIMARY KEY,
    reason      text,
    source      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dnc_number_check CHECK (number ~ '^\+[1-9][0-9]{7,14}$'),
    CONSTRAINT dnc_reason_check CHECK (char_length(reason) <= 500),
    CONSTRAINT dnc_source_check CHECK (char_length(source) BETWEEN 1 AND 100)
);

CREATE TYPE dnc_resource AS ("number" text, "reason" text, "source" text, "createdAt" text);

CREATE FUNCTION dnc_json(d dnc) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT row_to_json(ROW(d.number, d.reason, d.source,
        callorch_ts(d.created_at))::dnc_resource)
$$;

-- intake_calls() of 003_intake.sql with the list checked in the same
-- statement: one primary-key lookup per request.  A request to a listed
-- number stores nothing (no call, no idempotency key) and answers
-- (ord, 'D', NULL): 422 for that request only.  An Idempotency-Key that is
-- already stored still answers its replay (or its conflict), listed or
-- not: the call it names was created before.
CREATE OR REPLACE FUNCTION intake_calls(p_input json, p_max_attempts int)
RETURNS TABLE (r_ord int, r_outcome text, r_body json)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT t.*,
               EXISTS (SELECT 1 FROM dnc d WHERE d.number = t.to_number) AS listed
          FROM json_to_recordset(p_input) AS t(ord int, id uuid, to_number text,
            script_id text, metadata jsonb, idem_key text, req_hash text)
    ), keys AS (
        INSERT INTO idempotency_keys (key, request_hash, call_id)
        SELECT i.idem_key, decode(i.req_hash, 'hex'), i.id FROM input i
         WHERE i.idem_key IS NOT NULL AND NOT i.listed
         ORDER BY i.idem_key
        ON CONFLICT (key) DO NOTHING
        RETURNING call_id
    ), created AS (
        INSERT INTO calls (id, to_number, script_id, metadata, max_attempts, published_at)
        SELECT i.id, i.to_number, i.script_id, COALESCE(i.metadata, '{}'), p_max_attempts, now()
          FROM input i
         WHERE NOT i.listed AND (i.idem_key IS NULL OR i.id IN (SELECT k.call_id FROM keys k))
        RETURNING calls.id, call_json(calls) AS body
    )
    SELECT i.ord, 'C'::text, c.body FROM created c JOIN input i ON i.id = c.id
    UNION ALL
    SELECT i.ord,
           CASE WHEN k.request_hash = decode(i.req_hash, 'hex') THEN 'R' ELSE 'X' END,
           call_json(c)
      FROM input i
      JOIN idempotency_keys k ON k.key = i.idem_key
      JOIN calls c ON c.id = k.call_id
    UNION ALL
    SELECT i.ord, 'D'::text, NULL::json
      FROM input i
     WHERE i.listed
       AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.key = i.idem_key);
END
$$;
