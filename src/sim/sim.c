/*
 * sim.c — the simulated provider behind callorch-provider-sim (see sim.h).
 *
 * Owns: every simulated call (struct call, one ev_timer each), the
 * initiation requests held back on purpose (hanging ones, and early-webhook
 * ones until their webhook is delivered), the curl_ev client that delivers
 * webhooks, the seeded random source and the statistics.
 *
 * A call's life: initiation accepted (it is "in progress" from here) →
 * its delay timer fires: the call ended, it is no longer in progress →
 * webhook built and signed → POSTed, retried on connection errors, 5xx
 * and 429 with a short doubling backoff → optionally replayed once
 * (--duplicate) → freed.  With --drop it ends at the timer and no webhook
 * is sent; with --early the timer is 0 and the 202 is held back until the
 * webhook delivery is over.
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

#include "util/config.h"
#include "net/curl_ev.h"
#include "util/log.h"
#include "util/webhook_sig.h"

#define SWEEP_INTERVAL 1.0         /* s; frees hanging requests whose client left */
#define RETRY_BACKOFF 0.25         /* s; first webhook retry, doubled each time */
#define RETRY_BACKOFF_MAX 5.0
#define MAX_REFERENCE 256
#define SECRET_TOKEN_MAX 512

enum outcome { OC_COMPLETED = 0, OC_FAILED, OC_BUSY, OC_NO_ANSWER, OC_N };
static const char *const outcome_names[OC_N] = { "COMPLETED", "FAILED", "BUSY", "NO_ANSWER" };

/* ------------------------------------------------------ string map ----- */

/* A chained hash map from strings to counters: the phones with calls in
 * progress, and every reference ever started. */
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
    uint64_t h = 1469598103934665603ULL;     /* FNV-1a */
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

/* ------------------------------------------------------------ state ---- */

struct sim_stats {
    long long started;            /* initiations answered (or to be answered) 2xx */
    long long rej_5xx, rej_429, rej_hang;
    long long unauthorized, bad_requests, bad_references;
    long long in_progress, max_in_progress, max_per_phone;
    long long webhooks_sent;      /* webhook POSTs answered 2xx (replays included) */
    long long webhook_retries;    /* POSTs repeated after an error, 5xx or 429 */
    long long webhook_failures;   /* deliveries given up */
    long long duplicate_starts;   /* initiations of an already started reference */
    long long dropped, early, duplicated;
    long long by_status[OC_N];    /* calls that ended with a webhook, by outcome */
};

struct call {
    ev_timer timer;               /* the delay, later the retry backoff */
    struct sim *sim;
    struct call *prev, *next;
    char id[48];                  /* our callId */
    char msg_id[48];              /* webhook-id, the same for retries and the replay */
    char *reference, *phone, *url;
    enum outcome outcome;
    double delay;                 /* s, initiation to the end of the call */
    long duration;
    unsigned drop : 1, dup : 1, early : 1, in_progress : 1, ended : 1, replay : 1;
    int attempts;                 /* POSTs of the current delivery */
    struct http_request *held;    /* --early: the initiation waiting for its 202 */
    char *body;                   /* the webhook body, once the call ended */
    char ts[24];                  /* webhook-timestamp and -signature as last sent, */
    char sig[WEBHOOK_SIGNATURE_BUF]; /* replayed verbatim by --duplicate */
};

struct hung {                     /* a --hang initiation, never answered */
    struct http_request *req;
    struct hung *next;
};

struct sim {
    struct ev_loop *loop;
    struct sim_opts o;
    struct curl_ev *ce;
    struct webhook_keys keys;     /* hmac: keys.key[0] signs */
    char token[SECRET_TOKEN_MAX]; /* api-key: sent as X-Api-Key */
    uint64_t rng;
    unsigned instance;            /* makes ids unique across restarts */
    unsigned long long next_id;
    struct call *calls;
    struct hung *hung;
    ev_timer sweep;
    struct strmap phones;         /* phone -> calls in progress */
    struct strmap references;     /* reference -> initiations accepted */
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
    const struct { const char *name; long long v; } top[] = {
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
    };
    json_t *j = json_object(), *by = json_object();
    json_t *rej = json_pack("{s:I, s:I, s:I}", "5xx", (json_int_t)t->rej_5xx, "429",
                            (json_int_t)t->rej_429, "hang", (json_int_t)t->rej_hang);

    for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
        json_object_set_new(j, top[i].name, json_integer(top[i].v));
        if (i == 0)    /* "rejected" right after "started" */
            json_object_set_new(j, "rejected", rej);
    }
    for (int i = 0; i < OC_N; i++)
        json_object_set_new(by, outcome_names[i], json_integer(t->by_status[i]));
    json_object_set_new(j, "byStatus", by);
    return j;
}

/* Zero the counters; the gauge inProgress stays and the maxima restart
 * from what is in progress now.  The started references are kept: starting
 * one again after a reset is still a duplicate. */
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

/* Count an accepted initiation of REF; a second one is a caller bug. */
static void reference_started(struct sim *s, const char *ref)
{
    long long *n = strmap_get(&s->references, ref, 1);
    if (n != NULL && (*n)++ > 0) {
        s->st.duplicate_starts++;
        co_warn("duplicate start of a reference", "reference=%s starts=%lld", CO_LOG_Q(ref), *n);
    }
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
    respond_json(req, 202, json_pack("{s:s, s:s}", "callId", call_id, "status", "INITIATED"),
                 NULL);
}

/* ------------------------------------------------------------ calls ---- */

/* Unlink and free C: timer stopped, out of progress, a held request freed. */
static void call_free(struct call *c)
{
    struct sim *s = c->sim;

    ev_timer_stop(s->loop, &c->timer);
    progress_end(s, c);
    if (c->held)    /* only when stopping: the client sees the connection close */
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
    json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:s}", "callId", c->id, "reference",
                          c->reference, "status", outcome_names[c->outcome], "durationSec",
                          (int)c->duration, "completedAt", at);
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
    if (c->drop) {
        s->st.dropped++;
        co_debug("webhook dropped", "call=%s reference=%s", c->id, CO_LOG_Q(c->reference));
        if (c->held)     /* --early and --drop: nothing to wait for */
            respond_initiated(c->held, c->id);
        c->held = NULL;
        call_free(c);
        return;
    }
    s->st.by_status[c->outcome]++;
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
    struct call *c = (struct call *)w;   /* timer is the first member */
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
    return webhook_sign(s->keys.key[0], s->keys.len[0], c->msg_id, now, c->body,
                        strlen(c->body), c->sig, sizeof(c->sig));
}

static void webhook_done(void *arg, const struct curl_ev_response *r);

/* POST C's webhook once (first send, retry or replay). */
static void webhook_attempt(struct call *c)
{
    struct sim *s = c->sim;
    char h_id[80], h_ts[48], h_auth[SECRET_TOKEN_MAX + 32];
    const char *headers[] = { "Content-Type: application/json", h_id, h_ts, h_auth,
                              "User-Agent: callorch-provider-sim/" PACKAGE_VERSION, NULL };

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
    struct curl_ev_request rq = { .method = "POST", .url = c->url, .headers = headers,
                                  .body = c->body, .body_len = strlen(c->body),
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

    if (c->held) {       /* --early: the 202 comes after the webhook */
        respond_initiated(c->held, c->id);
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
        co_debug("webhook delivered", "call=%s reference=%s status=%s replay=%d attempt=%d",
                 c->id, CO_LOG_Q(c->reference), outcome_names[c->outcome], (int)c->replay, c->attempts);
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
    co_warn("webhook delivery failed", "call=%s reference=%s url=%s http_status=%ld error=%s"
            " attempts=%d", c->id, CO_LOG_Q(c->reference), CO_LOG_Q(c->url), r->status,
            CO_LOG_Q(r->error ? r->error : ""), c->attempts);
    delivery_over(c, 0);
}

/* -------------------------------------------------------- initiation ---- */

struct initiation {               /* a validated POST /api/v1/calls body */
    const char *to, *reference, *url;
};

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
    if (in->url == NULL || (strncmp(in->url, "http://", 7) != 0 &&
                            strncmp(in->url, "https://", 8) != 0))
        return "webhookUrl: an http(s) URL is required";
    if (in->reference == NULL || strlen(in->reference) > MAX_REFERENCE)
        return "reference: a string of 1..256 characters is required";
    return NULL;
}

/* The random draws of one initiation, all made every time so that a
 * --seed replays the same decisions for the same sequence of requests. */
struct draws {
    double hang, fail_5xx, fail_429, success, kind, delay, dup, early, drop;
};

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
    c->outcome = d->success < s->o.success_rate ? OC_COMPLETED : OC_FAILED + (int)(d->kind * 3);
    c->duration = c->outcome == OC_COMPLETED ? lround(delay) : 0;
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

/* Start a call: count it, arm its timer, answer 202 now or (--early) later. */
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
        co_warn("malformed reference", "reference=\"%.64s\"", in->reference);
    }
    reference_started(s, in->reference);
    progress_begin(s, c);
    co_debug("call started", "call=%s reference=%s to=%s outcome=%s delay_s=%.3f drop=%d dup=%d"
             " early=%d", c->id, CO_LOG_Q(c->reference), CO_LOG_Q(c->phone), outcome_names[c->outcome],
             c->delay, (int)c->drop, (int)c->dup, (int)c->early);
    ev_timer_start(s->loop, &c->timer);
    if (c->early) {
        s->st.early++;
        c->held = req;
    } else {
        respond_initiated(req, c->id);
    }
}

/* --hang: keep REQ unanswered; freed when its client leaves or we stop. */
static void hold_forever(struct sim *s, struct http_request *req)
{
    struct hung *h = malloc(sizeof(*h));
    if (h == NULL) {
        http_respond_problem(req, 500, "out of memory", NULL);
        return;
    }
    s->st.rej_hang++;
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

/* POST /api/v1/calls. */
static void handle_initiate(struct sim *s, struct http_request *req)
{
    struct initiation in;
    struct draws d;
    size_t len;
    const char *why;

    if (!authorized(s, req)) {
        s->st.unauthorized++;
        http_respond_problem(req, 401, "a valid Authorization: Bearer key is required",
                             "WWW-Authenticate: Bearer\r\n");
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
    draw(s, &d);
    if (d.hang < s->o.hang) {
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
        if (m == HTTP_POST)
            handle_initiate(s, req);
        else
            http_respond_problem(req, 405, NULL, "Allow: POST\r\n");
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
            http_respond(h->req, 503, NULL, NULL, NULL, 0);   /* only frees it */
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
        snprintf(err, errlen, "--secret: a token of 1..%zu characters is required with "
                 "--callback-auth api-key", sizeof(s->token) - 1);
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
    curl_ev_free(s->ce);         /* webhooks in flight: webhook_done frees their calls */
    while (s->calls)
        call_free(s->calls);
    strmap_free(&s->phones);
    strmap_free(&s->references);
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
