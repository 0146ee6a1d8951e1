/*
 * api_campaigns.c — campaigns and dead-letter replay (DESIGN.md section 10).
 *
 * Owns: POST/GET /api/v1/campaigns, GET /api/v1/campaigns/{id}, its
 * calls (POST adds, GET lists), pause/resume/cancel, and POST
 * /api/v1/calls/{id}/retry and /api/v1/calls/retry: turning each request
 * into one store statement (store/campaigns.h) and its result into the
 * answer.
 *
 * The items of a campaign are validated here, one by one, with the rules
 * of POST /api/v1/calls (validate_call_object()); the campaign's settings
 * are their defaults (scriptId, callingWindow, notBefore, expiresAt,
 * priority; maxAttempts in SQL), and each valid item gets its zones and
 * first hold exactly as a single call does.  A valid item becomes one
 * input row, an invalid one an entry of "rejected"; all the rows go to
 * PostgreSQL as one JSON array, stored by one INSERT in the transaction
 * that stores the campaign.  Nothing is published to Kafka from here: the
 * scheduler publishes due calls (published_at NULL) as slots free up, so
 * a 10 000-call campaign costs the API one statement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/api.h"
#include "api/intake.h"
#include "api/validate.h"
#include "store/campaigns.h"
#include "util/strbuf.h"

/* What a campaign gives the items that do not say otherwise. */
struct item_defaults {
    const char *script_id;
    const struct window *window; /* NULL: [compliance] */
    const char *window_json;
    struct call_instant not_before;
    struct call_instant expires_at;
    int priority;
};

/* ------------------------------------------------------------ answers */

static void answer_problem(struct http_request *req, int status, const char *field, const char *msg,
                           const char *detail)
{
    struct problem p;
    problem_init(&p);
    problem_set(&p, status, "%s", detail);
    if (field != NULL)
        problem_add_field(&p, field, "%s", msg);
    p.status = status;
    api_problem(req, &p);
    problem_reset(&p);
}

static void campaign_not_found(struct http_request *req, const char *id)
{
    struct problem p;
    problem_init(&p);
    problem_set(&p, 404, "no campaign with id %s", id);
    api_problem(req, &p);
    problem_reset(&p);
}

/* The "status" member of a resource BODY, into OUT ("?" when unreadable). */
static void status_of(const struct store_json *body, char *out, size_t n)
{
    json_t *j = body->text != NULL ? json_loadb(body->text, body->len, 0, NULL) : NULL;
    const char *s = json_string_value(json_object_get(j, "status"));
    snprintf(out, n, "%s", s != NULL ? s : "?");
    json_decref(j);
}

static void answer_final(struct http_request *req, const char *id, const struct store_op *op,
                         const char *verb)
{
    char status[32];
    struct problem p;
    status_of(&op->body, status, sizeof status);
    problem_init(&p);
    problem_set(&p, 409, "campaign %s is %s, a final state; it cannot be %s", id, status, verb);
    api_problem(req, &p);
    problem_reset(&p);
}

static void answer_body(struct http_request *req, int status, const struct store_op *op)
{
    api_json(req, status, op->body.text, op->body.len, NULL);
}

/* A body that must be JSON when there is one (the optional bodies of the
 * actions and of the single retry). */
static int optional_json_body(struct http_request *req, size_t len)
{
    if (len == 0 ||
        api_content_type_is(http_request_header(req, "Content-Type"), "application/json"))
        return 1;
    answer_problem(req, 415, NULL, NULL, "Content-Type must be application/json");
    return 0;
}

/* -------------------------------------------------------------- items */

/* Append {"index":I,"errors":[…]} for P to REJ (jansson escapes what the
 * client sent back to it). */
static void add_rejection(struct strbuf *rej, size_t i, const struct problem *p)
{
    json_t *errs = json_array();
    for (size_t k = 0; errs != NULL && k < p->nfields; k++)
        json_array_append_new(errs, json_pack("{s:s,s:s}", "field", p->fields[k].field, "message",
                                              p->fields[k].message));
    json_t *o = json_pack("{s:I,s:o}", "index", (json_int_t)i, "errors", errs);
    char *t = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    if (t == NULL) {
        rej->failed = true;
    } else {
        if (rej->len > 1)
            strbuf_addc(rej, ',');
        strbuf_adds(rej, t);
    }
    free(t);
    json_decref(o);
}

/* The campaign's defaults on a validated item C. */
static int apply_defaults(struct call_input *c, const struct item_defaults *d)
{
    if (!c->has_script_id) {
        snprintf(c->script_id, sizeof c->script_id, "%s", d->script_id);
        c->has_script_id = 1;
    }
    if (c->window_json == NULL && d->window_json != NULL) {
        if ((c->window_json = strdup(d->window_json)) == NULL)
            return -1;
        c->window = *d->window;
    }
    if (!c->not_before.set)
        c->not_before = d->not_before;
    if (!c->expires_at.set)
        c->expires_at = d->expires_at;
    if (!c->has_priority) {
        c->has_priority = 1;
        c->priority = d->priority;
    }
    return 0;
}

/* Item I: a row in ROWS when valid, else an entry in REJ.  -1: out of
 * memory. */
static int one_item(struct api *api, size_t i, const json_t *item, const struct item_defaults *d,
                    int64_t now, struct strbuf *rows, struct strbuf *rej)
{
    struct call_input c;
    struct problem p;
    struct api_hold h;
    problem_init(&p);
    if (validate_call_object(item, api->cfg->max_metadata_bytes, 0, &c, &p) == 0) {
        int own_expiry = c.expires_at.set;
        if (apply_defaults(&c, d) < 0)
            p.oom = 1;
        else if (validate_schedule(&c.not_before, &c.expires_at, own_expiry, now, &p) == 0) {
            api_call_zones(api, c.to, c.timezone, &h);
            api_call_hold(api, c.window_json != NULL ? &c.window : NULL, &c.not_before, now, &h);
            if (rows->len > 1)
                strbuf_addc(rows, ',');
            intake_call_row(rows, (int)i, NULL, &c, &h);
            strbuf_addc(rows, '}');
        }
    }
    int oom = p.oom || p.status == 500;
    if (!oom && problem_failed(&p))
        add_rejection(rej, i, &p);
    call_input_free(&c);
    problem_reset(&p);
    return oom ? -1 : 0;
}

/* Every item of CALLS into ROWS and REJ (JSON arrays).  0, or -1 when
 * memory ran out. */
static int build_items(struct api *api, const json_t *calls, const struct item_defaults *d,
                       struct strbuf *rows, struct strbuf *rej)
{
    int64_t now = api_now_us();
    strbuf_addc(rows, '[');
    strbuf_addc(rej, '[');
    for (size_t i = 0; calls != NULL && i < json_array_size(calls); i++)
        if (one_item(api, i, json_array_get(calls, i), d, now, rows, rej) < 0)
            return -1;
    strbuf_addc(rows, ']');
    strbuf_addc(rej, ']');
    return rows->failed || rej->failed ? -1 : 0;
}

/* ------------------------------------------------------------- create */

struct create_req {
    struct http_request *req;
};

static void created(void *ctx, const struct store_err *e, const struct store_op *op)
{
    struct create_req *cr = ctx;
    char loc[128];
    if (e != NULL) {
        api_store_failed(cr->req, e, "creating a campaign");
    } else if (op->kind == STORE_OP_OK && op->body.len > 44) {
        /* campaign_json() starts {"id":"<uuid>" */
        snprintf(loc, sizeof loc, "Location: /api/v1/campaigns/%.36s\r\n", op->body.text + 7);
        api_json(cr->req, 201, op->body.text, op->body.len, loc);
    } else if (op->kind == STORE_OP_REPLAYED) {
        answer_body(cr->req, 200, op);
    } else if (op->kind == STORE_OP_KEY_CONFLICT) {
        answer_problem(cr->req, 422, "Idempotency-Key", "already used with a different body",
                       "this Idempotency-Key was used with a different request body");
    } else {
        api_internal_error(cr->req, "creating a campaign", "unexpected answer");
    }
    free(cr);
}

/* The campaign's columns as campaign_create() reads them. */
static char *settings_json(const struct campaign_input *ci)
{
    char t[INSTANT_TEXT_MAX];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(ci->name));
    json_object_set_new(o, "script_id", json_string(ci->script_id));
    if (ci->max_concurrent > 0)
        json_object_set_new(o, "max_concurrent", json_integer(ci->max_concurrent));
    if (ci->calls_per_second > 0)
        json_object_set_new(o, "calls_per_second", json_real(ci->calls_per_second));
    json_object_set_new(o, "priority",
                        json_integer(ci->has_priority ? ci->priority : CALL_PRIORITY_DEFAULT));
    if (ci->window_json != NULL)
        json_object_set_new(o, "calling_window", json_loads(ci->window_json, 0, NULL));
    if (ci->not_before.set) {
        instant_format(ci->not_before.us, t);
        json_object_set_new(o, "not_before", json_string(t));
    }
    if (ci->expires_at.set) {
        instant_format(ci->expires_at.us, t);
        json_object_set_new(o, "expires_at", json_string(t));
    }
    if (ci->retry_json != NULL)
        json_object_set_new(o, "retry", json_loads(ci->retry_json, 0, NULL));
    if (ci->max_attempts > 0)
        json_object_set_new(o, "max_attempts", json_integer(ci->max_attempts));
    if (ci->events_url != NULL)
        json_object_set_new(o, "events_url", json_string(ci->events_url));
    if (ci->metadata != NULL)
        json_object_set_new(o, "metadata", json_loads(ci->metadata, 0, NULL));
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* Validate REQ's body, its key and its items; answers itself and
 * returns -1 when it cannot go on. */
static int create_prepare(struct api *api, struct http_request *req, struct campaign_input *ci,
                          char hash[REQUEST_HASH_HEX], struct strbuf *rows, struct strbuf *rej)
{
    struct problem p;
    size_t len;
    const char *body = http_request_body(req, &len);
    const char *key = http_request_header(req, "Idempotency-Key");
    problem_init(&p);
    if (validate_campaign(body, len, api->cfg->max_metadata_bytes, api_now_us(), ci, &p) < 0) {
        api_problem(req, &p);
        problem_reset(&p);
        return -1;
    }
    if (key != NULL && !validate_idempotency_key(key)) {
        answer_problem(req, 400, "Idempotency-Key", "must be 1 to 255 printable ASCII characters",
                       "invalid Idempotency-Key");
        return -1;
    }
    struct item_defaults d = {
        .script_id = ci->script_id,
        .window = ci->window_json != NULL ? &ci->window : NULL,
        .window_json = ci->window_json,
        .not_before = ci->not_before,
        .expires_at = ci->expires_at,
        .priority = ci->has_priority ? ci->priority : CALL_PRIORITY_DEFAULT,
    };
    if (request_hash(body, len, hash) < 0 || build_items(api, ci->calls, &d, rows, rej) < 0) {
        api_internal_error(req, "creating a campaign", "out of memory");
        return -1;
    }
    return 0;
}

void api_campaigns_create(struct api *api, struct http_request *req)
{
    struct campaign_input ci;
    struct strbuf rows = { 0 }, rej = { 0 };
    char hash[REQUEST_HASH_HEX];
    char *settings = NULL;
    struct create_req *cr = NULL;

    if (create_prepare(api, req, &ci, hash, &rows, &rej) < 0)
        goto out;
    settings = settings_json(&ci);
    cr = calloc(1, sizeof(*cr));
    if (settings == NULL || cr == NULL) {
        api_internal_error(req, "creating a campaign", "out of memory");
        goto out;
    }
    cr->req = req;
    if (store_campaign_create(api->pg, settings, rows.p, rej.p,
                              ci.max_attempts > 0 ? ci.max_attempts : api->cfg->max_attempts,
                              http_request_header(req, "Idempotency-Key"), hash, created, cr) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        goto out;
    }
    cr = NULL; /* the callback frees it */
out:
    free(cr);
    free(settings);
    strbuf_free(&rows);
    strbuf_free(&rej);
    campaign_input_free(&ci);
}

/* ---------------------------------------------------------- add calls */

struct add_req {
    struct api_req r;
    struct api *api;
    json_t *root; /* the body; its "calls" */
    const json_t *calls;
};

static void add_free(struct add_req *ar)
{
    json_decref(ar->root);
    free(ar);
}

static void added(void *ctx, const struct store_err *e, const struct store_op *op)
{
    struct add_req *ar = ctx;
    if (e != NULL)
        api_store_failed(ar->r.req, e, "adding calls");
    else if (op->kind == STORE_OP_OK)
        answer_body(ar->r.req, 200, op);
    else if (op->kind == STORE_OP_FINAL)
        answer_final(ar->r.req, ar->r.id, op, "given calls");
    else
        campaign_not_found(ar->r.req, ar->r.id);
    add_free(ar);
}

/* The campaign's defaults D as read: validate the items and store them. */
static void add_items(struct add_req *ar, const struct store_campaign_defaults *sd)
{
    struct strbuf rows = { 0 }, rej = { 0 };
    struct window w;
    char why[256];
    json_t *wj = sd->window_json != NULL ? json_loads(sd->window_json, 0, NULL) : NULL;
    int has_w = wj != NULL && rules_window_from_json(wj, &w, why, sizeof why) == 0;
    json_decref(wj);
    struct item_defaults d = {
        .script_id = sd->script_id,
        .window = has_w ? &w : NULL,
        .window_json = has_w ? sd->window_json : NULL,
        .not_before = { .given = 0, .set = sd->not_before_us != 0, .us = sd->not_before_us },
        .expires_at = { .given = 0, .set = sd->expires_at_us != 0, .us = sd->expires_at_us },
        .priority = sd->priority,
    };
    if (build_items(ar->api, ar->calls, &d, &rows, &rej) < 0) {
        api_internal_error(ar->r.req, "adding calls", "out of memory");
        add_free(ar);
    } else if (store_campaign_add_calls(ar->api->pg, ar->r.id, rows.p, rej.p,
                                        ar->api->cfg->max_attempts, added, ar) < 0) {
        api_unavailable(ar->r.req, API_DB_UNREACHABLE);
        add_free(ar);
    }
    strbuf_free(&rows);
    strbuf_free(&rej);
}

static void got_defaults(void *ctx, const struct store_err *e,
                         const struct store_campaign_defaults *d)
{
    struct add_req *ar = ctx;
    if (e != NULL)
        api_store_failed(ar->r.req, e, "query");
    else if (d == NULL)
        campaign_not_found(ar->r.req, ar->r.id);
    else if (strcmp(d->status, "FINISHED") == 0 || strcmp(d->status, "CANCELLED") == 0)
        answer_problem(ar->r.req, 409, NULL, NULL,
                       strcmp(d->status, "FINISHED") == 0
                           ? "the campaign is FINISHED, a final state; it takes no more calls"
                           : "the campaign is CANCELLED, a final state; it takes no more calls");
    else {
        add_items(ar, d);
        return;
    }
    add_free(ar);
}

void api_campaigns_add_calls(struct api *api, struct http_request *req, const char *id)
{
    struct problem p;
    size_t len;
    const char *body = http_request_body(req, &len);
    struct add_req *ar = calloc(1, sizeof(*ar));
    if (ar == NULL) {
        api_internal_error(req, "adding calls", "out of memory");
        return;
    }
    problem_init(&p);
    if (validate_campaign_calls(body, len, &ar->root, &ar->calls, &p) < 0) {
        api_problem(req, &p);
        problem_reset(&p);
        add_free(ar);
        return;
    }
    ar->r.req = req;
    ar->api = api;
    snprintf(ar->r.id, sizeof ar->r.id, "%s", id);
    if (store_campaign_defaults(api->pg, id, got_defaults, ar) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        add_free(ar);
    }
}

/* ----------------------------------------------- get, pause, resume, cancel */

struct op_req {
    struct api_req r;
    const char *verb; /* for the 409 */
};

static void answered(void *ctx, const struct store_err *e, const struct store_op *op)
{
    struct op_req *o = ctx;
    if (e != NULL)
        api_store_failed(o->r.req, e, "query");
    else if (op->kind == STORE_OP_OK)
        answer_body(o->r.req, 200, op);
    else if (op->kind == STORE_OP_FINAL)
        answer_final(o->r.req, o->r.id, op, o->verb);
    else
        campaign_not_found(o->r.req, o->r.id);
    free(o);
}

static struct op_req *op_req_new(struct http_request *req, const char *id, const char *verb)
{
    struct op_req *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        api_internal_error(req, "query", "out of memory");
        return NULL;
    }
    o->r.req = req;
    o->verb = verb;
    snprintf(o->r.id, sizeof o->r.id, "%s", id);
    return o;
}

void api_campaigns_get(struct api *api, struct http_request *req, const char *id)
{
    struct op_req *o = op_req_new(req, id, "read");
    if (o != NULL && store_campaign_get(api->pg, id, answered, o) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        free(o);
    }
}

void api_campaigns_action(struct api *api, struct http_request *req, const char *id,
                          const char *action)
{
    size_t len;
    http_request_body(req, &len);
    if (!optional_json_body(req, len))
        return;
    const char *verb = strcmp(action, "pause") == 0    ? "paused"
                       : strcmp(action, "resume") == 0 ? "resumed"
                                                       : "cancelled";
    struct op_req *o = op_req_new(req, id, verb);
    if (o != NULL && store_campaign_set_status(api->pg, id, action, answered, o) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        free(o);
    }
}

/* -------------------------------------------------------------- lists */

struct clist_req {
    struct api_req r;
    int calls; /* a campaign's calls: "total" and "page" too */
    int page;
    int page_size;
};

static void render_cpage(struct strbuf *b, const struct clist_req *l, const struct store_page *pg)
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
    strbuf_addf(b, "],\"pageSize\":%d", l->page_size);
    if (l->calls && l->page > 0)
        strbuf_addf(b, ",\"page\":%d", l->page);
    if (l->calls)
        strbuf_addf(b, ",\"total\":%lld", pg->total);
    if (cursor[0])
        strbuf_addf(b, ",\"nextCursor\":\"%s\"}", cursor);
    else
        strbuf_adds(b, ",\"nextCursor\":null}");
}

static void clisted(void *ctx, const struct store_err *e, int found, const struct store_page *pg)
{
    struct clist_req *l = ctx;
    struct strbuf b = { 0 };
    if (e != NULL) {
        api_store_failed(l->r.req, e, "query");
    } else if (!found) {
        campaign_not_found(l->r.req, l->r.id);
    } else {
        render_cpage(&b, l, pg);
        if (b.failed)
            api_internal_error(l->r.req, "list", "out of memory");
        else
            api_json(l->r.req, 200, b.p, b.len, NULL);
    }
    strbuf_free(&b);
    free(l);
}

/* GET /api/v1/campaigns (ID NULL) or /api/v1/campaigns/{id}/calls. */
void api_campaigns_list(struct api *api, struct http_request *req, const char *id)
{
    struct list_query q;
    struct problem p;
    problem_init(&p);
    if (validate_list_query(http_request_query(req), &q, &p) == 0 && id == NULL &&
        (q.status != NULL || q.has_page))
        problem_add_field(&p, q.status != NULL ? "status" : "page",
                          "campaigns are listed by cursor only");
    if (problem_failed(&p)) {
        api_problem(req, &p);
        problem_reset(&p);
        return;
    }
    struct clist_req *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        api_internal_error(req, "query", "out of memory");
        return;
    }
    l->r.req = req;
    if (id != NULL)
        snprintf(l->r.id, sizeof l->r.id, "%s", id);
    l->calls = id != NULL;
    l->page = q.has_cursor ? 0 : q.page;
    l->page_size = q.page_size;
    if (store_campaigns_list(api->pg, id, &q, clisted, l) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        free(l);
    }
}

/* ------------------------------------------------------------- replay */

static void retried(void *ctx, const struct store_err *e, const struct store_op *op)
{
    struct api_req *r = ctx;
    char status[32], detail[160];
    if (e != NULL) {
        api_store_failed(r->req, e, "retrying a call");
    } else if (op->kind == STORE_OP_OK) {
        answer_body(r->req, 200, op);
    } else if (op->kind == STORE_OP_LISTED) {
        api_to_listed(r->req);
    } else if (op->kind == STORE_OP_NOT_DEAD) {
        status_of(&op->body, status, sizeof status);
        snprintf(detail, sizeof detail,
                 "call %s is %s; only FAILED, EXPIRED or SUPPRESSED calls can be retried", r->id,
                 status);
        answer_problem(r->req, 409, NULL, NULL, detail);
    } else if (op->kind == STORE_OP_BAD_SCHEDULE) {
        answer_problem(r->req, 400, "expiresAt", "expiresAt must be after notBefore",
                       "the call's expiresAt would not be after its notBefore");
    } else if (op->kind == STORE_OP_CANCELLED) {
        answer_problem(r->req, 409, NULL, NULL, "the call's campaign is CANCELLED");
    } else {
        api_call_not_found(r->req, r->id);
    }
    free(r);
}

void api_calls_retry(struct api *api, struct http_request *req, const char *id)
{
    struct retry_input ri;
    struct problem p;
    size_t len;
    const char *body = http_request_body(req, &len);
    if (!optional_json_body(req, len))
        return;
    problem_init(&p);
    if (validate_retry(body, len, 0, api_now_us(), &ri, &p) < 0) {
        api_problem(req, &p);
        problem_reset(&p);
        return;
    }
    struct api_req *r = api_req_new(req, id);
    if (r != NULL && store_call_retry(api->pg, id, &ri, api->cfg->max_attempts, retried, r) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        free(r);
    }
    retry_input_free(&ri);
}

static void bulk_retried(void *ctx, const struct store_err *e, long long n)
{
    struct api_req *r = ctx;
    char body[64];
    if (e != NULL) {
        api_store_failed(r->req, e, "retrying calls");
    } else {
        int len = snprintf(body, sizeof body, "{\"retried\":%lld}", n);
        api_json(r->req, 200, body, (size_t)len, NULL);
    }
    free(r);
}

void api_calls_retry_bulk(struct api *api, struct http_request *req)
{
    struct retry_input ri;
    struct problem p;
    size_t len;
    const char *body = http_request_body(req, &len);
    problem_init(&p);
    if (validate_retry(body, len, 1, api_now_us(), &ri, &p) < 0) {
        api_problem(req, &p);
        problem_reset(&p);
        return;
    }
    struct api_req *r = api_req_new(req, NULL);
    if (r != NULL &&
        store_calls_retry_bulk(api->pg, &ri, api->cfg->max_attempts, bulk_retried, r) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        free(r);
    }
    retry_input_free(&ri);
}
