/*
 * api_calls.c — the call resource: get, patch, cancel, list.
 *
 * Each handler is one statement.  PostgreSQL renders the call JSON
 * (call_json() in sql/001_schema.sql), so the text goes to the client as
 * the database produced it.  PATCH and cancel are conditional updates
 * ("… WHERE status = 'PENDING'"): a concurrent dispatch or cancel that got
 * there first makes ours match nothing, and the client gets 409 instead of
 * overwriting it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/validate.h"

/* ------------------------------------------------------------------ get */

static const char GET_SQL[] = "SELECT call_detail_json(c) FROM calls c WHERE c.id = $1";

static void got_call(struct api *api, struct http_request *req, const PGresult *res,
                     const char *id)
{
    if (PQntuples(res) == 0) {
        api_call_not_found(req, id);
        return;
    }
    api_json(req, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0), NULL);
}

void api_calls_get(struct api *api, struct http_request *req, const char *id)
{
    const char *values[] = { id };
    api_query(api, req, GET_SQL, 1, values, got_call, id);
}

/* ------------------------------------------------- patch and cancel */

/* Rows: ('U', call) when updated, else ('X', call) when the call exists. */
static const char PATCH_SQL[] =
    "WITH upd AS ("
    "  UPDATE calls SET"
    "    to_number = CASE WHEN $2::bool THEN $3::text ELSE to_number END,"
    "    script_id = CASE WHEN $4::bool THEN $5::text ELSE script_id END,"
    "    metadata = CASE WHEN $6::bool THEN COALESCE($7::jsonb, '{}') ELSE metadata END"
    "  WHERE id = $1 AND status = 'PENDING'"
    "  RETURNING call_json(calls) AS body, status"
    ") "
    "SELECT 'U', body, status FROM upd "
    "UNION ALL "
    "SELECT 'X', call_json(c), c.status FROM calls c "
    "WHERE c.id = $1 AND NOT EXISTS (SELECT 1 FROM upd)";

static const char CANCEL_SQL[] =
    "WITH upd AS ("
    "  UPDATE calls SET status = 'CANCELLED', ended_at = now(), next_attempt_at = NULL"
    "  WHERE id = $1 AND status = 'PENDING'"
    "  RETURNING call_json(calls) AS body, status"
    ") "
    "SELECT 'U', body, status FROM upd "
    "UNION ALL "
    "SELECT 'X', call_json(c), c.status FROM calls c "
    "WHERE c.id = $1 AND NOT EXISTS (SELECT 1 FROM upd)";

static void answer_not_pending(struct http_request *req, const char *id, const char *status,
                               const char *verb)
{
    struct problem p;
    problem_init(&p);
    /* the status we read may predate the change that beat us: only name it
     * when it already explains the refusal */
    if (strcmp(status, "PENDING") != 0)
        problem_set(&p, 409, "call %s is %s; only a PENDING call can be %s", id, status, verb);
    else
        problem_set(&p, 409, "call %s is no longer PENDING; only a PENDING call can be %s", id,
                    verb);
    api_problem(req, &p);
    problem_reset(&p);
}

static void answer_update(struct http_request *req, const PGresult *res, const char *id,
                          const char *verb)
{
    if (PQntuples(res) == 0)
        api_call_not_found(req, id);
    else if (PQgetvalue(res, 0, 0)[0] == 'U')
        api_json(req, 200, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1), NULL);
    else
        answer_not_pending(req, id, PQgetvalue(res, 0, 2), verb);
}

static void patched(struct api *api, struct http_request *req, const PGresult *res,
                    const char *id)
{
    answer_update(req, res, id, "changed");
}

static void cancelled(struct api *api, struct http_request *req, const PGresult *res,
                      const char *id)
{
    answer_update(req, res, id, "cancelled");
}

void api_calls_patch(struct api *api, struct http_request *req, const char *id)
{
    struct call_input in = { 0 };
    struct problem p;
    size_t len;
    const char *body = http_request_body(req, &len);

    problem_init(&p);
    if (validate_patch(body, len, api->cfg->max_metadata_bytes, &in, &p) < 0) {
        api_problem(req, &p);
        problem_reset(&p);
        return;
    }
    const char *values[] = {
        id,
        in.has_to ? "t" : "f", in.has_to ? in.to : NULL,
        in.has_script_id ? "t" : "f", in.has_script_id ? in.script_id : NULL,
        in.has_metadata ? "t" : "f", in.metadata,
    };
    api_query(api, req, PATCH_SQL, 7, values, patched, id);
    call_input_free(&in);
}

void api_calls_cancel(struct api *api, struct http_request *req, const char *id)
{
    const char *values[] = { id };
    api_query(api, req, CANCEL_SQL, 1, values, cancelled, id);
}

/* ----------------------------------------------------------------- list */

/* One row at least (the total); page columns NULL when the page is empty. */
static const char LIST_SQL[] =
    "SELECT t.total, p.body, p.us, p.id "
    "FROM (SELECT count(*) AS total FROM calls WHERE $1::text IS NULL OR status = $1) t "
    "LEFT JOIN LATERAL ("
    "  SELECT call_json(c)::text AS body,"
    "         ((extract(epoch FROM c.created_at) * 1000000)::bigint)::text AS us,"
    "         c.id::text AS id"
    "  FROM calls c"
    "  WHERE ($1::text IS NULL OR c.status = $1)"
    "    AND ($4::bigint IS NULL OR (c.created_at, c.id) <"
    "         ('epoch'::timestamptz + $4::bigint * interval '1 microsecond', $5::uuid))"
    "  ORDER BY c.created_at DESC, c.id DESC"
    "  LIMIT $2::int OFFSET $3::bigint"
    ") p ON true";

struct list_buf {
    char *s;
    size_t len, cap;
    int failed;
};

static void lb_add(struct list_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *t = realloc(b->s, cap);
        if (t == NULL) {
            b->failed = 1;
            return;
        }
        b->s = t;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void lb_str(struct list_buf *b, const char *s)
{
    lb_add(b, s, strlen(s));
}

/* The page size and page number travel in the id slot of api_query:
 * "<pageSize>:<page or 0 for cursor mode>". */
static void listed(struct api *api, struct http_request *req, const PGresult *res,
                   const char *paging)
{
    struct list_buf b = { 0 };
    int page_size = 0, page = 0, rows = 0;
    char tail[256];

    sscanf(paging, "%d:%d", &page_size, &page);
    lb_str(&b, "{\"data\":[");
    /* the query fetched one row more than the page: it says whether a next
     * page exists, so a full last page gets no cursor to an empty one */
    int n = PQntuples(res);
    for (int r = 0; r < n && rows < page_size; r++) {
        if (PQgetisnull(res, r, 1))
            continue;
        if (rows++ > 0)
            lb_add(&b, ",", 1);
        lb_add(&b, PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1));
    }
    char cursor[CURSOR_BUF] = "";
    if (n > page_size && rows == page_size)
        cursor_encode(strtoll(PQgetvalue(res, rows - 1, 2), NULL, 10),
                      PQgetvalue(res, rows - 1, 3), cursor, sizeof(cursor));
    char page_s[16] = "null";
    if (page > 0)
        snprintf(page_s, sizeof(page_s), "%d", page);
    snprintf(tail, sizeof(tail), "],\"page\":%s,\"pageSize\":%d,\"total\":%s,\"nextCursor\":%s%s%s}",
             page_s, page_size, PQgetvalue(res, 0, 0), cursor[0] ? "\"" : "",
             cursor[0] ? cursor : "null", cursor[0] ? "\"" : "");
    lb_str(&b, tail);
    if (b.failed)
        api_internal_error(req, "list", "out of memory");
    else
        api_json(req, 200, b.s, b.len, NULL);
    free(b.s);
}

void api_calls_list(struct api *api, struct http_request *req)
{
    struct list_query q;
    struct problem p;
    problem_init(&p);
    if (validate_list_query(http_request_query(req), &q, &p) < 0) {
        api_problem(req, &p);
        problem_reset(&p);
        return;
    }
    char limit[16], offset[32], us[32], paging[40];
    snprintf(limit, sizeof(limit), "%d", q.page_size + 1); /* +1: is there more? */
    snprintf(offset, sizeof(offset), "%lld",
             q.has_cursor ? 0LL : (long long)(q.page - 1) * q.page_size);
    snprintf(us, sizeof(us), "%" PRId64, q.cursor_created_us);
    snprintf(paging, sizeof(paging), "%d:%d", q.page_size, q.has_cursor ? 0 : q.page);
    const char *values[] = {
        q.status, limit, offset, q.has_cursor ? us : NULL, q.has_cursor ? q.cursor_id : NULL,
    };
    api_query(api, req, LIST_SQL, 5, values, listed, paging);
}
