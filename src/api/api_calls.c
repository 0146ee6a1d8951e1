/*
 * api_calls.c — the call resource: get, patch, cancel, list.
 *
 * Owns: turning each request into one store statement (store/calls.h) and
 * its result into the answer.  PostgreSQL renders the call JSON, so the
 * text goes to the client as the database produced it.  PATCH and cancel
 * only change a PENDING call: one that a concurrent dispatch or cancel got
 * to first answers 409 instead of being overwritten.  A PATCH of the
 * section 9 fields also decides the call's zones and hold (see below).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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
    else /* not PENDING, or changed by someone else meanwhile */
        answer_not_pending(r->req, r->id, u->status, verb);
    free(r);
}

static void cancelled(void *ctx, const struct store_err *e, const struct store_update *u)
{
    answer_update(ctx, e, u, "cancelled");
}

/*
 * PATCH.  A change of scriptId or metadata alone is one conditional
 * update.  A change of anything the rules of DESIGN.md section 9 look at
 * (to, timezone, callingWindow, notBefore, expiresAt) needs the stored
 * call first: the rules run here, in C, on the call as it will be; then
 * the update applies to the version read only, and a call changed in
 * between is read and decided again (PATCH_MAX_TRIES in all, then 409).
 */
#define PATCH_MAX_TRIES 3

struct patch_req {
    struct api_req r; /* first: answer_update() frees it as an api_req */
    struct api *api;
    struct call_input in;
    int tries;
};

static void patch_free(struct patch_req *pr)
{
    call_input_free(&pr->in);
    free(pr);
}

static void patch_read(struct patch_req *pr);

static void patched(void *ctx, const struct store_err *e, const struct store_update *u)
{
    struct patch_req *pr = ctx;
    if (e == NULL && u->result == STORE_CHANGED && pr->tries < PATCH_MAX_TRIES) {
        patch_read(pr);
        return;
    }
    call_input_free(&pr->in);
    answer_update(&pr->r, e, u, "changed"); /* frees pr */
}

static int needs_rules(const struct call_input *in)
{
    return in->has_to || in->has_timezone || in->has_window || in->not_before.given ||
           in->expires_at.given;
}

/* A stored instant (0: none) as a call_instant. */
static struct call_instant stored_instant(int64_t us)
{
    struct call_instant t = { .given = 0, .set = us != 0, .us = us };
    return t;
}

/* The call's window after the change into *W: NULL for [compliance]. */
static const struct window *merged_window(const struct call_input *in,
                                          const struct store_call_rules *cr, struct window *w)
{
    char why[256];
    if (in->has_window)
        return in->window_json != NULL ? &in->window : NULL;
    if (cr->window_json == NULL)
        return NULL;
    json_t *j = json_loads(cr->window_json, 0, NULL);
    int rc = j != NULL ? rules_window_from_json(j, w, why, sizeof why) : -1;
    json_decref(j);
    return rc == 0 ? w : NULL; /* stored by us, so it parses */
}

/* The hold after the change, never earlier than a wait the rules here do
 * not decide: a retry wait (no hold reason, next attempt ahead) or the
 * dispatcher's attempt budget of the number ("frequency", while `to` stays):
 * the later one wins, with its reason. */
static void decide_hold(struct patch_req *pr, const struct store_call_rules *cr,
                        const struct call_instant *nb, int64_t now, struct api_hold *h)
{
    struct window w;
    const struct window *wp = merged_window(&pr->in, cr, &w);
    api_call_hold(pr->api, wp, nb, now, h);
    int other_wait =
        cr->hold_reason == NULL || (strcmp(cr->hold_reason, "frequency") == 0 && !pr->in.has_to);
    if (other_wait && cr->next_attempt_us > (h->until_us != 0 ? h->until_us : now)) {
        h->until_us = cr->next_attempt_us;
        h->reason = cr->hold_reason;
    }
}

/* The rules on the call CR as the PATCH leaves it, then the update. */
static void patch_decide(struct patch_req *pr, const struct store_call_rules *cr)
{
    struct problem p;
    struct api_hold h;
    const struct call_input *in = &pr->in;
    struct call_instant nb =
        in->not_before.given ? in->not_before : stored_instant(cr->not_before_us);
    struct call_instant ex =
        in->expires_at.given ? in->expires_at : stored_instant(cr->expires_at_us);
    int64_t now = api_now_us();
    const char *tz = in->has_timezone ? in->timezone : cr->timezone;

    problem_init(&p);
    nb.given = in->not_before.given;
    if (validate_schedule(&nb, &ex, in->expires_at.given, now, &p) == 0) {
        api_call_zones(pr->api, in->has_to ? in->to : cr->to, tz, &h);
        decide_hold(pr, cr, &nb, now, &h);
    }
    if (problem_failed(&p)) {
        api_problem(pr->r.req, &p);
        problem_reset(&p);
        patch_free(pr);
        return;
    }
    struct store_patch_rules r = {
        .version = cr->version,
        .set_zones = in->has_to || in->has_timezone,
        .zones = h.zones,
        .nzones = h.nzones,
        .set_hold = in->has_to || in->has_timezone || in->has_window || in->not_before.given,
        .hold_until_us = h.until_us,
        .hold_reason = h.reason,
    };
    if (store_call_patch(pr->api->pg, pr->r.id, in, &r, patched, pr) < 0) {
        api_unavailable(pr->r.req, API_DB_UNREACHABLE);
        patch_free(pr);
    }
}

static void got_rules(void *ctx, const struct store_err *e, const struct store_call_rules *cr)
{
    struct patch_req *pr = ctx;
    if (e != NULL)
        api_store_failed(pr->r.req, e, "query");
    else if (cr == NULL)
        api_call_not_found(pr->r.req, pr->r.id);
    else if (strcmp(cr->status, "PENDING") != 0)
        answer_not_pending(pr->r.req, pr->r.id, cr->status, "changed");
    else {
        patch_decide(pr, cr);
        return;
    }
    patch_free(pr);
}

static void patch_read(struct patch_req *pr)
{
    pr->tries++;
    if (store_call_read_rules(pr->api->pg, pr->r.id, got_rules, pr) < 0) {
        api_unavailable(pr->r.req, API_DB_UNREACHABLE);
        patch_free(pr);
    }
}

void api_calls_patch(struct api *api, struct http_request *req, const char *id)
{
    struct problem p;
    size_t len;
    const char *body = http_request_body(req, &len);
    struct patch_req *pr = calloc(1, sizeof(*pr));

    if (pr == NULL) {
        api_internal_error(req, "patch", "out of memory");
        return;
    }
    problem_init(&p);
    if (validate_patch(body, len, api->cfg->max_metadata_bytes, &pr->in, &p) < 0) {
        api_problem(req, &p);
        problem_reset(&p);
        free(pr);
        return;
    }
    pr->r.req = req;
    snprintf(pr->r.id, sizeof(pr->r.id), "%s", id);
    pr->api = api;
    if (needs_rules(&pr->in)) {
        patch_read(pr);
        return;
    }
    if (store_call_patch(api->pg, id, &pr->in, NULL, patched, pr) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        patch_free(pr);
    }
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
