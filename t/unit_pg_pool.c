/*
 * unit_pg_pool.c — src/net/pg_pool.c against a real PostgreSQL server.
 *
 * CALLORCH_TEST_PG holds the conninfo (t/11-pg-pool.t starts a server and
 * sets it); without it the test skips.  The server-restart case runs when
 * someone can stop and start that server for us: CALLORCH_TEST_PG_CTL=stdio
 * (we print "# pgctl stop" / "# pgctl start" and wait for a line on stdin:
 * that is how t/11-pg-pool.t drives the harness), or CALLORCH_TEST_PG_STOP
 * and CALLORCH_TEST_PG_START holding shell commands (for running by hand).
 */
#include <auto-config.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <libpq-fe.h>

#include "net/pg_pool.h"
#include "tap.h"
#include "tap_ev.h"
#include "util/log.h"

static struct ev_loop *loop;
static const char *conninfo;

/* ------------------------------------------------------------- helpers --- */

/* Run the loop until COND(ARG) holds or SECONDS pass; returns COND. */
static int run_until(int (*cond)(void *), void *arg, double seconds)
{
    return run_loop_until(loop, cond, arg, seconds);
}

static int counter_reaches(void *arg)
{
    int *p = arg;
    return p[0] >= p[1];
}

static int pool_up(void *arg)
{
    return pg_pool_is_up(arg);
}

static int pool_down(void *arg)
{
    return pg_pool_state(arg) == PG_POOL_DOWN;
}

static int pool_all_ready(void *arg)
{
    struct pg_pool_stats st;
    pg_pool_stats(arg, &st);
    return st.ready == 4;
}

/* One job's outcome, copied out of the callback. */
struct outcome {
    int done;
    int had_res;
    int ok;
    char err[512];
    char sqlstate[6];
    char value[256];
    double at;
};

static void keep_outcome(void *arg, const PGresult *res, const char *err)
{
    struct outcome *o = arg;
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    o->done++;
    o->had_res = res != NULL;
    o->ok = res != NULL && err == NULL;
    snprintf(o->err, sizeof(o->err), "%s", err ? err : "");
    snprintf(o->sqlstate, sizeof(o->sqlstate), "%s", st ? st : "");
    if (o->ok && PQntuples(res) > 0 && PQnfields(res) > 0)
        snprintf(o->value, sizeof(o->value), "%s", PQgetvalue(res, 0, 0));
    o->at = ev_time();
}

static int outcome_done(void *arg)
{
    return ((struct outcome *)arg)->done > 0;
}

/* A query on a fresh pool that must succeed; returns its first value. */
static int query_ok(struct pg_pool *pool, const char *sql, struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    if (pg_pool_query(pool, sql, 0, NULL, keep_outcome, o) != 0)
        return 0;
    return run_until(outcome_done, o, 10) && o->ok;
}

static struct pg_pool *make_pool(const char *ci, int size, double queue_timeout,
                                 double query_timeout)
{
    struct pg_pool_opts opts;
    char err[256];
    struct pg_pool *pool;

    pg_pool_opts_init(&opts);
    opts.size = size;
    opts.queue_timeout = queue_timeout;
    opts.query_timeout = query_timeout;
    opts.name = "test";
    if ((pool = pg_pool_new(loop, ci, &opts, err, sizeof(err))) == NULL)
        bail("pg_pool_new: %s", err);
    return pool;
}

/* CALLORCH_TEST_PG with our own application_name, so that the connection
 * loss case can find (and kill) exactly this process's connections. */
static char *conninfo_with_appname(const char *appname)
{
    const char *sep = strstr(conninfo, "://") == NULL ? " " : strchr(conninfo, '?') ? "&" : "?";
    size_t n = strlen(conninfo) + strlen(appname) + 32;
    char *s = malloc(n);

    if (s == NULL)
        bail("out of memory");
    snprintf(s, n, "%s%sapplication_name=%s", conninfo, sep, appname);
    return s;
}

/* ------------------------------------------------------------- cases --- */

struct many {
    int done[2]; /* done count, wanted */
    int errors;
    int wrong;
    int pids[256];
    int npids;
};

struct many_job {
    struct many *m;
    int value;
};

static void many_done(void *arg, const PGresult *res, const char *err)
{
    struct many_job *j = arg;
    struct many *m = j->m;
    int pid;

    m->done[0]++;
    if (err != NULL || res == NULL || PQntuples(res) != 1) {
        m->errors++;
        return;
    }
    if (atoi(PQgetvalue(res, 0, 0)) != j->value * 2)
        m->wrong++;
    pid = atoi(PQgetvalue(res, 0, 1));
    for (int i = 0; i < m->npids; i++)
        if (m->pids[i] == pid)
            return;
    if (m->npids < 256)
        m->pids[m->npids++] = pid;
}

static void test_many(struct pg_pool *pool)
{
    static struct many m;
    static struct many_job jobs[200];
    char num[16];

    memset(&m, 0, sizeof(m));
    m.done[1] = 200;
    for (int i = 0; i < 200; i++) {
        const char *v[1] = { num };
        jobs[i].m = &m;
        jobs[i].value = i;
        snprintf(num, sizeof(num), "%d", i);
        if (pg_pool_query(pool, "SELECT $1::int * 2, pg_backend_pid(), pg_sleep(0.001)", 1, v,
                          many_done, &jobs[i]) != 0)
            m.errors++;
    }
    ok(!pg_pool_idle(pool), "200 jobs queued: pool not idle");
    ok(run_until(counter_reaches, m.done, 20), "200 concurrent queries all completed");
    is_int(0, m.errors, "no errors");
    is_int(0, m.wrong, "every job got its own answer");
    ok(m.npids > 1 && m.npids <= 4, "spread over the pool's connections (%d backends)", m.npids);
    ok(pg_pool_idle(pool), "idle afterwards");
}

static void params_done(void *arg, const PGresult *res, const char *err)
{
    const char **want = arg;
    int same = res != NULL && err == NULL && PQntuples(res) == 1;

    for (int i = 0; same && i < 6; i++) {
        if (want[i] == NULL)
            same = PQgetisnull(res, 0, i);
        else
            same = !PQgetisnull(res, 0, i) && strcmp(PQgetvalue(res, 0, i), want[i]) == 0;
        if (!same)
            diag("column %d differs: '%s'", i, PQgetvalue(res, 0, i));
    }
    ok(same, "parameters with quotes, backslashes, NULL, '' and UTF-8 round-trip");
    want[6] = "done";
}

static int params_finished(void *arg)
{
    return ((const char **)arg)[6] != NULL;
}

static void test_params(struct pg_pool *pool)
{
    static const char *vals[7] = {
        "it's \"quoted\"",
        "back\\slash\\",
        NULL,
        "",
        "'); DROP TABLE calls; --",
        "h\xc3\xa9llo \xe2\x82\xac",
        NULL,
    };
    char buf[64];

    /* the SQL is copied: clobbering the caller's buffer must not matter */
    snprintf(buf, sizeof(buf), "%s", "SELECT $1::text, $2, $3, $4, $5, $6");
    if (pg_pool_query(pool, buf, 6, vals, params_done, vals) != 0)
        bail("submit failed: %s", pg_pool_error(pool));
    memset(buf, 'x', sizeof(buf) - 1);
    run_until(params_finished, vals, 10);
    vals[6] = NULL;
}

static void test_errors(struct pg_pool *pool)
{
    struct outcome o;
    const char *zero[1] = { "0" };

    memset(&o, 0, sizeof(o));
    pg_pool_query(pool,
                  "DO $$ BEGIN RAISE unique_violation USING MESSAGE = 'duplicate call'; END $$", 0,
                  NULL, keep_outcome, &o);
    run_until(outcome_done, &o, 10);
    ok(o.had_res && !o.ok, "server error delivered with its PGresult");
    is_string("23505", o.sqlstate, "SQLSTATE 23505 readable from the result");
    is_string("duplicate call", o.err, "err is the server's primary message");

    memset(&o, 0, sizeof(o));
    pg_pool_query(pool, "SELECT 1 / $1::int", 1, zero, keep_outcome, &o);
    run_until(outcome_done, &o, 10);
    is_string("22012", o.sqlstate, "division by zero: 22012");

    ok(query_ok(pool, "SELECT 'still fine'", &o), "connection usable after an error");
    is_string("still fine", o.value, "answer after an error");
}

/* --- build at send time: a tiny group-commit batcher ------------------- */

struct batcher {
    struct pg_pool *pool;
    int pending[64]; /* values of requests not yet sent */
    int npending;
    int inflight[64]; /* values of the batch being executed */
    int ninflight;
    int job_queued;
    int builds;
    int max_batch;
    int answered;
    int correct;
    int arrived;
    char param[512];
    const char *values[1];
};

static int batch_build(void *arg, struct pg_query *q)
{
    struct batcher *b = arg;
    size_t o = 0;

    b->builds++;
    if (b->npending == 0)
        return 1;
    o += (size_t)snprintf(b->param + o, sizeof(b->param) - o, "{");
    for (int i = 0; i < b->npending; i++)
        o += (size_t)snprintf(b->param + o, sizeof(b->param) - o, "%s%d", i ? "," : "",
                              b->pending[i]);
    snprintf(b->param + o, sizeof(b->param) - o, "}");
    memcpy(b->inflight, b->pending, sizeof(b->pending));
    b->ninflight = b->npending;
    if (b->npending > b->max_batch)
        b->max_batch = b->npending;
    b->npending = 0;
    b->values[0] = b->param;
    q->sql = "SELECT v * 10 FROM unnest($1::int[]) WITH ORDINALITY AS u(v, n) ORDER BY n";
    q->nparams = 1;
    q->values = b->values;
    return 0;
}

static void batch_submit(struct batcher *b);

static void batch_done(void *arg, const PGresult *res, const char *err)
{
    struct batcher *b = arg;

    b->job_queued = 0;
    for (int i = 0; res != NULL && err == NULL && i < PQntuples(res) && i < b->ninflight; i++) {
        b->answered++;
        b->correct += atoi(PQgetvalue(res, i, 0)) == b->inflight[i] * 10;
    }
    b->ninflight = 0;
    if (b->npending > 0)
        batch_submit(b);
}

static void batch_submit(struct batcher *b)
{
    if (b->job_queued)
        return;
    if (pg_pool_submit(b->pool, batch_build, batch_done, b) == 0)
        b->job_queued = 1;
}

static void batch_arrive(struct ev_loop *l, ev_timer *w, int revents)
{
    struct batcher *b = w->data;

    b->pending[b->npending++] = ++b->arrived;
    batch_submit(b);
    if (b->arrived == 50)
        ev_timer_stop(l, w);
}

static int batch_finished(void *arg)
{
    struct batcher *b = arg;
    return b->answered == 50 && !b->job_queued;
}

static void skip_done(void *arg, const PGresult *res, const char *err)
{
    int *p = arg;
    *p = res == NULL && err == NULL ? 1 : 2;
}

static int skip_build(void *arg, struct pg_query *q)
{
    return 1;
}

static int int_set(void *arg)
{
    return *(int *)arg != 0;
}

static void test_batching(void)
{
    struct pg_pool *pool = make_pool(conninfo, 1, 5, 30);
    static struct batcher b;
    struct outcome sleep;
    ev_timer arrivals;
    int skipped = 0;

    memset(&b, 0, sizeof(b));
    b.pool = pool;
    run_until(pool_up, pool, 10);
    memset(&sleep, 0, sizeof(sleep));
    pg_pool_query(pool, "SELECT pg_sleep(0.3)", 0, NULL, keep_outcome, &sleep);
    /* 50 requests trickle in, one per 2 ms, while the only connection sleeps */
    ev_timer_init(&arrivals, batch_arrive, 0.002, 0.002);
    arrivals.data = &b;
    ev_timer_start(loop, &arrivals);
    ok(run_until(batch_finished, &b, 10), "all 50 batched requests answered");
    ev_timer_stop(loop, &arrivals);
    is_int(50, b.correct, "each request got its own row back");
    is_int(1, b.builds, "build ran once, when the connection came free");
    is_int(50, b.max_batch, "the build callback saw all 50 requests together");
    ok(sleep.ok, "the blocking job finished first");

    pg_pool_submit(pool, skip_build, skip_done, &skipped);
    run_until(int_set, &skipped, 5);
    is_int(1, skipped, "build declining: done gets res NULL and err NULL");
    pg_pool_free(pool);
}

/* --- timeouts ------------------------------------------------------------ */

static void test_queue_timeout(void)
{
    struct pg_pool *pool = make_pool(conninfo, 1, 0.3, 30);
    struct outcome slow, waiting;
    double t0;

    run_until(pool_up, pool, 10);
    memset(&slow, 0, sizeof(slow));
    memset(&waiting, 0, sizeof(waiting));
    pg_pool_query(pool, "SELECT pg_sleep(1)", 0, NULL, keep_outcome, &slow);
    pg_pool_query(pool, "SELECT 1", 0, NULL, keep_outcome, &waiting);
    t0 = ev_time();
    run_until(outcome_done, &waiting, 5);
    ok(!waiting.had_res && strstr(waiting.err, "timed out") != NULL,
       "a job that waits longer than queue_timeout fails: %s", waiting.err);
    ok(waiting.at - t0 < 0.8, "after about queue_timeout (%.2f s)", waiting.at - t0);
    run_until(outcome_done, &slow, 5);
    ok(slow.ok, "the running job is not affected");
    pg_pool_free(pool);
}

static void test_query_timeout(void)
{
    struct pg_pool *pool = make_pool(conninfo, 1, 5, 0.3);
    struct outcome o;
    double t0;

    run_until(pool_up, pool, 10);
    memset(&o, 0, sizeof(o));
    t0 = ev_time();
    pg_pool_query(pool, "SELECT pg_sleep(3)", 0, NULL, keep_outcome, &o);
    run_until(outcome_done, &o, 5);
    ok(!o.had_res && strstr(o.err, "timed out") != NULL, "query_timeout fails the job: %s", o.err);
    ok(o.at - t0 < 1.0, "after about query_timeout (%.2f s)", o.at - t0);
    ok(run_until(pool_up, pool, 10), "the connection comes back");
    ok(query_ok(pool, "SELECT 42", &o), "and serves again");
    pg_pool_free(pool);
}

/* --- connection loss ----------------------------------------------------- */

static int terminate_backends(const char *appname)
{
    const char *v[1] = { appname };
    PGconn *pg = PQconnectdb(conninfo);
    PGresult *r;
    int n = -1;

    if (PQstatus(pg) == CONNECTION_OK) {
        r = PQexecParams(pg,
                         "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE application_name = $1",
                         1, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            n = atoi(PQgetvalue(r, 0, 0));
        else
            diag("terminate: %s", PQresultErrorMessage(r));
        PQclear(r);
    } else {
        diag("terminate: %s", PQerrorMessage(pg));
    }
    PQfinish(pg);
    return n;
}

struct reconnects {
    struct pg_pool *pool;
    unsigned long want;
};

static int reconnected(void *arg)
{
    struct reconnects *r = arg;
    struct pg_pool_stats st;

    pg_pool_stats(r->pool, &st);
    return st.connects >= r->want && st.ready == 2;
}

static int sleeping(void *arg)
{
    struct pg_pool_stats st;
    pg_pool_stats(arg, &st);
    return st.busy == 1;
}

static void test_connection_loss(void)
{
    char appname[64];
    char *ci;
    struct pg_pool *pool;
    struct pg_pool_stats before, after;
    struct reconnects rec;
    struct outcome o, again;

    snprintf(appname, sizeof(appname), "pgpool_test_%d", (int)getpid());
    ci = conninfo_with_appname(appname);
    pool = make_pool(ci, 2, 5, 30);
    ok(run_until(pool_up, pool, 10), "pool with application_name up");
    memset(&o, 0, sizeof(o));
    pg_pool_query(pool, "SELECT pg_sleep(10)", 0, NULL, keep_outcome, &o);
    run_until(sleeping, pool, 5);
    pg_pool_stats(pool, &before);
    is_int(2, terminate_backends(appname), "terminated the pool's two backends");
    ok(run_until(outcome_done, &o, 5), "the in-flight job completes");
    ok(!o.had_res && o.err[0] != '\0', "with an error and no result: %s", o.err);
    rec.pool = pool;
    rec.want = before.connects + 2;
    ok(run_until(reconnected, &rec, 10), "both connections reconnect");
    memset(&again, 0, sizeof(again));
    ok(query_ok(pool, "SELECT current_setting('application_name')", &again),
       "queries work after reconnecting");
    is_string(appname, again.value, "on a fresh connection of this pool");
    pg_pool_stats(pool, &after);
    ok(after.connects > before.connects, "new connections were made (%lu -> %lu)", before.connects,
       after.connects);

    /* pg_pool_free with work outstanding: callers still hear back */
    memset(&o, 0, sizeof(o));
    pg_pool_query(pool, "SELECT pg_sleep(10)", 0, NULL, keep_outcome, &o);
    run_until(sleeping, pool, 5);
    ok(!pg_pool_idle(pool), "not idle with a job in flight");
    pg_pool_free(pool);
    ok(o.done == 1 && strcmp(o.err, "pool closed") == 0, "pg_pool_free fails it: %s", o.err);
    free(ci);
}

/* A backend terminated while idle: its FATAL is already in our socket when
 * the next job comes.  The job must go to a fresh connection, not fail. */
static void test_idle_dead(void)
{
    char appname[64];
    char *ci;
    struct pg_pool *pool;
    struct pg_pool_stats before, after;
    struct outcome o;

    snprintf(appname, sizeof(appname), "pgpool_idle_%d", (int)getpid());
    ci = conninfo_with_appname(appname);
    pool = make_pool(ci, 1, 5, 30);
    run_until(pool_up, pool, 10);
    pg_pool_stats(pool, &before);
    is_int(1, terminate_backends(appname), "terminated the idle backend");
    usleep(300 * 1000); /* the loop does not run: the pool cannot notice */
    ok(pg_pool_is_up(pool), "the pool does not know yet");
    ok(query_ok(pool, "SELECT 'fresh'", &o), "a job submitted now succeeds: %s", o.err);
    pg_pool_stats(pool, &after);
    is_int(before.connects + 1, after.connects, "on a new connection");
    is_int(0, after.failed_jobs, "no job failed");
    pg_pool_free(pool);
    free(ci);
}

/* --- unreachable server ---------------------------------------------------- */

static int closed_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        bail("cannot find a free port");
    port = ntohs(sa.sin_port);
    close(fd); /* bound, never listened: connecting is refused */
    return port;
}

static void test_unreachable(void)
{
    char ci[128];
    struct pg_pool *pool;
    struct outcome early;
    double t0 = ev_time();
    int rc;

    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=x user=x", closed_port());
    pool = make_pool(ci, 4, 5, 30);
    ok(!pg_pool_is_up(pool), "closed port: not up");
    memset(&early, 0, sizeof(early));
    rc = pg_pool_query(pool, "SELECT 1", 0, NULL, keep_outcome, &early);
    is_int(0, rc, "a job submitted while still connecting is queued");
    ok(run_until(pool_down, pool, 3), "the pool goes DOWN");
    ok(run_until(outcome_done, &early, 3), "the queued job fails");
    ok(early.at - t0 < 1.0 && strstr(early.err, "unavailable") != NULL, "fast (%.3f s): %s",
       early.at - t0, early.err);
    t0 = ev_time();
    rc = pg_pool_query(pool, "SELECT 1", 0, NULL, keep_outcome, &early);
    ok(rc == -1 && ev_time() - t0 < 0.01, "a new job is refused at once");
    like(pg_pool_error(pool), "PostgreSQL unavailable", "pg_pool_error says why");
    like(pg_pool_error(pool), "refused", "with libpq's reason");
    ok(!pg_pool_is_up(pool) && pg_pool_idle(pool), "is_up false, idle true");
    pg_pool_free(pool);
}

/* --- server stop and start (when the wrapper says how) --------------------- */

/* Stop or start the server ("stop"/"start"); 0 when it was done. */
static int server_ctl(const char *what)
{
    const char *ctl = getenv("CALLORCH_TEST_PG_CTL");
    const char *cmd =
        getenv(strcmp(what, "stop") == 0 ? "CALLORCH_TEST_PG_STOP" : "CALLORCH_TEST_PG_START");
    char line[64];

    if (ctl != NULL && strcmp(ctl, "stdio") == 0) {
        printf("# pgctl %s\n", what);
        fflush(stdout);
        return fgets(line, sizeof(line), stdin) != NULL ? 0 : -1;
    }
    return cmd != NULL && system(cmd) == 0 ? 0 : -1;
}

static int can_restart(void)
{
    const char *ctl = getenv("CALLORCH_TEST_PG_CTL");

    return (ctl != NULL && strcmp(ctl, "stdio") == 0) ||
           (getenv("CALLORCH_TEST_PG_STOP") != NULL && getenv("CALLORCH_TEST_PG_START") != NULL);
}

static void test_restart(void)
{
    struct pg_pool *pool = make_pool(conninfo, 2, 5, 30);
    struct outcome o;
    int rc;

    ok(run_until(pool_up, pool, 10), "restart: pool up");
    ok(server_ctl("stop") == 0, "server stopped");
    ok(run_until(pool_down, pool, 15), "pool DOWN");
    memset(&o, 0, sizeof(o));
    rc = pg_pool_query(pool, "SELECT 1", 0, NULL, keep_outcome, &o);
    ok(rc == -1 && !pg_pool_is_up(pool), "jobs are refused while down");
    ok(server_ctl("start") == 0, "server started");
    ok(run_until(pool_up, pool, 15), "pool UP again (reconnect with backoff)");
    ok(query_ok(pool, "SELECT 'back'", &o), "and serves");
    pg_pool_free(pool);
}

int main(void)
{
    struct pg_pool *pool;
    struct outcome o;

    conninfo = getenv("CALLORCH_TEST_PG");
    if (conninfo == NULL || *conninfo == '\0') {
        printf("1..0 # SKIP no CALLORCH_TEST_PG\n");
        return 0;
    }
    co_log_set_level(getenv("TEST_VERBOSE") ? CO_LOG_DEBUG : CO_LOG_ERROR);
    loop = ev_default_loop(0);

    pool = make_pool(conninfo, 4, 5, 30);
    is_int(PG_POOL_CONNECTING, pg_pool_state(pool), "new pool is CONNECTING");
    ok(run_until(pool_up, pool, 10), "pool comes UP: %s", pg_pool_error(pool));
    ok(run_until(pool_all_ready, pool, 10), "all four connections ready");
    ok(query_ok(pool, "SELECT 1", &o) && strcmp(o.value, "1") == 0, "SELECT 1");
    test_many(pool);
    test_params(pool);
    test_errors(pool);
    pg_pool_free(pool);

    test_batching();
    test_queue_timeout();
    test_query_timeout();
    test_connection_loss();
    test_idle_dead();
    test_unreachable();
    if (can_restart())
        test_restart();
    else
        diag("nobody to stop and start the server: restart case not run");
    return done_testing();
}
