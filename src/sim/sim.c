/*
 * sim.c — the simulated provider behind callorch-provider-sim (see sim.h).
 *
 * Owns: every simulated call (struct call, one ev_timer each), the
 * initiation requests held back on purpose (hanging and lost ones until
 * their client leaves, slow ones until their timer, early-webhook ones
 * until their webhook is delivered), the bounded tables of references and
 * call ids (Idempotency-Key replays, the status lookup, startedWhileLive,
 * startedAfterCompleted, duplicateStarts), the outcomes forced per number,
 * the curl_ev client that delivers webhooks, the seeded random source and
 * the statistics.
 *
 * A call's life: initiation accepted (it is "in progress" from here) →
 * its delay timer fires: the call ended, it is no longer in progress →
 * webhook built and signed → POSTed, retried on connection errors, 5xx
 * and 429 with a short doubling backoff → optionally replayed once
 * (--duplicate) → freed.  With --drop it ends at the timer and no webhook
 * is sent; with --early the timer is 0 and the 202 is held back until the
 * webhook delivery is over.
 *
 * The answer to a started call's initiation (enum answer), drawn apart
 * from its fate: 202 now (or --early: after the webhook), never
 * (--lose-answer: the request waits in the hung list until its client
 * leaves), after --slow-answer-delay (struct slow), or a 202 without a
 * valid callId (--bad-call-id).  The call runs the same in every case.  A
 * start with an Idempotency-Key whose reference is in the table is answered
 * 202 with the recorded callId at once, never with a fault, and starts
 * nothing.
 *
 * Why "in progress" ends when the call ends, before its webhook is
 * delivered: callorchd may free the phone's lock as soon as it processed
 * the webhook, and start the next call to that phone before the webhook's
 * 200 reached us.  Counting until the 200 would then show two calls at once
 * for one phone that never overlapped in callorchd.  The interval counted
 * here (initiation received → webhook sent) lies inside callorchd's
 * slot-and-lock interval, so an overlap seen here is a real one.
 */
#include <auto-config.h>

#include "sim/sim.h"

#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net/curl_ev.h"
#include "util/config.h"
#include "util/log.h"
#include "util/webhook_sig.h"

#define SWEEP_INTERVAL 1.0 /* s; frees hanging requests whose client left */
#define RETRY_BACKOFF 0.25 /* s; first webhook retry, doubled each time */
#define RETRY_BACKOFF_MAX 5.0
#define MAX_REFERENCE 256
#define SECRET_TOKEN_MAX 512

#define DEFAULT_MAX_RECORDS 100000
#define MAX_FORCED 100000 /* numbers with a forced outcome */
#define BAD_CALL_ID_VARIANTS 6

static const char *const outcome_names[SIM_OUTCOME_N] = {
    "COMPLETED", "FAILED", "BUSY", "NO_ANSWER", "VOICEMAIL", "REJECTED", "INVALID_NUMBER",
};

/* How a started call's initiation is answered. */
enum answer {
    ANS_NORMAL = 0, /* 202 {"callId","status":"INITIATED"} */
    ANS_LOST,       /* --lose-answer: never answered */
    ANS_SLOW,       /* --slow-answer: 202 after slow_delay */
    ANS_BAD_ID,     /* --bad-call-id: 202 without a valid callId */
};

/* ------------------------------------------------------ string map ----- */

/* A chained hash map from strings to counters: the phones with calls in
 * progress, and the numbers with a forced outcome. */
struct strmap_ent {
    struct strmap_ent *next;
    long long val;
    char key[];
};

struct strmap {
    struct strmap_ent **b;
    size_t nb, n;
};

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

static int strmap_grow(struct strmap *m)
{
    size_t nb = m->nb ? m->nb * 2 : 256;
    struct strmap_ent **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < m->nb; i++) {
        struct strmap_ent *e = m->b[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t j = str_hash(e->key) & (nb - 1);
            e->next = b[j];
            b[j] = e;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return 0;
}

/* The counter of KEY; with CREATE a missing key is added at 0.  NULL when
 * absent (or no memory). */
static long long *strmap_get(struct strmap *m, const char *key, int create)
{
    if (m->nb) {
        for (struct strmap_ent *e = m->b[str_hash(key) & (m->nb - 1)]; e; e = e->next)
            if (strcmp(e->key, key) == 0)
                return &e->val;
    }
    if (!create || (m->n >= m->nb && strmap_grow(m) < 0))
        return NULL;
    size_t len = strlen(key);
    struct strmap_ent *e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->key, key, len + 1);
    e->val = 0;
    size_t j = str_hash(key) & (m->nb - 1);
    e->next = m->b[j];
    m->b[j] = e;
    m->n++;
    return &e->val;
}

static void strmap_del(struct strmap *m, const char *key)
{
    if (m->nb == 0)
        return;
    for (struct strmap_ent **p = &m->b[str_hash(key) & (m->nb - 1)]; *p; p = &(*p)->next) {
        if (strcmp((*p)->key, key) == 0) {
            struct strmap_ent *e = *p;
            *p = e->next;
            free(e);
            m->n--;
            return;
        }
    }
}

static long long strmap_max(const struct strmap *m)
{
    long long max = 0;
    for (size_t i = 0; i < m->nb; i++)
        for (const struct strmap_ent *e = m->b[i]; e; e = e->next)
            if (e->val > max)
                max = e->val;
    return max;
}

static void strmap_free(struct strmap *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        struct strmap_ent *e = m->b[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->b);
    memset(m, 0, sizeof(*m));
}

/* ---------------------------------------------------- record table ----- */

/*
 * A bounded table of records by string key, in insertion order: the
 * references ever started (for Idempotency-Key replays and the status
 * lookup) and the call ids (the reference before its last ':', for the
 * startedWhileLive and startedAfterCompleted counters).  At the cap the
 * oldest record goes, unless a call still in progress uses it (LIVE > 0):
 * that one moves to the new end instead, so a call never loses its record.
 */
struct rec {
    struct rec *hnext;         /* hash chain */
    struct rec *older, *newer; /* insertion order */
    int live;                  /* calls in progress with this key */
    enum sim_outcome outcome;  /* of the latest call, once ENDED */
    unsigned ended : 1;        /* references: the latest call ended */
    unsigned opt_out : 1;      /* references: ... with disposition OPT_OUT */
    unsigned completed : 1;    /* call ids: a call of it ended COMPLETED */
    double started, delay;     /* references: ev_now() at the start, s to the end */
    char call_id[48];          /* references: our callId of the latest call */
    char key[];
};

struct rtab {
    struct rec **b;
    size_t nb, n, cap;
    struct rec *oldest, *newest;
    long long evicted;
};

static struct rec *rtab_find(const struct rtab *t, const char *key)
{
    if (t->nb == 0)
        return NULL;
    for (struct rec *r = t->b[str_hash(key) & (t->nb - 1)]; r; r = r->hnext)
        if (strcmp(r->key, key) == 0)
            return r;
    return NULL;
}

static int rtab_grow(struct rtab *t)
{
    size_t nb = t->nb ? t->nb * 2 : 256;
    struct rec **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return -1;
    for (struct rec *r = t->oldest; r; r = r->newer) {
        size_t j = str_hash(r->key) & (nb - 1);
        r->hnext = b[j];
        b[j] = r;
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
    return 0;
}

static void rtab_list_remove(struct rtab *t, struct rec *r)
{
    if (r->older)
        r->older->newer = r->newer;
    else
        t->oldest = r->newer;
    if (r->newer)
        r->newer->older = r->older;
    else
        t->newest = r->older;
    r->older = r->newer = NULL;
}

static void rtab_list_append(struct rtab *t, struct rec *r)
{
    r->older = t->newest;
    r->newer = NULL;
    if (t->newest)
        t->newest->newer = r;
    else
        t->oldest = r;
    t->newest = r;
}

/* Drop the oldest records not in use until there is room for one more. */
static void rtab_evict(struct rtab *t)
{
    for (size_t tries = t->n; t->n >= t->cap && tries > 0; tries--) {
        struct rec *r = t->oldest;
        rtab_list_remove(t, r);
        if (r->live > 0) { /* in use: keep it, as if new */
            rtab_list_append(t, r);
            continue;
        }
        for (struct rec **p = &t->b[str_hash(r->key) & (t->nb - 1)]; *p; p = &(*p)->hnext)
            if (*p == r) {
                *p = r->hnext;
                break;
            }
        free(r);
        t->n--;
        t->evicted++;
    }
}

/* A new, zeroed record for KEY (not present); NULL when out of memory. */
static struct rec *rtab_add(struct rtab *t, const char *key)
{
    rtab_evict(t);
    if (t->n >= t->nb && rtab_grow(t) < 0)
        return NULL;
    size_t len = strlen(key);
    struct rec *r = calloc(1, sizeof(*r) + len + 1);
    if (r == NULL)
        return NULL;
    memcpy(r->key, key, len + 1);
    size_t j = str_hash(key) & (t->nb - 1);
    r->hnext = t->b[j];
    t->b[j] = r;
    rtab_list_append(t, r);
    t->n++;
    return r;
}

static struct rec *rtab_get(struct rtab *t, const char *key)
{
    struct rec *r = rtab_find(t, key);
    return r ? r : rtab_add(t, key);
}

static void rtab_free(struct rtab *t)
{
    struct rec *r = t->oldest, *next;
    for (; r; r = next) {
        next = r->newer;
        free(r);
    }
    free(t->b);
    memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------ state ---- */

struct sim_stats {
    long long started; /* initiations answered (or to be answered) 2xx */
    long long rej_5xx, rej_429, rej_hang;
    long long unauthorized, bad_requests, bad_references;
    long long in_progress, max_in_progress, max_per_phone;
    long long webhooks_sent;    /* webhook POSTs answered 2xx (replays included) */
    long long webhook_retries;  /* POSTs repeated after an error, 5xx or 429 */
    long long webhook_failures; /* deliveries given up */
    long long duplicate_starts; /* initiations of an already started reference */
    long long dropped, early, duplicated;
    long long by_status[SIM_OUTCOME_N]; /* calls that ended with a webhook, by outcome */
    long long opt_outs;                 /* ... of them with disposition OPT_OUT */
    long long idempotent_replays;       /* starts answered from the reference table */
    long long started_while_live;       /* starts of a call id with a call of it in progress */
    long long started_after_completed;  /* starts of a call id after one ended COMPLETED */
    long long lost_answers, slow_answers, bad_call_ids;
    long long status_lookups; /* GET /api/v1/calls?reference= answered 200 or 404 */
};

struct call {
    ev_timer timer; /* the delay, later the retry backoff */
    struct sim *sim;
    struct call *prev, *next;
    char id[48];     /* our callId */
    char msg_id[48]; /* webhook-id, the same for retries and the replay */
    char *reference, *phone, *url;
    enum sim_outcome outcome;
    enum answer answer;
    double delay; /* s, initiation to the end of the call */
    long duration;
    unsigned drop : 1, dup : 1, early : 1, in_progress : 1, ended : 1, replay : 1, opt_out : 1;
    struct rec *ref_rec, *cid_rec;   /* its records while in progress (LIVE counts it) */
    int attempts;                    /* POSTs of the current delivery */
    struct http_request *held;       /* --early: the initiation waiting for its 202 */
    char *body;                      /* the webhook body, once the call ended */
    char ts[24];                     /* webhook-timestamp and -signature as last sent, */
    char sig[WEBHOOK_SIGNATURE_BUF]; /* replayed verbatim by --duplicate */
};

struct hung { /* a --hang or --lose-answer initiation, never answered */
    struct http_request *req;
    struct hung *next;
};

struct slow {       /* a --slow-answer initiation, answered later */
    ev_timer timer; /* first member */
    struct sim *sim;
    struct slow *prev, *next;
    struct http_request *req;
    char call_id[48];
};

struct sim {
    struct ev_loop *loop;
    struct sim_opts o;
    struct curl_ev *ce;
    struct webhook_keys keys;     /* hmac: keys.key[0] signs */
    char token[SECRET_TOKEN_MAX]; /* api-key: sent as X-Api-Key */
    uint64_t rng;
    unsigned instance; /* makes ids unique across restarts */
    unsigned long long next_id;
    struct call *calls;
    struct hung *hung;
    struct slow *slow;
    ev_timer sweep;
    struct strmap phones;       /* phone -> calls in progress */
    struct strmap forced;       /* phone -> outcome * 2 + opt_out (--outcome, /control) */
    struct rtab refs;           /* reference -> its latest call (lookup, replays) */
    struct rtab cids;           /* call id -> calls of it in progress, completed */
    unsigned long long bad_ids; /* --bad-call-id answers so far: picks the variant */
    long long limit_next;       /* PUT /control/rate-limit: initiations still to refuse */
    int limit_retry_after;      /* with this Retry-After, s */
    struct sim_stats st;
    int closing;
};

/* ---------------------------------------------------------- random ----- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rnd(struct sim *s)
{
    return (double)(splitmix64(&s->rng) >> 11) * 0x1.0p-53;
}

/* ----------------------------------------------------------- stats ----- */

static json_t *stats_json(const struct sim *s)
{
    const struct sim_stats *t = &s->st;
    const struct {
        const char *name;
        long long v;
    } top[] = {
        { "started", t->started },
        { "unauthorized", t->unauthorized },
        { "badRequests", t->bad_requests },
        { "badReferences", t->bad_references },
        { "inProgress", t->in_progress },
        { "maxInProgress", t->max_in_progress },
        { "maxPerPhone", t->max_per_phone },
        { "webhooksSent", t->webhooks_sent },
        { "webhookRetries", t->webhook_retries },
        { "webhookFailures", t->webhook_failures },
        { "duplicateStarts", t->duplicate_starts },
        { "dropped", t->dropped },
        { "early", t->early },
        { "duplicated", t->duplicated },
        { "optOuts", t->opt_outs },
        { "idempotentReplays", t->idempotent_replays },
        { "startedWhileLive", t->started_while_live },
        { "startedAfterCompleted", t->started_after_completed },
        { "lostAnswers", t->lost_answers },
        { "slowAnswers", t->slow_answers },
        { "badCallIds", t->bad_call_ids },
        { "statusLookups", t->status_lookups },
        { "recordsEvicted", s->refs.evicted },
    };
    json_t *j = json_object(), *by = json_object();
    json_t *rej = json_pack("{s:I, s:I, s:I}", "5xx", (json_int_t)t->rej_5xx, "429",
                            (json_int_t)t->rej_429, "hang", (json_int_t)t->rej_hang);

    for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
        json_object_set_new(j, top[i].name, json_integer(top[i].v));
        if (i == 0) /* "rejected" right after "started" */
            json_object_set_new(j, "rejected", rej);
    }
    for (int i = 0; i < SIM_OUTCOME_N; i++)
        json_object_set_new(by, outcome_names[i], json_integer(t->by_status[i]));
    json_object_set_new(j, "byStatus", by);
    return j;
}

/* Zero the counters; the gauge inProgress stays and the maxima restart
 * from what is in progress now.  The reference and call-id tables and the
 * forced outcomes are kept: starting a reference again after a reset is
 * still a duplicate (or a replay, a start while live...). */
static void stats_reset(struct sim *s)
{
    long long in_progress = s->st.in_progress;
    memset(&s->st, 0, sizeof(s->st));
    s->st.in_progress = s->st.max_in_progress = in_progress;
    s->st.max_per_phone = strmap_max(&s->phones);
}

/* C was accepted: one more in progress, in all and for its phone. */
static void progress_begin(struct sim *s, struct call *c)
{
    long long *n = strmap_get(&s->phones, c->phone, 1);
    if (n == NULL) {
        co_error("out of memory", "what=phone_map");
        return;
    }
    c->in_progress = 1;
    if (++s->st.in_progress > s->st.max_in_progress)
        s->st.max_in_progress = s->st.in_progress;
    if (++*n > s->st.max_per_phone)
        s->st.max_per_phone = *n;
}

/* C ended (or is freed): no longer in progress; idempotent. */
static void progress_end(struct sim *s, struct call *c)
{
    if (!c->in_progress)
        return;
    c->in_progress = 0;
    s->st.in_progress--;
    long long *n = strmap_get(&s->phones, c->phone, 0);
    if (n != NULL && --*n <= 0)
        strmap_del(&s->phones, c->phone);
}

/* Count an accepted initiation of REF (before records_begin() records it):
 * a second one, not an Idempotency-Key replay, is a caller bug.  Seen among
 * the references the bounded table still holds. */
static void reference_started(struct sim *s, const char *ref)
{
    if (rtab_find(&s->refs, ref) != NULL) {
        s->st.duplicate_starts++;
        co_warn("duplicate start of a reference", "reference=%s", CO_LOG_Q(ref));
    }
}

/* The call id of REF: the part before its last ':' (all of it without). */
static void call_id_of(const char *ref, char *out, size_t len)
{
    const char *colon = strrchr(ref, ':');
    size_t n = colon ? (size_t)(colon - ref) : strlen(ref);
    snprintf(out, len, "%.*s", (int)n, ref);
}

/* C starts: count a start while another call of its call id is in progress
 * or after one ended COMPLETED, then record C under its reference and call
 * id.  Out of memory: C goes unrecorded (logged). */
static void records_begin(struct sim *s, struct call *c)
{
    char cid[MAX_REFERENCE + 1];

    call_id_of(c->reference, cid, sizeof(cid));
    struct rec *k = rtab_get(&s->cids, cid);
    struct rec *r = rtab_get(&s->refs, c->reference);
    if (k == NULL || r == NULL) {
        co_error("out of memory", "what=record reference=%s", CO_LOG_Q(c->reference));
        return;
    }
    if (k->live > 0) {
        s->st.started_while_live++;
        co_warn("call started while another attempt of it is in progress",
                "reference=%s in_progress=%d", CO_LOG_Q(c->reference), k->live);
    }
    if (k->completed) {
        s->st.started_after_completed++;
        co_warn("call started after it was reported COMPLETED", "reference=%s",
                CO_LOG_Q(c->reference));
    }
    k->live++;
    r->live++;
    r->ended = r->opt_out = 0;
    r->started = ev_now(s->loop);
    r->delay = c->early ? 0. : c->delay;
    snprintf(r->call_id, sizeof(r->call_id), "%s", c->id);
    c->cid_rec = k;
    c->ref_rec = r;
}

/* C ended (ENDED) or is freed before: its records stop counting it; an
 * outcome is recorded for the status lookup.  Idempotent. */
static void records_end(struct call *c, int ended)
{
    struct rec *r = c->ref_rec, *k = c->cid_rec;

    if (r != NULL) {
        r->live--;
        if (ended && strcmp(r->call_id, c->id) == 0) { /* the latest call of REF */
            r->ended = 1;
            r->outcome = c->outcome;
            r->opt_out = c->opt_out;
        }
    }
    if (k != NULL) {
        k->live--;
        if (ended && c->outcome == SIM_COMPLETED)
            k->completed = 1;
    }
    c->ref_rec = c->cid_rec = NULL;
}

/* The status lookup's "status" of R now: its outcome once ended, else
 * INITIATED for the first half of its delay and IN_PROGRESS after. */
static const char *rec_status(const struct sim *s, const struct rec *r)
{
    if (r->ended)
        return outcome_names[r->outcome];
    return ev_now(s->loop) - r->started < r->delay / 2 ? "INITIATED" : "IN_PROGRESS";
}

/* ------------------------------------------------------- responses ----- */

/* Answer REQ with J (stolen) as compact JSON; 500 when J is NULL. */
static void respond_json(struct http_request *req, int status, json_t *j, const char *extra)
{
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (txt == NULL) {
        http_respond_problem(req, 500, "out of memory", NULL);
        return;
    }
    http_respond(req, status, "application/json", extra, txt, strlen(txt));
    free(txt);
}

/* The provider's answer to a started call. */
static void respond_initiated(struct http_request *req, const char *call_id)
{
    respond_json(req, 202, json_pack("{s:s, s:s}", "callId", call_id, "status", "INITIATED"), NULL);
}

/* --bad-call-id: a 202 whose callId is not valid (DESIGN.md section 5:
 * 1-256 printable characters), the variants in turn. */
static void respond_bad_call_id(struct sim *s, struct http_request *req)
{
    char long_id[300];
    unsigned variant = (unsigned)(s->bad_ids++ % BAD_CALL_ID_VARIANTS);

    switch (variant) {
    case 0: /* no callId */
        respond_json(req, 202, json_pack("{s:s}", "status", "INITIATED"), NULL);
        break;
    case 1: /* empty */
        respond_json(req, 202, json_pack("{s:s, s:s}", "callId", "", "status", "INITIATED"), NULL);
        break;
    case 2: /* too long */
        memset(long_id, 'x', sizeof(long_id) - 1);
        long_id[sizeof(long_id) - 1] = '\0';
        respond_json(req, 202, json_pack("{s:s, s:s}", "callId", long_id, "status", "INITIATED"),
                     NULL);
        break;
    case 3: /* control characters: a forged log line if logged unescaped */
        respond_json(req, 202,
                     json_pack("{s:s, s:s}", "callId", "sim-bad\nlevel=error msg=\"forged\"",
                               "status", "INITIATED"),
                     NULL);
        break;
    case 4: /* not a string */
        respond_json(req, 202, json_pack("{s:i, s:s}", "callId", 12345, "status", "INITIATED"),
                     NULL);
        break;
    default: /* not JSON at all */
        http_respond(req, 202, "application/json", NULL, "{\"callId\":", 10);
        break;
    }
}

/* Answer a started call's initiation REQ now, as C's answer kind says
 * (normal or bad callId; lost and slow ones are held elsewhere). */
static void respond_started(struct sim *s, struct http_request *req, const struct call *c)
{
    if (c->answer == ANS_BAD_ID)
        respond_bad_call_id(s, req);
    else
        respond_initiated(req, c->id);
}

/* ------------------------------------------------------------ calls ---- */

/* Unlink and free C: timer stopped, out of progress, a held request freed. */
static void call_free(struct call *c)
{
    struct sim *s = c->sim;

    ev_timer_stop(s->loop, &c->timer);
    progress_end(s, c);
    records_end(c, 0);
    if (c->held) /* only when stopping: the client sees the connection close */
        http_respond(c->held, 503, NULL, NULL, NULL, 0);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->reference);
    free(c->phone);
    free(c->url);
    free(c->body);
    free(c);
}

static void webhook_attempt(struct call *c);
static void delivery_over(struct call *c, int delivered);

/* "2026-01-01T12:00:42Z" */
static void rfc3339_now(char *out, size_t len)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Build C's webhook body once, when the call ends. */
static int webhook_body(struct call *c)
{
    char at[32];
    rfc3339_now(at, sizeof(at));
    json_t *j =
        json_pack("{s:s, s:s, s:s, s:i, s:s}", "callId", c->id, "reference", c->reference, "status",
                  outcome_names[c->outcome], "durationSec", (int)c->duration, "completedAt", at);
    if (j != NULL && c->opt_out)
        json_object_set_new(j, "disposition", json_string("OPT_OUT"));
    c->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return c->body ? 0 : -1;
}

/* The call ended (its delay is over): out of progress, then its webhook. */
static void call_ended(struct call *c)
{
    struct sim *s = c->sim;

    c->ended = 1;
    progress_end(s, c);
    records_end(c, 1);
    if (c->drop) {
        s->st.dropped++;
        co_debug("webhook dropped", "call=%s reference=%s", c->id, CO_LOG_Q(c->reference));
        if (c->held) /* --early and --drop: nothing to wait for */
            respond_started(s, c->held, c);
        c->held = NULL;
        call_free(c);
        return;
    }
    s->st.by_status[c->outcome]++;
    if (c->opt_out)
        s->st.opt_outs++;
    if (webhook_body(c) < 0) {
        co_error("out of memory", "what=webhook call=%s", c->id);
        s->st.webhook_failures++;
        delivery_over(c, 0);
        return;
    }
    webhook_attempt(c);
}

/* The delay is over (the call ends), or a retry's backoff is. */
static void call_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct call *c = (struct call *)w; /* timer is the first member */
    (void)loop;
    (void)revents;

    if (!c->ended)
        call_ended(c);
    else
        webhook_attempt(c);
}

/* ---------------------------------------------------------- webhooks ---- */

/* Sign a first attempt or a retry; a replay keeps the stored headers. */
static int webhook_sign_now(struct call *c)
{
    struct sim *s = c->sim;
    long long now = (long long)time(NULL);

    snprintf(c->ts, sizeof(c->ts), "%lld", now);
    if (s->o.callback_auth != SIM_AUTH_HMAC)
        return 0;
    return webhook_sign(s->keys.key[0], s->keys.len[0], c->msg_id, now, c->body, strlen(c->body),
                        c->sig, sizeof(c->sig));
}

static void webhook_done(void *arg, const struct curl_ev_response *r);

/* POST C's webhook once (first send, retry or replay). */
static void webhook_attempt(struct call *c)
{
    struct sim *s = c->sim;
    char h_id[80], h_ts[48], h_auth[SECRET_TOKEN_MAX + 32];
    const char *headers[] = { "Content-Type: application/json",
                              h_id,
                              h_ts,
                              h_auth,
                              "User-Agent: callorch-provider-sim/" PACKAGE_VERSION,
                              NULL };

    if (!c->replay && webhook_sign_now(c) < 0) {
        co_error("cannot sign a webhook", "call=%s", c->id);
        s->st.webhook_failures++;
        delivery_over(c, 0);
        return;
    }
    snprintf(h_id, sizeof(h_id), "webhook-id: %s", c->msg_id);
    snprintf(h_ts, sizeof(h_ts), "webhook-timestamp: %s", c->ts);
    if (s->o.callback_auth == SIM_AUTH_HMAC)
        snprintf(h_auth, sizeof(h_auth), "webhook-signature: %s", c->sig);
    else
        snprintf(h_auth, sizeof(h_auth), "X-Api-Key: %s", s->token);
    struct curl_ev_request rq = { .method = "POST",
                                  .url = c->url,
                                  .headers = headers,
                                  .body = c->body,
                                  .body_len = strlen(c->body),
                                  .timeout_s = s->o.webhook_timeout };
    c->attempts++;
    if (curl_ev_send(s->ce, &rq, webhook_done, c) < 0) {
        s->st.webhook_failures++;
        delivery_over(c, 0);
    }
}

/* One delivery (first send or replay) is over, delivered or given up. */
static void delivery_over(struct call *c, int delivered)
{
    struct sim *s = c->sim;

    if (c->held) { /* --early: the 202 comes after the webhook */
        respond_started(s, c->held, c);
        c->held = NULL;
    }
    if (delivered && c->dup && !c->replay) {
        c->replay = 1;
        c->attempts = 0;
        s->st.duplicated++;
        webhook_attempt(c);
        return;
    }
    call_free(c);
}

/* Whether a real provider would try this delivery again. */
static int retryable(const struct curl_ev_response *r)
{
    return r->result != CURLE_OK || r->status >= 500 || r->status == 429;
}

/* The answer to one webhook POST: delivered, retry later, or give up. */
static void webhook_done(void *arg, const struct curl_ev_response *r)
{
    struct call *c = arg;
    struct sim *s = c->sim;

    if (s->closing) {
        call_free(c);
        return;
    }
    if (r->status >= 200 && r->status < 300) {
        s->st.webhooks_sent++;
        co_debug("webhook delivered", "call=%s reference=%s status=%s replay=%d attempt=%d", c->id,
                 CO_LOG_Q(c->reference), outcome_names[c->outcome], (int)c->replay, c->attempts);
        delivery_over(c, 1);
        return;
    }
    if (retryable(r) && c->attempts <= s->o.webhook_retries) {
        double wait = fmin(RETRY_BACKOFF * pow(2, c->attempts - 1), RETRY_BACKOFF_MAX);
        s->st.webhook_retries++;
        co_info("webhook retry", "call=%s http_status=%ld error=%s attempt=%d retry_in_s=%.2f",
                c->id, r->status, CO_LOG_Q(r->error ? r->error : ""), c->attempts, wait);
        ev_timer_set(&c->timer, wait, 0.);
        ev_timer_start(s->loop, &c->timer);
        return;
    }
    s->st.webhook_failures++;
    co_warn("webhook delivery failed",
            "call=%s reference=%s url=%s http_status=%ld error=%s"
            " attempts=%d",
            c->id, CO_LOG_Q(c->reference), CO_LOG_Q(c->url), r->status,
            CO_LOG_Q(r->error ? r->error : ""), c->attempts);
    delivery_over(c, 0);
}

/* -------------------------------------------------------- initiation ---- */

struct initiation { /* a validated POST /api/v1/calls body */
    const char *to, *reference, *url;
    const char *idempotency_key; /* the header, or NULL */
};

/* The Idempotency-Key header: absent, or the same text as reference
 * (DESIGN.md section 5).  NULL or the reason it is refused. */
static const char *idempotency_check(struct http_request *req, struct initiation *in)
{
    in->idempotency_key = http_request_header(req, "Idempotency-Key");
    if (in->idempotency_key != NULL && strcmp(in->idempotency_key, in->reference) != 0)
        return "Idempotency-Key: must be the same text as reference";
    return NULL;
}

/* ^\+[1-9][0-9]{7,14}$ (DESIGN.md section 4), without a regex. */
static int e164_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 9 || n > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9')
        return 0;
    for (size_t i = 2; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* "<call uuid>:<attempt>", as callorchd sends it. */
static int reference_well_formed(const char *r)
{
    for (int i = 0; i < 36; i++) {
        int dash = (i == 8 || i == 13 || i == 18 || i == 23);
        if (dash ? r[i] != '-' : !isxdigit((unsigned char)r[i]))
            return 0;
    }
    if (r[36] != ':' || r[37] < '1' || r[37] > '9')
        return 0;
    size_t digits = strspn(r + 37, "0123456789");
    return digits <= 9 && r[37 + digits] == '\0';
}

/* The non-empty string field NAME of BODY, or NULL. */
static const char *str_field(json_t *body, const char *name)
{
    json_t *v = json_object_get(body, name);
    return json_is_string(v) && json_string_length(v) > 0 ? json_string_value(v) : NULL;
}

/* Check the body; NULL or the reason it is refused. */
static const char *validate(json_t *body, struct initiation *in)
{
    if (!json_is_object(body))
        return "the body is not a JSON object";
    in->to = str_field(body, "to");
    in->reference = str_field(body, "reference");
    in->url = str_field(body, "webhookUrl");
    json_t *md = json_object_get(body, "metadata");
    if (in->to == NULL || !e164_ok(in->to))
        return "to: an E.164 phone number is required";
    if (str_field(body, "scriptId") == NULL)
        return "scriptId: a non-empty string is required";
    if (md != NULL && !json_is_object(md) && !json_is_null(md))
        return "metadata: must be an object";
    if (in->url == NULL ||
        (strncmp(in->url, "http://", 7) != 0 && strncmp(in->url, "https://", 8) != 0))
        return "webhookUrl: an http(s) URL is required";
    if (in->reference == NULL || strlen(in->reference) > MAX_REFERENCE)
        return "reference: a string of 1..256 characters is required";
    return NULL;
}

/* The random draws of one initiation, all made every time so that a
 * --seed replays the same decisions for the same sequence of requests
 * (and options).  The draws of the newer knobs are made only when their
 * knob is set, so that without them a seed gives the same calls as before
 * those knobs existed. */
struct draws {
    double hang, fail_5xx, fail_429, success, kind, delay, dup, early, drop;
    double lose, slow, bad_id, opt_out; /* 1.0 when their knob is 0 */
};

/* A draw for a knob of share P: never below P when P is 0. */
static double draw_if(struct sim *s, double p)
{
    return p > 0 ? rnd(s) : 1.0;
}

static void draw(struct sim *s, struct draws *d)
{
    d->hang = rnd(s);
    d->fail_5xx = rnd(s);
    d->fail_429 = rnd(s);
    d->success = rnd(s);
    d->kind = rnd(s);
    d->delay = rnd(s);
    d->dup = rnd(s);
    d->early = rnd(s);
    d->drop = rnd(s);
    d->lose = draw_if(s, s->o.lose_answer);
    d->slow = draw_if(s, s->o.slow_answer);
    d->bad_id = draw_if(s, s->o.bad_call_id);
    d->opt_out = draw_if(s, s->o.opt_out);
}

/* The outcome of a call to TO, and its disposition, from D: forced for the
 * number (--outcome, /control/outcomes), else COMPLETED with
 * --success-rate, then the --outcomes shares in turn, then FAILED, BUSY and
 * NO_ANSWER a third each of what is left. */
static enum sim_outcome pick_outcome(struct sim *s, const char *to, const struct draws *d,
                                     int *opt_out)
{
    long long *f = strmap_get(&s->forced, to, 0);
    if (f != NULL) {
        *opt_out = (int)(*f & 1);
        return (enum sim_outcome)(*f >> 1);
    }
    double x = d->success;
    enum sim_outcome o = SIM_FAILED + (int)(d->kind * 3);
    if (x < s->o.success_rate) {
        o = SIM_COMPLETED;
    } else {
        x -= s->o.success_rate;
        for (int i = SIM_VOICEMAIL; i < SIM_OUTCOME_N; i++) {
            if (x < s->o.share[i]) {
                o = (enum sim_outcome)i;
                break;
            }
            x -= s->o.share[i];
        }
    }
    *opt_out = o == SIM_COMPLETED && d->opt_out < s->o.opt_out;
    return o;
}

/* A call for an accepted initiation, its fate drawn from D; not started. */
static struct call *call_new(struct sim *s, const struct initiation *in, const struct draws *d)
{
    struct call *c = calloc(1, sizeof(*c));
    if (c == NULL || !(c->reference = strdup(in->reference)) || !(c->phone = strdup(in->to)) ||
        !(c->url = strdup(in->url))) {
        if (c) {
            free(c->reference);
            free(c->phone);
        }
        free(c);
        return NULL;
    }
    c->sim = s;
    unsigned long long n = ++s->next_id;
    snprintf(c->id, sizeof(c->id), "sim-%08x-%llu", s->instance, n);
    snprintf(c->msg_id, sizeof(c->msg_id), "msg_%08x_%llu", s->instance, n);
    double delay = s->o.delay_min + (s->o.delay_max - s->o.delay_min) * d->delay;
    c->delay = delay;
    int opt_out = 0;
    c->outcome = pick_outcome(s, in->to, d, &opt_out);
    c->opt_out = opt_out;
    c->duration = c->outcome == SIM_COMPLETED || c->outcome == SIM_VOICEMAIL ? lround(delay) : 0;
    c->answer = d->lose < s->o.lose_answer     ? ANS_LOST
                : d->slow < s->o.slow_answer   ? ANS_SLOW
                : d->bad_id < s->o.bad_call_id ? ANS_BAD_ID
                                               : ANS_NORMAL;
    c->drop = d->drop < s->o.drop;
    c->dup = d->dup < s->o.duplicate;
    c->early = d->early < s->o.early;
    ev_timer_init(&c->timer, call_timer_cb, c->early ? 0. : delay, 0.);
    c->next = s->calls;
    if (s->calls)
        s->calls->prev = c;
    s->calls = c;
    return c;
}

static void hold_forever(struct sim *s, struct http_request *req);
static void hold_slow(struct sim *s, struct http_request *req, const struct call *c);

/* Start a call: count it, arm its timer, answer 202 now or (--early,
 * --slow-answer) later, or never (--lose-answer). */
static void accept_call(struct sim *s, struct http_request *req, const struct initiation *in,
                        const struct draws *d)
{
    struct call *c = call_new(s, in, d);
    if (c == NULL) {
        http_respond_problem(req, 500, "out of memory", NULL);
        return;
    }
    s->st.started++;
    if (!reference_well_formed(in->reference)) {
        s->st.bad_references++;
        co_warn("malformed reference", "reference=%s", CO_LOG_Q(in->reference));
    }
    reference_started(s, in->reference);
    records_begin(s, c);
    progress_begin(s, c);
    co_debug("call started",
             "call=%s reference=%s to=%s outcome=%s opt_out=%d delay_s=%.3f"
             " drop=%d dup=%d early=%d answer=%d",
             c->id, CO_LOG_Q(c->reference), CO_LOG_Q(c->phone), outcome_names[c->outcome],
             (int)c->opt_out, c->delay, (int)c->drop, (int)c->dup, (int)c->early, (int)c->answer);
    ev_timer_start(s->loop, &c->timer);
    if (c->early)
        s->st.early++;
    switch (c->answer) {
    case ANS_LOST:
        s->st.lost_answers++;
        co_debug("answer lost on purpose", "call=%s reference=%s", c->id, CO_LOG_Q(c->reference));
        hold_forever(s, req);
        break;
    case ANS_SLOW:
        s->st.slow_answers++;
        hold_slow(s, req, c);
        break;
    case ANS_BAD_ID:
        s->st.bad_call_ids++;
        /* fall through */
    case ANS_NORMAL:
        if (c->early)
            c->held = req;
        else
            respond_started(s, req, c);
        break;
    }
}

/* The --slow-answer delay is over: answer (a client gone only frees it). */
static void slow_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct slow *w_slow = (struct slow *)w; /* timer is the first member */
    struct sim *s = w_slow->sim;
    (void)loop;
    (void)revents;

    if (w_slow->prev)
        w_slow->prev->next = w_slow->next;
    else
        s->slow = w_slow->next;
    if (w_slow->next)
        w_slow->next->prev = w_slow->prev;
    respond_initiated(w_slow->req, w_slow->call_id);
    free(w_slow);
}

/* --slow-answer: answer REQ with C's callId after slow_delay. */
static void hold_slow(struct sim *s, struct http_request *req, const struct call *c)
{
    struct slow *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        respond_initiated(req, c->id);
        return;
    }
    w->sim = s;
    w->req = req;
    snprintf(w->call_id, sizeof(w->call_id), "%s", c->id);
    ev_timer_init(&w->timer, slow_timer_cb, s->o.slow_delay, 0.);
    ev_timer_start(s->loop, &w->timer);
    w->next = s->slow;
    if (s->slow)
        s->slow->prev = w;
    s->slow = w;
}

/* --hang, --lose-answer: keep REQ unanswered; freed when its client leaves
 * or we stop. */
static void hold_forever(struct sim *s, struct http_request *req)
{
    struct hung *h = malloc(sizeof(*h));
    if (h == NULL) {
        http_respond_problem(req, 500, "out of memory", NULL);
        return;
    }
    h->req = req;
    h->next = s->hung;
    s->hung = h;
}

/* The bearer key check of --api-key. */
static int authorized(const struct sim *s, struct http_request *req)
{
    if (s->o.api_key == NULL)
        return 1;
    const char *h = http_request_header(req, "Authorization");
    return h && strncasecmp(h, "Bearer ", 7) == 0 && strcmp(h + 7, s->o.api_key) == 0;
}

static void respond_unauthorized(struct sim *s, struct http_request *req);

/* POST /api/v1/calls. */
static void handle_initiate(struct sim *s, struct http_request *req)
{
    struct initiation in;
    struct draws d;
    size_t len;
    const char *why;

    if (!authorized(s, req)) {
        respond_unauthorized(s, req);
        return;
    }
    const char *raw = http_request_body(req, &len);
    json_t *body = json_loadb(raw, len, 0, NULL);
    if ((why = validate(body, &in)) != NULL) {
        s->st.bad_requests++;
        http_respond_problem(req, 400, body ? why : "malformed JSON", NULL);
        json_decref(body);
        return;
    }
    if ((why = idempotency_check(req, &in)) != NULL) {
        s->st.bad_requests++;
        http_respond_problem(req, 400, why, NULL);
        json_decref(body);
        return;
    }
    struct rec *r = in.idempotency_key ? rtab_find(&s->refs, in.reference) : NULL;
    if (r != NULL) { /* a replay: the same answer, nothing new started */
        s->st.idempotent_replays++;
        co_info("idempotent replay", "reference=%s call=%s", CO_LOG_Q(in.reference), r->call_id);
        respond_initiated(req, r->call_id);
        json_decref(body);
        return;
    }
    draw(s, &d);
    if (s->limit_next > 0) {
        char hdr[48];
        s->limit_next--;
        s->st.rej_429++;
        snprintf(hdr, sizeof(hdr), "Retry-After: %d\r\n", s->limit_retry_after);
        http_respond_problem(req, 429, "simulated rate limit", hdr);
    } else if (d.hang < s->o.hang) {
        s->st.rej_hang++;
        hold_forever(s, req);
    } else if (d.fail_5xx < s->o.fail_5xx) {
        s->st.rej_5xx++;
        http_respond_problem(req, 503, "simulated provider failure", NULL);
    } else if (d.fail_429 < s->o.fail_429) {
        s->st.rej_429++;
        http_respond_problem(req, 429, "simulated rate limit", "Retry-After: 1\r\n");
    } else {
        accept_call(s, req, &in, &d);
    }
    json_decref(body);
}

/* ------------------------------------------------------ lookups ---- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decode the LEN bytes at S into OUT (OUTLEN with the NUL).  -1
 * when too long, a bad escape or a decoded NUL. */
static int pct_decode(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= len)
                return -1;
            int a = hexval((unsigned char)s[i + 1]), b = hexval((unsigned char)s[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0))
                return -1;
            ch = a * 16 + b;
            i += 2;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return 0;
}

/* The value of query parameter NAME in Q, decoded into OUT.  1 found, 0
 * absent, -1 malformed or too long. */
static int query_param(const char *q, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    while (q && *q) {
        size_t len = strcspn(q, "&");
        if (len > nlen && strncmp(q, name, nlen) == 0 && q[nlen] == '=')
            return pct_decode(q + nlen + 1, len - nlen - 1, out, outlen) < 0 ? -1 : 1;
        q += len + (q[len] == '&');
    }
    return 0;
}

static void respond_unauthorized(struct sim *s, struct http_request *req)
{
    s->st.unauthorized++;
    http_respond_problem(req, 401, "a valid Authorization: Bearer key is required",
                         "WWW-Authenticate: Bearer\r\n");
}

/* GET /api/v1/calls?reference=REF: the provider's view of REF's latest call. */
static void handle_lookup(struct sim *s, struct http_request *req, const char *query)
{
    char ref[MAX_REFERENCE + 1];

    if (!authorized(s, req)) {
        respond_unauthorized(s, req);
        return;
    }
    int found = query_param(query, "reference", ref, sizeof(ref));
    if (found <= 0 || ref[0] == '\0') {
        s->st.bad_requests++;
        http_respond_problem(req, 400,
                             "reference: a query parameter of 1..256 characters is "
                             "required",
                             NULL);
        return;
    }
    s->st.status_lookups++;
    struct rec *r = rtab_find(&s->refs, ref);
    if (r == NULL) {
        http_respond_problem(req, 404, "no call for this reference", NULL);
        return;
    }
    json_t *j = json_pack("{s:s, s:s, s:s}", "callId", r->call_id, "reference", r->key, "status",
                          rec_status(s, r));
    if (j != NULL && r->ended && r->opt_out)
        json_object_set_new(j, "disposition", json_string("OPT_OUT"));
    respond_json(req, 200, j, NULL);
}

/* {"number","status"[,"disposition"]} of a forced outcome VAL. */
static json_t *forced_json(const char *number, long long val)
{
    json_t *j = json_pack("{s:s, s:s}", "number", number, "status", outcome_names[val >> 1]);
    if (j != NULL && (val & 1))
        json_object_set_new(j, "disposition", json_string("OPT_OUT"));
    return j;
}

/* The forced outcome of a PUT body: STATUS * 2 + OPT_OUT, or -1 and WHY. */
static long long forced_from_body(const char *raw, size_t len, const char **why)
{
    json_t *b = json_loadb(raw, len, 0, NULL);
    long long val = -1;
    const char *st = json_is_object(b) ? str_field(b, "status") : NULL;
    json_t *disp = json_is_object(b) ? json_object_get(b, "disposition") : NULL;
    int o = st ? sim_outcome_from_name(st) : -1;

    if (!json_is_object(b))
        *why = b ? "the body is not a JSON object" : "malformed JSON";
    else if (o < 0)
        *why = "status: one of COMPLETED, FAILED, BUSY, NO_ANSWER, VOICEMAIL, REJECTED, "
               "INVALID_NUMBER is required";
    else if (disp != NULL && !json_is_null(disp) &&
             !(json_is_string(disp) && strcmp(json_string_value(disp), "OPT_OUT") == 0))
        *why = "disposition: \"OPT_OUT\" or null";
    else
        val = (long long)o * 2 + (json_is_string(disp) ? 1 : 0);
    json_decref(b);
    return val;
}

/* GET /control/outcomes: every forced outcome, by number. */
static void control_list(struct sim *s, struct http_request *req)
{
    json_t *all = json_object();
    for (size_t i = 0; all && i < s->forced.nb; i++)
        for (const struct strmap_ent *e = s->forced.b[i]; e; e = e->next)
            json_object_set_new(all, e->key, forced_json(e->key, e->val));
    respond_json(req, 200, all ? json_pack("{s:o}", "outcomes", all) : NULL, NULL);
}

/* /control/outcomes/{e164}: GET, PUT {"status","disposition"}, DELETE. */
static void control_one(struct sim *s, struct http_request *req, const char *seg)
{
    char number[SIM_E164_MAX + 2];
    int m = http_request_method(req);
    const char *why = NULL;

    if (pct_decode(seg, strlen(seg), number, sizeof(number)) < 0 || !e164_ok(number)) {
        s->st.bad_requests++;
        http_respond_problem(req, 400, "number: an E.164 phone number is required in the path",
                             NULL);
        return;
    }
    long long *cur = strmap_get(&s->forced, number, 0);
    if (m == HTTP_GET || m == HTTP_HEAD) {
        if (cur == NULL)
            http_respond_problem(req, 404, "no forced outcome for this number", NULL);
        else
            respond_json(req, 200, forced_json(number, *cur), NULL);
    } else if (m == HTTP_DELETE) {
        if (cur == NULL) {
            http_respond_problem(req, 404, "no forced outcome for this number", NULL);
            return;
        }
        strmap_del(&s->forced, number);
        co_info("forced outcome cleared", "to=%s", CO_LOG_Q(number));
        http_respond(req, 204, NULL, NULL, NULL, 0);
    } else if (m == HTTP_PUT) {
        size_t len;
        const char *raw = http_request_body(req, &len);
        long long val = forced_from_body(raw, len, &why);
        if (val < 0) {
            s->st.bad_requests++;
            http_respond_problem(req, 400, why, NULL);
            return;
        }
        int created = cur == NULL;
        if (created && s->forced.n >= MAX_FORCED) {
            http_respond_problem(req, 409, "too many forced outcomes (100000); DELETE some", NULL);
            return;
        }
        if (cur == NULL && (cur = strmap_get(&s->forced, number, 1)) == NULL) {
            http_respond_problem(req, 500, "out of memory", NULL);
            return;
        }
        *cur = val;
        co_info("forced outcome set", "to=%s status=%s opt_out=%d", number, outcome_names[val >> 1],
                (int)(val & 1));
        respond_json(req, created ? 201 : 200, forced_json(number, val), NULL);
    } else {
        http_respond_problem(req, 405, NULL, "Allow: GET, HEAD, PUT, DELETE\r\n");
    }
}

/* PUT /control/rate-limit {"count":N,"retryAfter":S}: the next N
 * initiations are answered 429 with Retry-After: S (a provider's burst
 * limit, for the tests of callorchd's pause). */
static void control_rate_limit(struct sim *s, struct http_request *req)
{
    size_t len;
    const char *raw = http_request_body(req, &len);
    json_t *b = json_loadb(raw, len, 0, NULL);
    json_t *n = json_object_get(b, "count"), *ra = json_object_get(b, "retryAfter");

    if (http_request_method(req) != HTTP_PUT) {
        http_respond_problem(req, 405, NULL, "Allow: PUT\r\n");
    } else if (!json_is_integer(n) || json_integer_value(n) < 0 || !json_is_integer(ra) ||
               json_integer_value(ra) < 0 || json_integer_value(ra) > 86400) {
        s->st.bad_requests++;
        http_respond_problem(req, 400, "count and retryAfter: integers >= 0 are required", NULL);
    } else {
        s->limit_next = json_integer_value(n);
        s->limit_retry_after = (int)json_integer_value(ra);
        co_info("rate limit set", "count=%lld retry_after=%d", s->limit_next, s->limit_retry_after);
        http_respond(req, 204, NULL, NULL, NULL, 0);
    }
    json_decref(b);
}

/* /control/outcomes[/...], behind --api-key like the lookup. */
static void handle_control(struct sim *s, struct http_request *req, const char *rest)
{
    if (!authorized(s, req)) {
        respond_unauthorized(s, req);
        return;
    }
    if (*rest == '\0') {
        int m = http_request_method(req);
        if (m == HTTP_GET || m == HTTP_HEAD)
            control_list(s, req);
        else
            http_respond_problem(req, 405, NULL, "Allow: GET, HEAD\r\n");
    } else if (rest[0] == '/' && rest[1] != '\0' && strchr(rest + 1, '/') == NULL) {
        control_one(s, req, rest + 1);
    } else {
        http_respond_problem(req, 404, NULL, NULL);
    }
}

/* ------------------------------------------------------------ routing ---- */

/* GET /stats, and POST /stats/reset (RESET). */
static void handle_stats(struct sim *s, struct http_request *req, int reset)
{
    if (reset) {
        stats_reset(s);
        co_info("stats reset", "in_progress=%lld", s->st.in_progress);
    }
    respond_json(req, 200, stats_json(s), NULL);
}

void sim_handle(struct http_request *req, void *arg)
{
    struct sim *s = arg;
    const char *path = http_request_path(req);
    int m = http_request_method(req);
    int get = (m == HTTP_GET || m == HTTP_HEAD);

    if (strcmp(path, "/api/v1/calls") == 0) {
        const char *query = http_request_query(req);
        if (m == HTTP_POST)
            handle_initiate(s, req);
        else if (get && query != NULL)
            handle_lookup(s, req, query);
        else /* no listing: GET needs ?reference= */
            http_respond_problem(req, 405, NULL, "Allow: POST\r\n");
    } else if (strcmp(path, "/control/rate-limit") == 0) {
        if (authorized(s, req))
            control_rate_limit(s, req);
        else
            respond_unauthorized(s, req);
    } else if (strncmp(path, "/control/outcomes", 17) == 0) {
        handle_control(s, req, path + 17);
    } else if (strcmp(path, "/stats") == 0) {
        if (get)
            handle_stats(s, req, 0);
        else
            http_respond_problem(req, 405, NULL, "Allow: GET, HEAD\r\n");
    } else if (strcmp(path, "/stats/reset") == 0) {
        if (m == HTTP_POST)
            handle_stats(s, req, 1);
        else
            http_respond_problem(req, 405, NULL, "Allow: POST\r\n");
    } else if (strcmp(path, "/healthz") == 0) {
        if (get)
            http_respond(req, 200, "text/plain", NULL, "ok\n", 3);
        else
            http_respond_problem(req, 405, NULL, "Allow: GET, HEAD\r\n");
    } else {
        http_respond_problem(req, 404, NULL, NULL);
    }
}

/* ------------------------------------------------------------ setup ---- */

/* Free the hanging requests whose client closed the connection, so a long
 * run with --hang does not accumulate them. */
static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sim *s = w->data;
    (void)loop;
    (void)revents;

    for (struct hung **p = &s->hung; *p;) {
        struct hung *h = *p;
        if (http_request_is_gone(h->req)) {
            *p = h->next;
            http_respond(h->req, 503, NULL, NULL, NULL, 0); /* only frees it */
            free(h);
        } else {
            p = &h->next;
        }
    }
}

/* The signing key (hmac) or the token to send (api-key) from --secret. */
static int setup_secret(struct sim *s, char *err, size_t errlen)
{
    const char *sec = s->o.secret ? s->o.secret : "";

    if (s->o.callback_auth == SIM_AUTH_HMAC) {
        char why[256] = "no key";
        if (webhook_keys_parse(sec, &s->keys, why, sizeof(why)) < 0 || s->keys.n < 1) {
            snprintf(err, errlen, "--secret: %s", why);
            return -1;
        }
        return 0;
    }
    /* api-key: the first comma-separated token, blanks around it removed */
    sec += strspn(sec, " \t");
    size_t n = strcspn(sec, ",");
    while (n > 0 && (sec[n - 1] == ' ' || sec[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof(s->token) || memchr(sec, '\r', n) || memchr(sec, '\n', n)) {
        snprintf(err, errlen,
                 "--secret: a token of 1..%zu characters is required with "
                 "--callback-auth api-key",
                 sizeof(s->token) - 1);
        return -1;
    }
    memcpy(s->token, sec, n);
    s->token[n] = '\0';
    return 0;
}

struct sim *sim_new(struct ev_loop *loop, const struct sim_opts *o, char *err, size_t errlen)
{
    struct sim *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->o = *o;
    if (setup_secret(s, err, errlen) < 0) {
        free(s);
        return NULL;
    }
    if ((s->ce = curl_ev_new(loop)) == NULL) {
        snprintf(err, errlen, "cannot create the webhook client");
        webhook_keys_clear(&s->keys);
        free(s);
        return NULL;
    }
    s->refs.cap = s->cids.cap = o->max_records ? o->max_records : DEFAULT_MAX_RECORDS;
    for (size_t i = 0; i < o->n_forced; i++) {
        long long *v = strmap_get(&s->forced, o->forced[i].number, 1);
        if (v == NULL) {
            snprintf(err, errlen, "out of memory");
            sim_free(s);
            return NULL;
        }
        *v = (long long)o->forced[i].outcome * 2 + (o->forced[i].opt_out ? 1 : 0);
    }
    uint64_t boot = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    s->instance = (unsigned)splitmix64(&boot);
    s->rng = o->have_seed ? o->seed : splitmix64(&boot);
    ev_timer_init(&s->sweep, sweep_cb, SWEEP_INTERVAL, SWEEP_INTERVAL);
    s->sweep.data = s;
    ev_timer_start(loop, &s->sweep);
    return s;
}

void sim_free(struct sim *s)
{
    if (s == NULL)
        return;
    s->closing = 1;
    ev_timer_stop(s->loop, &s->sweep);
    while (s->hung) {
        struct hung *h = s->hung;
        s->hung = h->next;
        http_respond(h->req, 503, NULL, NULL, NULL, 0);
        free(h);
    }
    while (s->slow) {
        struct slow *w = s->slow;
        s->slow = w->next;
        ev_timer_stop(s->loop, &w->timer);
        http_respond(w->req, 503, NULL, NULL, NULL, 0);
        free(w);
    }
    curl_ev_free(s->ce); /* webhooks in flight: webhook_done frees their calls */
    while (s->calls)
        call_free(s->calls);
    strmap_free(&s->phones);
    strmap_free(&s->forced);
    rtab_free(&s->refs);
    rtab_free(&s->cids);
    webhook_keys_clear(&s->keys);
    free(s);
}

/* ---------------------------------------------------------- --delay ---- */

int sim_parse_delay(const char *str, double *min, double *max, char *err, size_t errlen)
{
    char lo[64], hi[64], why[128];
    const char *dash = strchr(str, '-');

    if (dash == NULL) {
        snprintf(lo, sizeof(lo), "%s", str);
        snprintf(hi, sizeof(hi), "%s", str);
    } else if ((size_t)(dash - str) >= sizeof(lo) || strlen(dash + 1) >= sizeof(hi)) {
        snprintf(err, errlen, "\"%s\" is too long", str);
        return -1;
    } else {
        snprintf(lo, sizeof(lo), "%.*s", (int)(dash - str), str);
        snprintf(hi, sizeof(hi), "%s", dash + 1);
    }
    /* "0-50ms": MIN borrows MAX's unit when it has none */
    size_t lo_len = strlen(lo), hi_num = strspn(hi, "0123456789.");
    if (lo_len > 0 && strspn(lo, "0123456789.") == lo_len && hi[hi_num] != '\0' &&
        lo_len + strlen(hi + hi_num) < sizeof(lo))
        strcat(lo, hi + hi_num);
    if (co_parse_duration(lo, min, why, sizeof(why)) < 0 ||
        co_parse_duration(hi, max, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "\"%s\": %s", str, why);
        return -1;
    }
    if (*min > *max) {
        snprintf(err, errlen, "\"%s\": MIN is larger than MAX", str);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------ --outcome(s) ---- */

int sim_outcome_from_name(const char *name)
{
    for (int i = 0; i < SIM_OUTCOME_N; i++)
        if (strcmp(name, outcome_names[i]) == 0)
            return i;
    return -1;
}

int sim_parse_forced(const char *str, struct sim_forced *out, char *err, size_t errlen)
{
    char status[32];
    const char *eq = strchr(str, '=');
    size_t nlen = eq ? (size_t)(eq - str) : 0;

    memset(out, 0, sizeof(*out));
    if (eq == NULL || nlen == 0 || nlen > SIM_E164_MAX) {
        snprintf(err, errlen, "NUMBER=STATUS[,opt-out] is required");
        return -1;
    }
    memcpy(out->number, str, nlen);
    out->number[nlen] = '\0';
    if (!e164_ok(out->number)) {
        snprintf(err, errlen, "NUMBER must be an E.164 phone number (+ and 8 to 15 digits)");
        return -1;
    }
    const char *st = eq + 1, *comma = strchr(st, ',');
    size_t slen = comma ? (size_t)(comma - st) : strlen(st);
    int o = -1;
    if (slen < sizeof(status)) {
        memcpy(status, st, slen);
        status[slen] = '\0';
        o = sim_outcome_from_name(status);
    }
    if (o < 0) {
        snprintf(err, errlen,
                 "STATUS must be one of COMPLETED, FAILED, BUSY, NO_ANSWER, "
                 "VOICEMAIL, REJECTED, INVALID_NUMBER");
        return -1;
    }
    out->outcome = (enum sim_outcome)o;
    if (comma != NULL) {
        if (strcmp(comma + 1, "opt-out") != 0) {
            snprintf(err, errlen, "only \",opt-out\" may follow STATUS");
            return -1;
        }
        out->opt_out = 1;
    }
    return 0;
}

int sim_parse_shares(const char *str, double share[SIM_OUTCOME_N], char *err, size_t errlen)
{
    double got[SIM_OUTCOME_N] = { 0 };
    int seen[SIM_OUTCOME_N] = { 0 };
    const char *p = str;

    if (*p == '\0') {
        snprintf(err, errlen, "STATUS:P[,STATUS:P]... is required");
        return -1;
    }
    while (*p) {
        size_t len = strcspn(p, ",");
        char item[64], *colon, *end;
        if (len == 0 || len >= sizeof(item)) {
            snprintf(err, errlen, "STATUS:P[,STATUS:P]... is required");
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if ((colon = strchr(item, ':')) == NULL) {
            snprintf(err, errlen, "\"%s\": STATUS:P is required", item);
            return -1;
        }
        *colon = '\0';
        int o = sim_outcome_from_name(item);
        if (o < SIM_VOICEMAIL) {
            snprintf(err, errlen,
                     "\"%s\": STATUS must be VOICEMAIL, REJECTED or INVALID_NUMBER"
                     " (COMPLETED is --success-rate; FAILED, BUSY and NO_ANSWER share the rest)",
                     item);
            return -1;
        }
        if (seen[o]++) {
            snprintf(err, errlen, "%s is given twice", item);
            return -1;
        }
        errno = 0;
        double v = strtod(colon + 1, &end);
        if (errno || end == colon + 1 || *end != '\0' || !(v >= 0.0 && v <= 1.0)) {
            snprintf(err, errlen, "%s: P must be a number from 0 to 1", item);
            return -1;
        }
        got[o] = v;
        p += len + (p[len] == ',');
    }
    for (int i = SIM_VOICEMAIL; i < SIM_OUTCOME_N; i++)
        if (seen[i])
            share[i] = got[i];
    return 0;
}
