/*
 * pg_pool.c — a non-blocking PostgreSQL connection pool on a libev loop.
 *
 * Owns: the connections of one pool and their state machine
 *
 *     WAIT --timer--> CONNECTING --PQconnectPoll OK--> IDLE <--> BUSY
 *       ^                 |  failed / connect timeout      |      |
 *       +-----------------+--------- lost / query timeout -+------+
 *
 * the FIFO job queue (with its queue timeout), and the pool state derived
 * from the connections (CONNECTING, UP, DOWN; see pg_pool.h).  The health
 * rule and the reconnect backoff are the ones net/redis.c uses too
 * (net/conn.h).
 *
 * Callbacks into the caller happen only from loop callbacks, never from
 * inside pg_pool_query()/pg_pool_submit(): a submit only queues the job and
 * arms an ev_prepare watcher, which dispatches the queue just before the
 * loop next waits.  That also makes every request that arrived in one loop
 * iteration visible to a BUILD callback at once (the group-commit window).
 */
#include <auto-config.h>

#include "net/pg_pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/conn.h"
#include "util/err.h"
#include "util/log.h"
#include "util/tunables.h"

enum conn_state { CONN_WAIT, CONN_CONNECTING, CONN_IDLE, CONN_BUSY };

struct pg_job {
    struct pg_job *next;
    ev_tstamp queued_at;
    pg_pool_build_cb build; /* NULL: q was copied at submit time */
    pg_pool_done_cb done;
    void *arg;
    struct pg_query q;
};

struct pg_conn {
    struct pg_pool *pool;
    int index;
    enum conn_state state;
    PGconn *pg;
    ev_io io;
    ev_timer timer;              /* backoff wait, connect timeout or query timeout */
    struct conn_backoff backoff; /* the wait before the next attempt */
    struct pg_job *job;          /* in flight while BUSY */
    PGresult *result;            /* the answer being collected */
    char fatal[256];             /* a FATAL the server sent before closing */
};

struct pg_pool {
    struct ev_loop *loop;
    char *conninfo;
    struct pg_pool_opts opts;
    struct pg_conn *conns;
    struct pg_job *head, *tail;
    int queued;
    ev_timer qtimer;           /* expires the head of the queue */
    ev_prepare kick;           /* dispatch the queue before the loop waits */
    struct conn_status status; /* failed: the latest connection attempt failed */
    int closing;
    int pumping;
    unsigned long connects, failed_jobs;
    char conn_error[400]; /* the latest connection failure */
    char error[512];      /* what pg_pool_error() returns */
};

static void conn_connect(struct pg_conn *c);
static void conn_on_io(struct ev_loop *loop, ev_io *w, int revents);
static void pool_pump(struct pg_pool *pool);
static void pool_update_state(struct pg_pool *pool);

/* ------------------------------------------------------------- helpers --- */

/* libpq messages on one line, without double quotes, for logs and errors. */
static void flatten(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    int space = 0;

    for (const char *p = in ? in : ""; *p != '\0' && o + 2 < outlen; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r' || *p == ' ') {
            space = 1;
            continue;
        }
        if (space && o > 0)
            out[o++] = ' ';
        space = 0;
        out[o++] = *p == '"' ? '\'' : *p;
    }
    if (outlen > 0)
        out[o] = '\0';
}

/* ---------------------------------------------------------------- jobs --- */

static void job_finish(struct pg_pool *pool, struct pg_job *job, const PGresult *res,
                       const char *err)
{
    if (res == NULL && err != NULL)
        pool->failed_jobs++;
    job->done(job->arg, res, err);
    free(job);
}

static void queue_push(struct pg_pool *pool, struct pg_job *job)
{
    job->next = NULL;
    if (pool->tail != NULL)
        pool->tail->next = job;
    else
        pool->head = job;
    pool->tail = job;
    pool->queued++;
}

/* Queued jobs need the queue timer (it expires the head) and a dispatch
 * before the loop next waits. */
static void queue_arm(struct pg_pool *pool)
{
    double left;

    if (pool->head != NULL && !ev_is_active(&pool->qtimer)) {
        left = pool->head->queued_at + pool->opts.queue_timeout - ev_now(pool->loop);
        ev_timer_set(&pool->qtimer, left > 0 ? left : 0., 0.);
        ev_timer_start(pool->loop, &pool->qtimer);
    }
    if (pool->head != NULL && !ev_is_active(&pool->kick))
        ev_prepare_start(pool->loop, &pool->kick);
}

/* Put JOB back at the head: it is older than everything queued. */
static void queue_push_front(struct pg_pool *pool, struct pg_job *job)
{
    job->next = pool->head;
    pool->head = job;
    if (pool->tail == NULL)
        pool->tail = job;
    pool->queued++;
    queue_arm(pool);
}

static struct pg_job *queue_pop(struct pg_pool *pool)
{
    struct pg_job *job = pool->head;

    if (job == NULL)
        return NULL;
    pool->head = job->next;
    if (pool->head == NULL)
        pool->tail = NULL;
    pool->queued--;
    return job;
}

/* Fail every queued job with MSG (the pool went down, or is closing). */
static void queue_fail_all(struct pg_pool *pool, const char *msg)
{
    struct pg_job *job;

    while ((job = queue_pop(pool)) != NULL)
        job_finish(pool, job, NULL, msg);
}

/* Copy SQL and VALUES into one allocation with the job. */
static struct pg_job *job_copy(const char *sql, int nparams, const char *const *values)
{
    size_t size = sizeof(struct pg_job) + (size_t)nparams * sizeof(char *) + strlen(sql) + 1;
    struct pg_job *job;
    char **vals, *p;

    for (int i = 0; i < nparams; i++)
        size += values[i] != NULL ? strlen(values[i]) + 1 : 0;
    if ((job = calloc(1, size)) == NULL)
        return NULL;
    vals = (char **)(job + 1);
    p = (char *)(vals + nparams);
    for (int i = 0; i < nparams; i++) {
        vals[i] = NULL;
        if (values[i] != NULL)
            p = stpcpy(vals[i] = p, values[i]) + 1;
    }
    strcpy(p, sql);
    job->q.sql = p;
    job->q.nparams = nparams;
    job->q.values = (const char *const *)vals;
    return job;
}

/* --------------------------------------------------------- connections --- */

/* (Re)arm the io watcher.  Always stop+set+start: during connecting libpq
 * may close a socket and open another under the same descriptor number,
 * and libev must be told about the new one. */
static void conn_watch(struct pg_conn *c, int events)
{
    struct ev_loop *loop = c->pool->loop;

    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, PQsocket(c->pg), events);
    ev_io_start(loop, &c->io);
}

static void conn_timer(struct pg_conn *c, double after)
{
    ev_timer_stop(c->pool->loop, &c->timer);
    if (after > 0) {
        ev_timer_set(&c->timer, after, 0.);
        ev_timer_start(c->pool->loop, &c->timer);
    }
}

/* Drop the libpq connection; the watcher goes first (see conn_watch). */
static void conn_close(struct pg_conn *c)
{
    ev_io_stop(c->pool->loop, &c->io);
    ev_timer_stop(c->pool->loop, &c->timer);
    PQclear(c->result);
    c->result = NULL;
    PQfinish(c->pg);
    c->pg = NULL;
}

/* Wait before the next attempt (conn_backoff_next()). */
static void conn_schedule_reconnect(struct pg_conn *c)
{
    c->state = CONN_WAIT;
    conn_timer(c, conn_backoff_next(&c->backoff));
}

static void conn_attempt_failed(struct pg_conn *c, const char *why)
{
    struct pg_pool *pool = c->pool;
    char msg[400];

    flatten(why, msg, sizeof(msg));
    conn_close(c);
    snprintf(pool->conn_error, sizeof(pool->conn_error), "%s", msg);
    co_seterr(pool->error, sizeof(pool->error), "cannot connect to PostgreSQL: %s", msg);
    /* Every retry fails the same way while the server is away: debug only;
     * the pool's own UP/DOWN transitions are logged at warn/info. */
    co_debug("PostgreSQL connection attempt failed", "pool=%s conn=%d error=%s", pool->opts.name,
             c->index, CO_LOG_Q(msg));
    pool->status.failed = true;
    conn_schedule_reconnect(c);
    pool_update_state(pool);
}

/*
 * A ready connection broke.  Its in-flight job (if any) fails with JOB_ERR
 * (default: the loss) and is not resent: the statement may have committed
 * before the answer was lost, or an operator may have killed it on purpose.
 */
static void conn_lost(struct pg_conn *c, const char *why, const char *job_err)
{
    struct pg_pool *pool = c->pool;
    struct pg_job *job = c->job;
    char msg[400], err[512];

    /* The server's FATAL (e.g. "terminating connection due to administrator
     * command") says more than libpq's "server closed the connection". */
    flatten(c->fatal[0] != '\0' ? c->fatal : why, msg, sizeof(msg));
    co_warn("PostgreSQL connection lost", "pool=%s conn=%d in_flight=%d error=%s", pool->opts.name,
            c->index, job != NULL, CO_LOG_Q(msg));
    snprintf(pool->conn_error, sizeof(pool->conn_error), "%s", msg);
    co_seterr(pool->error, sizeof(pool->error), "connection to PostgreSQL lost: %s", msg);
    c->job = NULL;
    conn_close(c);
    conn_backoff_reset(&c->backoff);
    conn_schedule_reconnect(c);
    pool_update_state(pool);
    if (job != NULL) {
        snprintf(err, sizeof(err), "%s", job_err ? job_err : pool->error);
        job_finish(pool, job, NULL, err);
    }
}

/* Server NOTICE/WARNING messages go to our log, not to libpq's default
 * (stderr). */
static void conn_on_notice(void *arg, const PGresult *res)
{
    struct pg_conn *c = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    char msg[400];

    flatten(primary, msg, sizeof(msg));
    if (sev != NULL && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
        flatten(primary, c->fatal, sizeof(c->fatal)); /* logged with the loss */
    else if (sev != NULL && strcmp(sev, "WARNING") == 0)
        co_warn("PostgreSQL warning", "pool=%s conn=%d message=%s", c->pool->opts.name, c->index,
                CO_LOG_Q(msg));
    else
        co_debug("PostgreSQL notice", "pool=%s conn=%d message=%s", c->pool->opts.name, c->index,
                 CO_LOG_Q(msg));
}

static void conn_ready(struct pg_conn *c)
{
    struct pg_pool *pool = c->pool;

    if (PQsetnonblocking(c->pg, 1) != 0) {
        conn_attempt_failed(c, PQerrorMessage(c->pg));
        return;
    }
    conn_timer(c, 0);
    c->state = CONN_IDLE;
    conn_backoff_reset(&c->backoff);
    pool->connects++;
    pool->status.failed = false;
    co_debug("PostgreSQL connection ready", "pool=%s conn=%d host=%s port=%s", pool->opts.name,
             c->index, PQhost(c->pg), PQport(c->pg));
    /* Idle connections still watch EV_READ, so that a server that goes away
     * is noticed now rather than by the next job. */
    conn_watch(c, EV_READ);
    pool_update_state(pool);
    pool_pump(pool);
}

/* One PQconnectPoll step; libpq says what to wait for next. */
static void conn_poll_connect(struct pg_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING: conn_watch(c, EV_READ); break;
    case PGRES_POLLING_WRITING: conn_watch(c, EV_WRITE); break;
    case PGRES_POLLING_OK: conn_ready(c); break;
    default: conn_attempt_failed(c, PQerrorMessage(c->pg)); break;
    }
}

static void conn_connect(struct pg_conn *c)
{
    struct pg_pool *pool = c->pool;
    const char *keys[] = { "dbname", "fallback_application_name", NULL };
    const char *vals[] = { pool->conninfo, "callorchd", NULL };

    c->state = CONN_CONNECTING;
    c->fatal[0] = '\0';
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (c->pg == NULL) {
        conn_attempt_failed(c, "out of memory");
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_attempt_failed(c, PQerrorMessage(c->pg));
        return;
    }
    PQsetNoticeReceiver(c->pg, conn_on_notice, c);
    /* libpq ignores connect_timeout in PQconnectPoll: we time it ourselves. */
    conn_timer(c, pool->opts.connect_timeout);
    conn_watch(c, EV_WRITE); /* as if PQconnectPoll had said WRITING */
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pg_conn *c = w->data;
    char msg[128];

    switch (c->state) {
    case CONN_WAIT: conn_connect(c); break;
    case CONN_CONNECTING:
        snprintf(msg, sizeof(msg), "connection attempt timed out after %g s",
                 c->pool->opts.connect_timeout);
        conn_attempt_failed(c, msg);
        break;
    case CONN_BUSY:
        /* A cancel request would block (PQcancel is synchronous in libpq
         * 15); dropping the connection is the non-blocking way out, and it
         * also covers a server that vanished without closing the socket. */
        snprintf(msg, sizeof(msg), "PostgreSQL query timed out after %g s",
                 c->pool->opts.query_timeout);
        conn_lost(c, "query timeout, connection reset", msg);
        break;
    case CONN_IDLE: break;
    }
}

/* ------------------------------------------------------------- queries --- */

static int result_ok(const PGresult *res)
{
    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY: return 1;
    default: return 0;
    }
}

/* The job's answer is complete: hand it over, then the connection is free. */
static void conn_job_done(struct pg_conn *c)
{
    struct pg_pool *pool = c->pool;
    struct pg_job *job = c->job;
    PGresult *res = c->result;
    const char *primary;
    char err[512];

    c->job = NULL;
    c->result = NULL;
    c->state = CONN_IDLE;
    conn_timer(c, 0);
    if (res == NULL) {
        job_finish(pool, job, NULL, "no result from PostgreSQL");
    } else if (result_ok(res)) {
        job_finish(pool, job, res, NULL);
    } else {
        primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        flatten(primary ? primary : PQresultErrorMessage(res), err, sizeof(err));
        job_finish(pool, job, res, err);
    }
    PQclear(res);
    if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_BAD)
        conn_lost(c, PQerrorMessage(c->pg), NULL);
    else
        pool_pump(pool);
}

/* Keep the first error result, otherwise the last result. */
static void conn_keep_result(struct pg_conn *c, PGresult *r)
{
    if (c->result == NULL) {
        c->result = r;
    } else if (!result_ok(c->result)) {
        PQclear(r);
    } else {
        PQclear(c->result);
        c->result = r;
    }
}

/* Take every result libpq has complete; the NULL result ends the job. */
static void conn_collect(struct pg_conn *c)
{
    while (c->job != NULL && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        ExecStatusType st = PQresultStatus(r);

        if (r == NULL) {
            conn_job_done(c);
            return;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(r);
            conn_lost(c, "COPY is not supported by the pool", "COPY is not supported");
            return;
        }
        conn_keep_result(c, r);
    }
}

static void conn_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pg_conn *c = w->data;
    int r;

    if (c->state == CONN_CONNECTING) {
        conn_poll_connect(c);
        return;
    }
    if ((revents & EV_READ) && !PQconsumeInput(c->pg)) {
        conn_lost(c, PQerrorMessage(c->pg), NULL);
        return;
    }
    for (PGnotify *n; (n = PQnotifies(c->pg)) != NULL;)
        PQfreemem(n);
    /* Reading can unblock a pending flush and vice versa: retry the flush
     * whenever output is still queued. */
    if (c->io.events & EV_WRITE) {
        if ((r = PQflush(c->pg)) < 0) {
            conn_lost(c, PQerrorMessage(c->pg), NULL);
            return;
        }
        if (r == 0)
            conn_watch(c, EV_READ);
    }
    if (c->state == CONN_BUSY)
        conn_collect(c);
    else if (PQstatus(c->pg) == CONNECTION_BAD)
        conn_lost(c, PQerrorMessage(c->pg), NULL);
}

/*
 * Whether an idle connection is still alive: read what the server sent
 * meanwhile.  A backend that was terminated while idle has sent a FATAL
 * (the notice receiver records it) and closed; without this check the next
 * job would be sent into a dead connection.  One recv() per job.
 */
static int conn_alive(struct pg_conn *c)
{
    if (!PQconsumeInput(c->pg))
        return 0;
    for (PGnotify *n; (n = PQnotifies(c->pg)) != NULL;) /* parses the input */
        PQfreemem(n);
    return c->fatal[0] == '\0' && PQstatus(c->pg) == CONNECTION_OK;
}

/* Build (if need be) and send JOB on the idle connection C. */
static void conn_send(struct pg_conn *c, struct pg_job *job)
{
    struct pg_pool *pool = c->pool;
    char err[512];
    int r;

    if (!conn_alive(c)) {
        /* Nothing was sent, so the job is simply still waiting: back to
         * the head of the queue, for another connection (or the queue
         * timeout, or the refusal when the pool goes down). */
        queue_push_front(pool, job);
        conn_lost(c, PQerrorMessage(c->pg), NULL);
        return;
    }
    if (job->build != NULL && job->build(job->arg, &job->q) != 0) {
        job_finish(pool, job, NULL, NULL); /* nothing left to send */
        return;
    }
    if (!PQsendQueryParams(c->pg, job->q.sql, job->q.nparams, NULL, job->q.values, NULL, NULL, 0)) {
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            c->job = job;
            conn_lost(c, PQerrorMessage(c->pg), NULL);
            return;
        }
        flatten(PQerrorMessage(c->pg), err, sizeof(err)); /* e.g. too many params */
        job_finish(pool, job, NULL, err);
        return;
    }
    c->job = job;
    c->state = CONN_BUSY;
    conn_timer(c, pool->opts.query_timeout);
    if ((r = PQflush(c->pg)) < 0)
        conn_lost(c, PQerrorMessage(c->pg), NULL);
    else
        conn_watch(c, r == 1 ? EV_READ | EV_WRITE : EV_READ);
}

/* ---------------------------------------------------------------- pool --- */

static struct pg_conn *pool_idle_conn(struct pg_pool *pool)
{
    for (int i = 0; i < pool->opts.size; i++)
        if (pool->conns[i].state == CONN_IDLE)
            return &pool->conns[i];
    return NULL;
}

/* Hand queued jobs to idle connections, oldest first.  Jobs submitted by
 * callbacks meanwhile are picked up by the same loop, not by recursion. */
static void pool_pump(struct pg_pool *pool)
{
    struct pg_conn *c;

    if (pool->pumping || pool->closing)
        return;
    pool->pumping = 1;
    while (pool->head != NULL && (c = pool_idle_conn(pool)) != NULL)
        conn_send(c, queue_pop(pool));
    pool->pumping = 0;
}

static void pool_on_kick(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct pg_pool *pool = w->data;

    ev_prepare_stop(loop, w);
    pool_pump(pool);
}

/* Fail jobs that waited longer than queue_timeout; FIFO, so only the head
 * can be the oldest. */
static void pool_on_qtimer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pg_pool *pool = w->data;
    double qt = pool->opts.queue_timeout;
    char msg[128];

    snprintf(msg, sizeof(msg), "timed out after %g s waiting for a PostgreSQL connection", qt);
    while (pool->head != NULL && pool->head->queued_at + qt <= ev_now(loop))
        job_finish(pool, queue_pop(pool), NULL, msg);
    queue_arm(pool);
}

/* Derive the pool's health from its connections; log and act on a change
 * only (conn_status_update()). */
static void pool_update_state(struct pg_pool *pool)
{
    int ready = 0;
    char msg[600];

    for (int i = 0; i < pool->opts.size; i++)
        ready += pool->conns[i].state == CONN_IDLE || pool->conns[i].state == CONN_BUSY;
    if (!conn_status_update(&pool->status, ready > 0))
        return;
    if (pool->status.health == CONN_HEALTH_UP) {
        co_info("PostgreSQL pool up", "pool=%s connections=%d", pool->opts.name, ready);
    } else if (pool->status.health == CONN_HEALTH_DOWN) {
        co_warn("PostgreSQL pool down", "pool=%s error=%s", pool->opts.name,
                CO_LOG_Q(pool->conn_error));
        /* Callers get the same fast refusal whether they came before or
         * after the pool went down. */
        snprintf(msg, sizeof(msg), "PostgreSQL unavailable: %s", pool->conn_error);
        queue_fail_all(pool, msg);
    }
}

/* -------------------------------------------------------------- public --- */

void pg_pool_opts_init(struct pg_pool_opts *opts)
{
    opts->size = 4;
    opts->queue_timeout = co_tunables.pg_queue_timeout;
    opts->connect_timeout = 5;
    opts->query_timeout = 30;
    opts->backoff_min = 0.1;
    opts->backoff_max = co_tunables.pg_backoff_max;
    opts->max_queue = 10000;
    opts->name = "pg";
}

static int check_opts(const struct pg_pool_opts *o, char *err, size_t errlen)
{
    const char *bad = NULL;

    if (o->size < 1 || o->size > 1000)
        bad = "size must be 1..1000";
    else if (!(o->queue_timeout > 0) || !(o->connect_timeout > 0) || !(o->query_timeout >= 0))
        bad = "timeouts must be positive";
    else if (!(o->backoff_min > 0) || o->backoff_max < o->backoff_min)
        bad = "backoff_min must be positive and not above backoff_max";
    else if (o->max_queue < 1)
        bad = "max_queue must be positive";
    if (bad != NULL)
        co_seterr(err, errlen, "pg_pool: %s", bad);
    return bad != NULL ? -1 : 0;
}

static int check_conninfo(const char *conninfo, char *err, size_t errlen)
{
    char *perr = NULL, msg[400];
    PQconninfoOption *o;

    /* A bare word is a database name (libpq's expand_dbname rule). */
    if (strchr(conninfo, '=') == NULL && strstr(conninfo, "://") == NULL)
        return 0;
    if ((o = PQconninfoParse(conninfo, &perr)) != NULL) {
        PQconninfoFree(o);
        return 0;
    }
    flatten(perr ? perr : "out of memory", msg, sizeof(msg));
    co_seterr(err, errlen, "invalid [postgres] conninfo: %s", msg);
    PQfreemem(perr);
    return -1;
}

static void pool_init_conn(struct pg_pool *pool, int i)
{
    struct pg_conn *c = &pool->conns[i];

    c->pool = pool;
    c->index = i;
    c->state = CONN_WAIT;
    ev_io_init(&c->io, conn_on_io, -1, EV_READ);
    c->io.data = c;
    ev_timer_init(&c->timer, conn_on_timer, 0., 0.);
    c->timer.data = c;
    conn_backoff_init(&c->backoff, pool->opts.backoff_min, pool->opts.backoff_max);
}

struct pg_pool *pg_pool_new(struct ev_loop *loop, const char *conninfo,
                            const struct pg_pool_opts *opts, char *err, size_t errlen)
{
    struct pg_pool *pool;

    if (check_opts(opts, err, errlen) != 0 || check_conninfo(conninfo, err, errlen) != 0)
        return NULL;
    if ((pool = calloc(1, sizeof(*pool))) == NULL ||
        (pool->conns = calloc((size_t)opts->size, sizeof(*pool->conns))) == NULL ||
        (pool->conninfo = strdup(conninfo)) == NULL) {
        if (pool != NULL)
            free(pool->conns);
        free(pool);
        co_seterr(err, errlen, "pg_pool: out of memory");
        return NULL;
    }
    pool->loop = loop;
    pool->opts = *opts;
    if (pool->opts.name == NULL)
        pool->opts.name = "pg";
    pool->status.health = CONN_HEALTH_CONNECTING;
    ev_timer_init(&pool->qtimer, pool_on_qtimer, 0., 0.);
    pool->qtimer.data = pool;
    ev_prepare_init(&pool->kick, pool_on_kick);
    pool->kick.data = pool;
    for (int i = 0; i < opts->size; i++)
        pool_init_conn(pool, i);
    for (int i = 0; i < opts->size; i++)
        conn_connect(&pool->conns[i]);
    return pool;
}

void pg_pool_free(struct pg_pool *pool)
{
    if (pool == NULL)
        return;
    pool->closing = 1;
    for (int i = 0; i < pool->opts.size; i++) {
        struct pg_conn *c = &pool->conns[i];
        struct pg_job *job = c->job;
        c->job = NULL;
        conn_close(c);
        if (job != NULL)
            job_finish(pool, job, NULL, "pool closed");
    }
    queue_fail_all(pool, "pool closed");
    ev_timer_stop(pool->loop, &pool->qtimer);
    ev_prepare_stop(pool->loop, &pool->kick);
    free(pool->conns);
    free(pool->conninfo);
    free(pool);
}

/* Why a new job cannot be queued now, or NULL when it can. */
static const char *pool_refusal(struct pg_pool *pool)
{
    if (pool->closing)
        co_seterr(pool->error, sizeof(pool->error), "pool closed");
    else if (pool->status.health == CONN_HEALTH_DOWN)
        co_seterr(pool->error, sizeof(pool->error), "PostgreSQL unavailable: %s", pool->conn_error);
    else if (pool->queued >= pool->opts.max_queue)
        co_seterr(pool->error, sizeof(pool->error), "PostgreSQL queue full (%d jobs waiting)",
                  pool->queued);
    else
        return NULL;
    return pool->error;
}

/* Admit JOB to the queue (or free it and return -1). */
static int pool_enqueue(struct pg_pool *pool, struct pg_job *job)
{
    if (pool_refusal(pool) != NULL) {
        free(job);
        return -1;
    }
    job->queued_at = ev_now(pool->loop);
    queue_push(pool, job);
    queue_arm(pool);
    return 0;
}

int pg_pool_query(struct pg_pool *pool, const char *sql, int nparams, const char *const *values,
                  pg_pool_done_cb done, void *arg)
{
    struct pg_job *job;

    if (nparams < 0 || nparams > 65535 || (nparams > 0 && values == NULL)) {
        co_seterr(pool->error, sizeof(pool->error), "invalid number of parameters");
        return -1;
    }
    if ((job = job_copy(sql, nparams, values)) == NULL) {
        co_seterr(pool->error, sizeof(pool->error), "out of memory");
        return -1;
    }
    job->done = done;
    job->arg = arg;
    return pool_enqueue(pool, job);
}

int pg_pool_submit(struct pg_pool *pool, pg_pool_build_cb build, pg_pool_done_cb done, void *arg)
{
    struct pg_job *job = calloc(1, sizeof(*job));

    if (job == NULL) {
        co_seterr(pool->error, sizeof(pool->error), "out of memory");
        return -1;
    }
    job->build = build;
    job->done = done;
    job->arg = arg;
    return pool_enqueue(pool, job);
}

int pg_pool_is_up(const struct pg_pool *pool)
{
    return pool->status.health == CONN_HEALTH_UP;
}

enum pg_pool_state pg_pool_state(const struct pg_pool *pool)
{
    switch (pool->status.health) {
    case CONN_HEALTH_UP: return PG_POOL_UP;
    case CONN_HEALTH_DOWN: return PG_POOL_DOWN;
    case CONN_HEALTH_CONNECTING: break;
    }
    return PG_POOL_CONNECTING;
}

int pg_pool_idle(const struct pg_pool *pool)
{
    if (pool->head != NULL)
        return 0;
    for (int i = 0; i < pool->opts.size; i++)
        if (pool->conns[i].state == CONN_BUSY)
            return 0;
    return 1;
}

const char *pg_pool_error(const struct pg_pool *pool)
{
    return pool->error;
}

void pg_pool_stats(const struct pg_pool *pool, struct pg_pool_stats *st)
{
    memset(st, 0, sizeof(*st));
    for (int i = 0; i < pool->opts.size; i++) {
        st->ready += pool->conns[i].state == CONN_IDLE || pool->conns[i].state == CONN_BUSY;
        st->busy += pool->conns[i].state == CONN_BUSY;
    }
    st->queued = pool->queued;
    st->connects = pool->connects;
    st->failed_jobs = pool->failed_jobs;
}
