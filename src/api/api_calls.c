/*
 * api_calls.c — the call resource: get, patch, cancel, list.
 *
 * Owns: turning each request into one store statement (store/calls.h) and
 * its result into the answer.  PostgreSQL renders the call JSON, so the
 * text goes to the client as the database produced it.  PATCH and cancel
 * only change a PENDING call: one that a concurrent dispatch or cancel got
 * to first answers 409 instead of being overwritten.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/validate.h"
#include "store/calls.h"
#include "util/strbuf.h"

/* The store refused the statement at once (pool down, queue full). */
static void refused(struct api_req *r)
{
    api_unavailable(r->req, API_DB_UNREACHABLE);
    free(r);
}

/* ------------------------------------------------------------------ get */

static void got_call(void *ctx, const struct store_err *e, const struct store_json *doc)
{
    struct api_req *r = ctx;
    if (e != NULL)
        api_store_failed(r->req, e, "query");
    else if (doc == NULL)
        api_call_not_found(r->req, r->id);
    else
        api_json(r->req, 200, doc->text, doc->len, NULL);
    free(r);
}

void api_calls_get(struct api *api, struct http_request *req, const char *id)
{
    struct api_req *r = api_req_new(req, id);
    if (r != NULL && store_call_get(api->pg, id, got_call, r) < 0)
        refused(r);
}

/* ------------------------------------------------- patch and cancel */

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

static void answer_update(struct api_req *r, const struct store_err *e,
                          const struct store_update *u, const char *verb)
{
    if (e != NULL)
        api_store_failed(r->req, e, "query");
    else if (u->result == STORE_UPDATE_NOT_FOUND)
        api_call_not_found(r->req, r->id);
    else if (u->result == STORE_UPDATED)
        api_json(r->req, 200, u->doc.text, u->doc.len, NULL);
    else if (u->result == STORE_TO_LISTED)
        api_to_listed(r->req);
    else
        answer_not_pending(r->req, r->id, u->status, verb);
    free(r);
}

static void patched(void *ctx, const struct store_err *e, const struct store_update *u)
{
    answer_update(ctx, e, u, "changed");
}

static void cancelled(void *ctx, const struct store_err *e, const struct store_update *u)
{
    answer_update(ctx, e, u, "cancelled");
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
    struct api_req *r = api_req_new(req, id);
    if (r != NULL && store_call_patch(api->pg, id, &in, patched, r) < 0)
        refused(r);
    call_input_free(&in);
}

void api_calls_cancel(struct api *api, struct http_request *req, const char *id)
{
    struct api_req *r = api_req_new(req, id);
    if (r != NULL && store_call_cancel(api->pg, id, cancelled, r) < 0)
        refused(r);
}

/* ----------------------------------------------------------------- list */

struct list_req {
    struct api_req r;
    int page_size;
    int page; /* 0 in cursor mode: "page": null */
};

static void render_page(struct strbuf *b, const struct list_req *l, const struct store_page *pg)
{
    char cursor[CURSOR_BUF] = "";
    strbuf_adds(b, "{\"data\":[");
    for (int i = 0; i < pg->n; i++) {
        if (i > 0)
            strbuf_addc(b, ',');
        strbuf_add(b, pg->rows[i].doc.text, pg->rows[i].doc.len);
    }
    if (pg->more)
        cursor_encode(pg->rows[pg->n - 1].created_us, pg->rows[pg->n - 1].id, cursor,
                      sizeof(cursor));
    strbuf_adds(b, "],\"page\":");
    if (l->page > 0)
        strbuf_addf(b, "%d", l->page);
    else
        strbuf_adds(b, "null");
    strbuf_addf(b, ",\"pageSize\":%d,\"total\":%lld,\"nextCursor\":", l->page_size, pg->total);
    if (cursor[0])
        strbuf_addf(b, "\"%s\"}", cursor);
    else
        strbuf_adds(b, "null}");
}

static void listed(void *ctx, const struct store_err *e, const struct store_page *page)
{
    struct list_req *l = ctx;
    struct strbuf b = { 0 };
    if (e != NULL) {
        api_store_failed(l->r.req, e, "query");
        free(l);
        return;
    }
    render_page(&b, l, page);
    if (b.failed)
        api_internal_error(l->r.req, "list", "out of memory");
    else
        api_json(l->r.req, 200, b.p, b.len, NULL);
    strbuf_free(&b);
    free(l);
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
    struct list_req *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        api_internal_error(req, "query", "out of memory");
        return;
    }
    l->r.req = req;
    l->page_size = q.page_size;
    l->page = q.has_cursor ? 0 : q.page;
    if (store_calls_list(api->pg, &q, listed, l) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        free(l);
    }
}
