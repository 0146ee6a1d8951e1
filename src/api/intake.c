/*
 * intake.c — creating calls with group commit (see intake.h).
 *
 * A create request is validated, given a fresh UUID, and queued.  At most one
 * pool job is "open" (submitted, not yet sent); when a connection frees up,
 * the pool asks us to build that job's statement and we put every queued
 * request into it.  No new job opens while INTAKE_MAX_IN_FLIGHT statements
 * are at the database.  So under load each commit answers as many requests
 * as arrived during the previous one, and with an idle database a request
 * goes out alone at once.
 *
 * The rules of DESIGN.md section 9 are applied here, per request, before it
 * queues: its zones (its timezone, else its number's) and whether it may
 * be dialled at once.  A call held (its window is closed, or its
 * notBefore is ahead) is stored with next_attempt_at and hold_reason and
 * not published: the scheduler publishes it when it is due.  That costs
 * no allocation (the zones point into the prefix table) and no round trip.
 *
 * Idempotency races: two requests with one key in one batch cannot both be
 * resolved by one statement (a statement does not see its own inserts), so a
 * batch takes one request per key and leaves the rest for the next batch.
 * A request whose key another transaction inserted while we ran gets no row
 * back (our snapshot predates that commit): it is queued again, and the next
 * statement sees the other's call.
 *
 * Two batches (two http children) holding the same keys in different orders
 * would each wait for a key the other inserted first: a deadlock, which
 * PostgreSQL breaks by failing one batch (500 for all its requests).  So
 * intake_calls() inserts the keys in one global order (ORDER BY idem_key): a
 * batch waits only on a key above all it holds, and no cycle can form.
 */
#include "api/intake.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "api/api.h"
#include "api/validate.h"
#include "store/calls.h"
#include "util/log.h"
#include "util/shm.h"
#include "util/strbuf.h"

/* A lost key race is retried this often before the client gets a 409. */
#define INTAKE_MAX_RETRIES 3

struct pending {
    struct pending *next;
    struct http_request *req;
    char id[UUID_LEN + 1];
    struct call_input call;
    char *key; /* Idempotency-Key, or NULL */
    char hash[REQUEST_HASH_HEX];
    int retries;
    struct api_hold hold; /* zones and the first hold, decided at accept */
};

struct batch {
    struct intake *in;
    struct pending **items;
    int n;
    char *json;
};

struct intake {
    struct api *api;
    struct pending *head, **tail;
    int queued;
    int job_open;  /* a submitted job not yet built */
    int in_flight; /* batches sent, not answered */
    intake_created_fn created_fn;
    void *created_arg;
};

static int submit_job(struct intake *in);
static void submit_if_room(struct intake *in);

/* ------------------------------------------------------------- queue */

static void pending_free(struct pending *p)
{
    call_input_free(&p->call);
    free(p->key);
    free(p);
}

static void enqueue(struct intake *in, struct pending *p, int at_head)
{
    if (at_head) {
        p->next = in->head;
        in->head = p;
        if (in->tail == &in->head)
            in->tail = &p->next;
    } else {
        p->next = NULL;
        *in->tail = p;
        in->tail = &p->next;
    }
    in->queued++;
}

/* Answer every queued request with 503 (the pool refused the job).  The
 * queue is emptied before the first answer: whatever an answer leads to
 * (a new request queued, a job submitted) finds a consistent, empty queue,
 * and this loop walks a list nobody else can reach. */
static void fail_queue(struct intake *in, const char *why)
{
    struct pending *list = in->head;

    in->head = NULL;
    in->tail = &in->head;
    in->queued = 0;
    while (list != NULL) {
        struct pending *p = list;
        list = p->next;
        api_unavailable(p->req, why);
        pending_free(p);
    }
}

/* ------------------------------------------------------ the statement */

/* Append S to B as a JSON string. */
static void add_json_string(struct strbuf *b, const char *s)
{
    /* jansson escapes whatever the key holds (quotes, backslashes …) */
    json_t *j = json_string(s);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    if (t != NULL)
        strbuf_adds(b, t);
    else
        b->failed = true;
    free(t);
    json_decref(j);
}

/* Append an instant as a JSON string member ",\"NAME\":\"…Z\"". */
static void add_instant(struct strbuf *b, const char *name, int64_t us)
{
    char t[INSTANT_TEXT_MAX];
    instant_format(us, t);
    strbuf_addf(b, ",\"%s\":\"%s\"", name, t);
}

/* The section 9 and 10 members of one input row (sql/017_campaign_api.sql).
 * Zone names need no escaping: the rules checked each against the tzdata
 * name rules (letters, digits, "_+-/."), the client's as well as the data's. */
static void add_rules(struct strbuf *b, const struct call_input *c, const struct api_hold *h)
{
    if (c->has_timezone)
        strbuf_addf(b, ",\"timezone\":\"%s\"", c->timezone);
    for (size_t z = 0; z < h->nzones; z++) /* none: NULL, "no zone data" */
        strbuf_addf(b, "%s\"%s\"", z ? "," : ",\"timezones\":[", h->zones[z]);
    if (h->nzones > 0)
        strbuf_addc(b, ']');
    if (c->window_json != NULL) {
        strbuf_adds(b, ",\"calling_window\":");
        strbuf_adds(b, c->window_json);
    }
    if (c->not_before.set)
        add_instant(b, "not_before", c->not_before.us);
    if (c->expires_at.set)
        add_instant(b, "expires_at", c->expires_at.us);
    if (h->reason != NULL) {
        add_instant(b, "next_attempt_at", h->until_us);
        strbuf_addf(b, ",\"hold_reason\":\"%s\"", h->reason);
    }
    if (c->has_priority)
        strbuf_addf(b, ",\"priority\":%d", c->priority);
    if (c->events_url != NULL) {
        strbuf_adds(b, ",\"events_url\":");
        add_json_string(b, c->events_url);
    }
}

void intake_call_row(struct strbuf *b, int ord, const char *id, const struct call_input *c,
                     const struct api_hold *h)
{
    strbuf_addf(b, "{\"ord\":%d", ord);
    if (id != NULL)
        strbuf_addf(b, ",\"id\":\"%s\"", id);
    strbuf_addf(b, ",\"to_number\":\"%s\",\"script_id\":\"%s\"", c->to, c->script_id);
    add_rules(b, c, h);
    if (c->metadata != NULL) {
        strbuf_adds(b, ",\"metadata\":");
        strbuf_adds(b, c->metadata);
    }
}

/* The input rows as one JSON array (see intake_calls() in
 * sql/017_campaign_api.sql).  to, scriptId and the id are validated to
 * characters that need no escaping; metadata is already compact JSON. */
static char *batch_json(struct batch *b)
{
    struct strbuf buf = { 0 };
    strbuf_addc(&buf, '[');
    for (int i = 0; i < b->n && !buf.failed; i++) {
        struct pending *p = b->items[i];
        if (i > 0)
            strbuf_addc(&buf, ',');
        intake_call_row(&buf, i, p->id, &p->call, &p->hold);
        strbuf_addf(&buf, ",\"req_hash\":\"%s\"", p->hash);
        if (p->key != NULL) {
            strbuf_adds(&buf, ",\"idem_key\":");
            add_json_string(&buf, p->key);
        }
        strbuf_addc(&buf, '}');
    }
    strbuf_addc(&buf, ']');
    if (buf.failed) {
        strbuf_free(&buf);
        return NULL;
    }
    return strbuf_take(&buf);
}

static int key_in_batch(const struct batch *b, const char *key)
{
    for (int i = 0; i < b->n; i++)
        if (b->items[i]->key != NULL && strcmp(b->items[i]->key, key) == 0)
            return 1;
    return 0;
}

/* Move queued requests into B: all of them, but one per idempotency key. */
static void take_queue(struct intake *in, struct batch *b)
{
    struct pending **pp = &in->head;
    while (*pp != NULL && b->n < INTAKE_MAX_BATCH) {
        struct pending *p = *pp;
        if (p->key != NULL && key_in_batch(b, p->key)) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        in->queued--;
        b->items[b->n++] = p;
    }
    /* the tail pointer may have pointed at a removed element */
    in->tail = &in->head;
    while (*in->tail != NULL)
        in->tail = &(*in->tail)->next;
}

/* A connection is free: the batch's JSON from what has queued, or NULL
 * when there is nothing to send. */
static const char *build(void *ctx)
{
    struct batch *b = ctx;
    struct intake *in = b->in;
    in->job_open = 0;
    take_queue(in, b);
    if (b->n == 0)
        return NULL; /* the queue was answered meanwhile: nothing to send */
    b->json = batch_json(b);
    if (b->json == NULL) {
        co_error("out of memory building an intake batch", "requests=%d", b->n);
        return NULL;
    }
    in->in_flight++;
    submit_if_room(in); /* more than one batch holds, or a held-back key */
    co_debug("intake batch sent", "requests=%d", b->n);
    return b->json;
}

/* ------------------------------------------------------------ answers */

static void answer_created(struct intake *in, struct pending *p, const char *body)
{
    char loc[128];
    snprintf(loc, sizeof(loc), "Location: /api/v1/calls/%s\r\n", p->id);
    api_json(p->req, 201, body, strlen(body), loc);
    shm_count(CNT_CALLS_CREATED);
    /* a held call is published by the scheduler when it is due */
    if (in->created_fn != NULL && p->hold.reason == NULL)
        in->created_fn(in->created_arg, p->id, p->call.to);
}

static void answer_key_conflict(struct http_request *req)
{
    struct problem pr;
    problem_init(&pr);
    problem_set(&pr, 422, "this Idempotency-Key was used with a different request body");
    problem_add_field(&pr, "Idempotency-Key", "already used with a different body");
    pr.status = 422;
    api_problem(req, &pr);
    problem_reset(&pr);
}

/* Answer the request ROW is about; returns the request's index. */
static int answer_row(struct intake *in, struct batch *b, const struct store_intake_row *row)
{
    int i = row->ord;
    if (i < 0 || i >= b->n || b->items[i] == NULL)
        return -1;
    struct pending *p = b->items[i];
    if (row->outcome == STORE_INTAKE_CREATED)
        answer_created(in, p, row->body);
    else if (row->outcome == STORE_INTAKE_REPLAYED)
        api_json(p->req, 200, row->body, strlen(row->body), NULL);
    else if (row->outcome == STORE_INTAKE_LISTED)
        api_to_listed(p->req);
    else
        answer_key_conflict(p->req);
    pending_free(p);
    b->items[i] = NULL;
    return i;
}

/* Requests the statement did not resolve lost a key race: go again. */
static void requeue_unanswered(struct intake *in, struct batch *b)
{
    for (int i = b->n - 1; i >= 0; i--) {
        struct pending *p = b->items[i];
        if (p == NULL)
            continue;
        b->items[i] = NULL;
        if (++p->retries > INTAKE_MAX_RETRIES) {
            struct problem pr;
            problem_init(&pr);
            problem_set(&pr, 409, "a concurrent request with this Idempotency-Key is in progress");
            api_problem(p->req, &pr);
            problem_reset(&pr);
            pending_free(p);
            continue;
        }
        enqueue(in, p, 1);
    }
    submit_if_room(in);
}

/* Like answer_row() and requeue_unanswered(), this loops over B's own
 * items, which nothing an answer leads to can reach (new requests go to
 * the intake's queue), and clears each slot as it answers it. */
static void fail_batch(struct batch *b, int status_503, const char *err)
{
    for (int i = 0; i < b->n; i++) {
        if (b->items[i] == NULL)
            continue;
        if (status_503)
            api_unavailable(b->items[i]->req, API_DB_UNREACHABLE);
        else
            api_internal_error(b->items[i]->req, "storing calls", err);
        pending_free(b->items[i]);
        b->items[i] = NULL;
    }
}

static void batch_free(struct batch *b)
{
    free(b->items);
    free(b->json);
    free(b);
}

static void done(void *ctx, int built, const struct store_err *e,
                 const struct store_intake_row *rows, int n)
{
    struct batch *b = ctx;
    struct intake *in = b->in;
    if (!built) {
        /* The pool refused the open job before a connection took it (the
         * pool went down, the queue timed out, it is closing): the
         * requests it would have carried get that refusal, and the next
         * request opens a job again. */
        in->job_open = 0;
        fail_queue(in, pg_pool_state(in->api->pg) == PG_POOL_DOWN
                           ? API_DB_UNREACHABLE
                           : "the database is busy; retry later");
        batch_free(b);
        return;
    }
    if (b->json != NULL)
        in->in_flight--;
    if (e != NULL) {
        fail_batch(b, store_unavailable(e), e->msg);
    } else if (b->json != NULL) {
        for (int r = 0; r < n; r++)
            answer_row(in, b, &rows[r]);
        requeue_unanswered(in, b);
    } else {
        fail_batch(b, 0, "could not build the statement"); /* no-op when empty */
    }
    submit_if_room(in);
    batch_free(b);
}

static int submit_job(struct intake *in)
{
    struct batch *b = calloc(1, sizeof(*b));
    if (b != NULL)
        b->items = calloc(INTAKE_MAX_BATCH, sizeof(*b->items));
    if (b == NULL || b->items == NULL) {
        free(b);
        fail_queue(in, "out of memory");
        return -1;
    }
    b->in = in;
    if (store_intake_submit(in->api->pg, in->api->cfg->max_attempts, build, done, b) < 0) {
        batch_free(b);
        fail_queue(in, API_DB_UNREACHABLE);
        return -1;
    }
    in->job_open = 1;
    return 0;
}

/* Open a job for the queue unless one is open or INTAKE_MAX_IN_FLIGHT
 * statements are at the database: then done() opens it. */
static void submit_if_room(struct intake *in)
{
    if (in->head != NULL && !in->job_open && in->in_flight < INTAKE_MAX_IN_FLIGHT)
        submit_job(in);
}

/* ------------------------------------------------------------ requests */

static int new_uuid(char out[UUID_LEN + 1])
{
    unsigned char u[16];
    if (RAND_bytes(u, sizeof(u)) != 1)
        return -1;
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40); /* version 4 */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
    return 0;
}

/* The section 9 rules for a validated call: its instants, zones and
 * first hold (see api_call_hold). */
static void decide_rules(struct intake *in, struct pending *p, struct problem *pr)
{
    const struct call_input *c = &p->call;
    int64_t now = api_now_us();
    if (validate_schedule(&c->not_before, &c->expires_at, 1, now, pr) < 0)
        return;
    api_call_zones(in->api, c->to, c->timezone, &p->hold);
    api_call_hold(in->api, c->window_json != NULL ? &c->window : NULL, &c->not_before, now,
                  &p->hold);
}

/* Validate REQ into a pending entry; answers 400 itself and returns NULL. */
static struct pending *accept_request(struct intake *in, struct http_request *req)
{
    struct problem pr;
    size_t len;
    const char *body = http_request_body(req, &len);
    const char *key = http_request_header(req, "Idempotency-Key");
    struct pending *p = calloc(1, sizeof(*p));

    problem_init(&pr);
    if (p == NULL) {
        problem_set(&pr, 500, "out of memory");
    } else if (validate_create(body, len, in->api->cfg->max_metadata_bytes, &p->call, &pr) == 0) {
        if (key != NULL && !validate_idempotency_key(key))
            problem_add_field(&pr, "Idempotency-Key",
                              "must be 1 to 255 printable ASCII characters");
        else if (key != NULL && (p->key = strdup(key)) == NULL)
            problem_set(&pr, 500, "out of memory");
        else if (request_hash(body, len, p->hash) < 0)
            problem_set(&pr, 400, "body is not JSON");
        else if (new_uuid(p->id) < 0)
            problem_set(&pr, 500, "no random numbers for a call id");
        else
            decide_rules(in, p, &pr);
    }
    if (problem_failed(&pr)) {
        api_problem(req, &pr);
        problem_reset(&pr);
        if (p != NULL)
            pending_free(p);
        return NULL;
    }
    p->req = req;
    return p;
}

void intake_create(struct intake *in, struct http_request *req)
{
    if (!pg_pool_is_up(in->api->pg) && pg_pool_state(in->api->pg) == PG_POOL_DOWN) {
        api_unavailable(req, API_DB_UNREACHABLE);
        return;
    }
    struct pending *p = accept_request(in, req);
    if (p == NULL)
        return;
    enqueue(in, p, 0);
    submit_if_room(in);
}

struct intake *intake_new(struct api *api, char *err, size_t errlen)
{
    struct intake *in = calloc(1, sizeof(*in));
    if (in == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    in->api = api;
    in->tail = &in->head;
    return in;
}

void intake_free(struct intake *in)
{
    if (in == NULL)
        return;
    fail_queue(in, "shutting down");
    free(in);
}

void intake_on_created(struct intake *in, intake_created_fn fn, void *arg)
{
    in->created_fn = fn;
    in->created_arg = arg;
}
