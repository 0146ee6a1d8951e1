/*
 * deliver.c — client event delivery (deliver.h).
 *
 * Owns: the claim loop (what is claimed when), one signed POST per claimed
 * event through curl_ev, the queue of results waiting to be recorded (in
 * batches: one statement for all the results that arrived meanwhile), the
 * retry policy's constants, the pending gauge and the events_settings
 * switch.  The SQL is in store/events.c, the signing in util/webhook_sig.c.
 *
 * Order per call needs no bookkeeping here: the claim only takes the first
 * pending event of a call and a claimed event stays pending until its
 * result is recorded, so the next event of that call waits for it, here
 * and in every other daemon (store/events.c).  Each result carries the
 * attempt count of its claim, so a result recorded late (after the lease
 * expired and someone claimed the event again) changes nothing.
 */
#include "events/deliver.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/curl_ev.h"
#include "net/pg_pool.h"
#include "store/events.h"
#include "util/log.h"
#include "util/shm.h"
#include "util/webhook_sig.h"

#define POLL_INTERVAL 0.25 /* s between claims while nothing was due */
#define GAUGE_INTERVAL 2.0 /* s between counts of the pending events */
#define LEASE_MARGIN 30.0  /* s a claim's lease outlasts its try */
#define RETRY_BASE 1.0     /* s before the second try, doubling … */
#define RETRY_MAX 300.0    /* … up to this */
#define ERROR_MAX 200      /* bytes of an error kept in last_error */

/* A try's outcome, waiting to be recorded.  r.error is set from ERROR only
 * when a batch is sent: the arrays move (realloc, swap) meanwhile. */
struct result {
    struct store_event_result r;
    char error[ERROR_MAX]; /* when !r.delivered */
    ev_tstamp lease_end;   /* recording it later would be stale */
};

/* One POST in flight. */
struct
try {
    struct deliverer *d;
    long long seq;
    int attempts;
    ev_tstamp lease_end;
    char call_id[40];
};

struct deliverer {
    struct ev_loop *loop;
    const struct co_config *cfg;
    struct pg_pool *pg;
    struct curl_ev *curl;
    struct webhook_keys keys;
    struct store_event_retry retry;
    double lease_s;
    ev_timer poll, gauge;
    int in_flight;
    bool claiming, more_due; /* the last claim was full: claim again soon */
    bool settings_done, settings_busy, counting, db_down;
    bool warned_unsigned, warned_no_url;
    bool stopping, freeing;
    void (*stop_done)(void *arg);
    void *stop_arg;
    struct result *results; /* waiting to be recorded */
    int n_results, cap_results;
    struct result *batch; /* being recorded */
    int n_batch, cap_batch;
};

static void claim(struct deliverer *d);
static void flush(struct deliverer *d);

/* A graceful stop is over when nothing is in flight and nothing is left to record. */
static void maybe_stopped(struct deliverer *d)
{
    if (!d->stopping || d->stop_done == NULL || d->in_flight > 0 || d->claiming || d->n_batch > 0 ||
        d->n_results > 0)
        return;
    void (*done)(void *) = d->stop_done;
    d->stop_done = NULL;
    done(d->stop_arg);
}

/* The database is back (after DB_DOWN was logged) or gone: log the change once. */
static void db_state(struct deliverer *d, const struct store_err *e, const char *what)
{
    if (e == NULL && d->db_down) {
        co_info("events: database reachable again", NULL);
        d->db_down = false;
    } else if (e != NULL && !d->db_down) {
        co_warn("events: database statement failed", "what=%s error=%s", what, CO_LOG_Q(e->msg));
        d->db_down = store_unavailable(e);
    }
}

/* ------------------------------------------------------------- results */

static int grow(struct result **a, int *cap, int want)
{
    if (want <= *cap)
        return 0;
    int cap2 = *cap ? *cap * 2 : 64;
    while (cap2 < want)
        cap2 *= 2;
    struct result *n = realloc(*a, (size_t)cap2 * sizeof(*n));
    if (n == NULL)
        return -1;
    *a = n;
    *cap = cap2;
    return 0;
}

/* Queue the outcome of the try T: STATUS (0: none) and ERROR (NULL: delivered). */
static void add_result(struct deliverer *d, const struct try *t, int status, const char *error)
{
    if (grow(&d->results, &d->cap_results, d->n_results + 1) < 0) {
        /* the lease expires and the event is tried again */
        co_error("events: out of memory for a result", "seq=%lld", t->seq);
        return;
    }
    struct result *r = &d->results[d->n_results++];
    memset(r, 0, sizeof(*r));
    r->r.seq = t->seq;
    r->r.attempts = t->attempts;
    r->r.status = status;
    r->r.delivered = error == NULL;
    if (error != NULL)
        snprintf(r->error, sizeof(r->error), "%s", error);
    r->lease_end = t->lease_end;
}

static void on_finished(void *ctx, const struct store_err *e, int failed)
{
    struct deliverer *d = ctx;
    if (d->freeing) {
        d->n_batch = 0;
        return;
    }
    db_state(d, e, "finish");
    if (e != NULL && !d->stopping &&
        grow(&d->results, &d->cap_results, d->n_results + d->n_batch) == 0) {
        /* try again with the next batch (those whose lease ran out are dropped) */
        memmove(d->results + d->n_batch, d->results, (size_t)d->n_results * sizeof(*d->results));
        memcpy(d->results, d->batch, (size_t)d->n_batch * sizeof(*d->batch));
        d->n_results += d->n_batch;
    }
    for (int i = 0; i < failed; i++)
        shm_count(CNT_EVENTS_FAILED);
    if (failed > 0)
        co_warn("events: given up after [events] max_age", "count=%d", failed);
    d->n_batch = 0;
    if (e == NULL) {
        flush(d);
        claim(d); /* the next event of each recorded call may be due now */
    }
    maybe_stopped(d);
}

/* Drop the results whose lease ran out: recording them would change nothing. */
static void drop_stale(struct deliverer *d)
{
    ev_tstamp now = ev_now(d->loop);
    int kept = 0;
    for (int i = 0; i < d->n_results; i++) {
        if (d->results[i].lease_end > now + 1)
            d->results[kept++] = d->results[i];
        else
            co_debug("events: result dropped, lease expired", "seq=%lld", d->results[i].r.seq);
    }
    d->n_results = kept;
}

/* Record every queued result in one statement, unless one is running. */
static void flush(struct deliverer *d)
{
    if (d->n_batch > 0 || d->freeing)
        return;
    drop_stale(d);
    if (d->n_results == 0)
        return;
    struct store_event_result *r = malloc((size_t)d->n_results * sizeof(*r));
    if (r == NULL)
        return; /* the next tick tries again */
    for (int i = 0; i < d->n_results; i++) {
        r[i] = d->results[i].r;
        r[i].error = d->results[i].r.delivered ? NULL : d->results[i].error;
    }
    if (store_events_finish(d->pg, r, d->n_results, &d->retry, on_finished, d) == 0) {
        /* swap: the queue becomes the batch, the old batch array the queue */
        struct result *a = d->batch;
        int cap = d->cap_batch;
        d->batch = d->results;
        d->cap_batch = d->cap_results;
        d->n_batch = d->n_results;
        d->results = a;
        d->cap_results = cap;
        d->n_results = 0;
    }
    free(r);
}

/* ---------------------------------------------------------------- send */

static void on_sent(void *arg, const struct curl_ev_response *resp)
{
    struct try *t = arg;
    struct deliverer *d = t->d;
    d->in_flight--;
    if (d->freeing) {
        free(t);
        return;
    }
    if (resp->result == CURLE_OK && resp->status >= 200 && resp->status < 300) {
        shm_count(CNT_EVENTS_DELIVERED);
        add_result(d, t, (int)resp->status, NULL);
    } else {
        char why[ERROR_MAX];
        if (resp->result == CURLE_OK)
            snprintf(why, sizeof(why), "HTTP %ld", resp->status);
        else
            snprintf(why, sizeof(why), "%s", resp->error ? resp->error : "no answer");
        /* the URL is the client's and may carry a token: not logged */
        co_warn("events: delivery failed", "seq=%lld call_id=%s attempt=%d status=%ld error=%s",
                t->seq, t->call_id, t->attempts, resp->status, CO_LOG_Q(why));
        add_result(d, t, (int)resp->status, why);
    }
    free(t);
    flush(d);
    if (d->more_due)
        claim(d);
    maybe_stopped(d);
}

/* The webhook-signature value: one v1 entry per key (two during a rotation). */
static int sign(const struct deliverer *d, const char *id, long long ts, const char *body,
                size_t len, char *out, size_t outlen)
{
    char one[WEBHOOK_SIGNATURE_BUF];
    out[0] = '\0';
    for (int i = 0; i < d->keys.n; i++) {
        if (webhook_sign(d->keys.key[i], d->keys.len[i], id, ts, body, len, one, sizeof(one)) < 0)
            return -1;
        size_t used = strlen(out);
        snprintf(out + used, outlen - used, "%s%s", i > 0 ? " " : "", one);
    }
    return 0;
}

/* Why EV cannot be sent now (NULL: it can), logged once per child. */
static const char *unsendable(struct deliverer *d, const char *url)
{
    if (url == NULL || url[0] == '\0') {
        if (!d->warned_no_url)
            co_warn("events: an event has no URL and [events] url is empty; kept pending", NULL);
        d->warned_no_url = true;
        return "no URL: the event has none and [events] url is empty";
    }
    if (d->keys.n == 0) {
        if (!d->warned_unsigned)
            co_warn("events: [events] secret is not set; events are never sent unsigned, kept "
                    "pending",
                    NULL);
        d->warned_unsigned = true;
        return "not sent: [events] secret is not set (events are never sent unsigned)";
    }
    return NULL;
}

/* POST the claimed event EV; its result is queued when the answer comes. */
static void send_event(struct deliverer *d, const struct store_event *ev, ev_tstamp lease_end)
{
    struct try *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return; /* the lease expires and the event is tried again */
    t->d = d;
    t->seq = ev->seq;
    t->attempts = ev->attempts;
    t->lease_end = lease_end;
    snprintf(t->call_id, sizeof(t->call_id), "%s", ev->call_id ? ev->call_id : "-");

    const char *url = ev->url != NULL ? ev->url : d->cfg->events_url;
    const char *why = unsendable(d, url);
    if (why != NULL) {
        add_result(d, t, 0, why);
        free(t);
        return;
    }
    char id[32], h_id[48], h_ts[48], sig[2 * WEBHOOK_SIGNATURE_BUF + 2], h_sig[sizeof(sig) + 32];
    long long now = (long long)time(NULL);
    snprintf(id, sizeof(id), "evt_%lld", ev->seq);
    if (sign(d, id, now, ev->payload, ev->payload_len, sig, sizeof(sig)) < 0) {
        add_result(d, t, 0, "signing failed");
        free(t);
        return;
    }
    snprintf(h_id, sizeof(h_id), "webhook-id: %s", id);
    snprintf(h_ts, sizeof(h_ts), "webhook-timestamp: %lld", now);
    snprintf(h_sig, sizeof(h_sig), "webhook-signature: %s", sig);
    const char *headers[] = { "Content-Type: application/json", h_id, h_ts, h_sig, NULL };
    struct curl_ev_request req = { .method = "POST",
                                   .url = url,
                                   .headers = headers,
                                   .body = ev->payload,
                                   .body_len = ev->payload_len,
                                   .timeout_s = d->cfg->events_timeout };
    if (curl_ev_send(d->curl, &req, on_sent, t) < 0) {
        add_result(d, t, 0, "could not start the request");
        free(t);
        return;
    }
    d->in_flight++;
}

/* --------------------------------------------------------------- claim */

static void on_claimed(void *ctx, const struct store_err *e, const struct store_event *ev, int n)
{
    struct deliverer *d = ctx;
    d->claiming = false;
    if (d->freeing)
        return;
    db_state(d, e, "claim");
    ev_tstamp lease_end = ev_now(d->loop) + d->lease_s;
    for (int i = 0; e == NULL && i < n; i++)
        send_event(d, &ev[i], lease_end);
    flush(d); /* results of events that could not be sent */
    d->more_due = e == NULL && n > 0 && n >= DELIVER_MAX_IN_FLIGHT - d->in_flight;
    if (d->more_due)
        claim(d);
    maybe_stopped(d);
}

/* Claim as many due events as there is room for in flight. */
static void claim(struct deliverer *d)
{
    int room = DELIVER_MAX_IN_FLIGHT - d->in_flight;
    /* results that cannot be recorded hold their events' leases: wait */
    if (d->stopping || d->freeing || d->claiming || room <= 0 ||
        d->n_results >= DELIVER_MAX_IN_FLIGHT)
        return;
    if (store_events_claim(d->pg, room, d->lease_s, on_claimed, d) == 0)
        d->claiming = true;
}

/* ---------------------------------------------------- settings, gauge */

static void on_settings(void *ctx, const struct store_err *e)
{
    struct deliverer *d = ctx;
    d->settings_busy = false;
    if (d->freeing)
        return;
    db_state(d, e, "settings");
    if (e == NULL && !d->settings_done)
        co_info("events: outbox switch set", "default_url_set=%s",
                d->cfg->events_url[0] ? "true" : "false");
    d->settings_done = e == NULL;
}

static void write_settings(struct deliverer *d)
{
    if (d->settings_done || d->settings_busy)
        return;
    if (store_events_settings(d->pg, d->cfg->events_url[0] != '\0', on_settings, d) == 0)
        d->settings_busy = true;
}

static void on_counted(void *ctx, const struct store_err *e, long long n)
{
    struct deliverer *d = ctx;
    d->counting = false;
    if (!d->freeing)
        shm_set_events_pending(e == NULL ? n : -1);
}

static void on_gauge(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct deliverer *d = w->data;
    if (!d->counting && store_events_pending(d->pg, on_counted, d) == 0)
        d->counting = true;
}

static void on_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct deliverer *d = w->data;
    write_settings(d);
    flush(d);
    claim(d);
}

/* ------------------------------------------------------------ lifecycle */

struct deliverer *deliverer_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                                size_t errlen)
{
    struct deliverer *d = calloc(1, sizeof(*d));
    struct pg_pool_opts opts;
    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->loop = loop;
    d->cfg = cfg;
    d->lease_s = cfg->events_timeout + LEASE_MARGIN;
    d->retry = (struct store_event_retry){ RETRY_BASE, RETRY_MAX, cfg->events_max_age };
    /* the config loader checked the secret's format; empty: no keys */
    if (cfg->events_secret[0] != '\0' &&
        webhook_keys_parse(cfg->events_secret, &d->keys, err, errlen) < 0) {
        free(d);
        return NULL;
    }
    pg_pool_opts_init(&opts);
    opts.size = 2; /* a claim and a batch of results at once */
    opts.name = "events";
    if ((d->pg = pg_pool_new(loop, cfg->pg_conninfo, &opts, err, errlen)) == NULL ||
        (d->curl = curl_ev_new(loop)) == NULL) {
        if (d->curl == NULL && d->pg != NULL)
            snprintf(err, errlen, "cannot set up libcurl");
        deliverer_free(d);
        return NULL;
    }
    ev_timer_init(&d->poll, on_poll, 0., POLL_INTERVAL);
    d->poll.data = d;
    ev_timer_start(loop, &d->poll);
    ev_timer_init(&d->gauge, on_gauge, 0., GAUGE_INTERVAL);
    d->gauge.data = d;
    ev_timer_start(loop, &d->gauge);
    return d;
}

void deliverer_stop(struct deliverer *d, void (*done)(void *arg), void *arg)
{
    d->stopping = true;
    d->stop_done = done;
    d->stop_arg = arg;
    ev_timer_stop(d->loop, &d->gauge);
    maybe_stopped(d);
}

void deliverer_free(struct deliverer *d)
{
    if (d == NULL)
        return;
    d->freeing = true;
    ev_timer_stop(d->loop, &d->poll);
    ev_timer_stop(d->loop, &d->gauge);
    /* their callbacks see FREEING and only release what they hold */
    if (d->curl != NULL)
        curl_ev_free(d->curl);
    if (d->pg != NULL)
        pg_pool_free(d->pg);
    webhook_keys_clear(&d->keys);
    free(d->results);
    free(d->batch);
    free(d);
}
