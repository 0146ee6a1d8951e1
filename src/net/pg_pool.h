/*
 * pg_pool.h — a non-blocking PostgreSQL connection pool on a libev loop.
 *
 * Owns: N libpq connections of one child process, their (re)connection with
 * exponential backoff, and a FIFO queue of jobs waiting for a free
 * connection.  Nothing here blocks the loop: connecting, sending and reading
 * all go through PQconnectPoll / PQflush / PQconsumeInput on ev_io watchers.
 *
 * A job is ONE SQL statement with text-format parameters ($1, $2 …; values
 * are never spliced into SQL).  Work that must be atomic is written as one
 * statement with CTEs (WITH ins AS (INSERT …) UPDATE …), which PostgreSQL
 * runs as one implicit transaction.  There is no BEGIN … COMMIT across jobs:
 * the next job may run on another connection.
 *
 * A pool belongs to one process and one loop: create it in the child that
 * uses it, after fork() (libpq connections cannot be shared across fork).
 *
 * Rules for callers:
 *  - pg_pool_query() / pg_pool_submit() return 0 when the job was queued;
 *    then DONE is called exactly once, later, from the loop (never from
 *    inside the submit call).  They return -1 when the job was refused at
 *    once (the pool is down, the queue is full, the pool is closing): DONE
 *    is not called; pg_pool_error() says why.  This is what lets the API
 *    answer 503 + Retry-After at once instead of waiting.
 *  - DONE gets res != NULL for every answer of the server, successful or
 *    not: err == NULL on success (PGRES_COMMAND_OK / PGRES_TUPLES_OK), and
 *    err = the server's message on an SQL error, with the SQLSTATE in
 *    PQresultErrorField(res, PG_DIAG_SQLSTATE) (e.g. "23505" for a unique
 *    violation).  res == NULL with err != NULL when no answer came: the
 *    connection was lost (the statement may or may not have committed), the
 *    job waited longer than queue_timeout for a connection, the query ran
 *    longer than query_timeout, or the pool was freed.  The pool PQclear()s
 *    res after DONE returns: copy what you need.
 *  - DONE (and BUILD) may submit new jobs; they must not call pg_pool_free().
 *    ERR is only valid during the callback.
 *
 * Connection loss: a job whose connection dies in flight fails (res ==
 * NULL); it is never resent, since it may have committed.  A job is not
 * sent into a connection already known to be dead: before sending, the pool
 * reads what the server sent meanwhile (a backend terminated while idle
 * says FATAL and closes), and such a job just waits for another connection.
 * Connections reconnect after backoff_min, doubling up to backoff_max,
 * jittered.  libpq resolves host names synchronously while connecting: use
 * numeric addresses (or hostaddr=) where DNS may be slow.
 */
#ifndef CO_PG_POOL_H
#define CO_PG_POOL_H

#include <stddef.h>

#include <ev.h>
#include <libpq-fe.h>

struct pg_pool;

struct pg_pool_opts {
    int size;               /* connections; default 4 */
    double queue_timeout;   /* s a job may wait for a connection; default 5 */
    double connect_timeout; /* s one connection attempt may take; default 5 */
    double query_timeout;   /* s from send to answer, then the connection is
                               dropped and the job fails; 0 = none; default 30 */
    double backoff_min;     /* s before the first reconnect; default 0.1 */
    double backoff_max;     /* s cap of the doubling; default 5 */
    int max_queue;          /* queued jobs before submit refuses; default 10000 */
    const char *name;       /* shown as pool=… in logs; default "pg" */
};

/* The statement a BUILD callback fills in.  The pointers must stay valid
 * until the job's DONE callback runs (the pool reads them only when sending,
 * right after BUILD returns). */
struct pg_query {
    const char *sql;
    int nparams;
    const char *const *values; /* text format; a NULL entry is SQL NULL */
};

typedef void (*pg_pool_done_cb)(void *arg, const PGresult *res, const char *err);

/*
 * Called when a connection is free for the job, right before sending: the
 * caller fills Q from whatever accumulated meanwhile, so that many requests
 * that arrived while the connections were busy go out as one statement
 * (group commit).  Return 0 to send Q; return non-zero when there is nothing
 * to send any more: then DONE is called with res == NULL and err == NULL.
 */
typedef int (*pg_pool_build_cb)(void *arg, struct pg_query *q);

enum pg_pool_state {
    PG_POOL_CONNECTING, /* no connection ready yet, none failed: jobs wait */
    PG_POOL_UP,         /* at least one connection ready */
    PG_POOL_DOWN        /* none ready and the last attempt failed: jobs
                           are refused until a connection is back */
};

void pg_pool_opts_init(struct pg_pool_opts *opts);

/*
 * Create the pool and start connecting (in the background, on LOOP).  Fails
 * only for invalid options or a conninfo libpq cannot parse; an unreachable
 * server is not an error here (the pool keeps retrying).
 */
struct pg_pool *pg_pool_new(struct ev_loop *loop, const char *conninfo,
                            const struct pg_pool_opts *opts, char *err, size_t errlen);

/*
 * Close every connection.  Jobs still queued or in flight get DONE with
 * res == NULL and err "pool closed" first.  Not from inside a callback.
 */
void pg_pool_free(struct pg_pool *pool);

/* Queue SQL with NPARAMS text parameters.  SQL and VALUES are copied. */
int pg_pool_query(struct pg_pool *pool, const char *sql, int nparams, const char *const *values,
                  pg_pool_done_cb done, void *arg);

/* Queue a job whose statement BUILD supplies at send time (see above). */
int pg_pool_submit(struct pg_pool *pool, pg_pool_build_cb build, pg_pool_done_cb done, void *arg);

/* At least one connection is ready (for /readyz). */
int pg_pool_is_up(const struct pg_pool *pool);

enum pg_pool_state pg_pool_state(const struct pg_pool *pool);

/* Nothing queued and nothing in flight (for a graceful stop). */
int pg_pool_idle(const struct pg_pool *pool);

/* Why the last submit was refused, or the last connection error. */
const char *pg_pool_error(const struct pg_pool *pool);

/* Counts for metrics and tests. */
struct pg_pool_stats {
    int ready;                 /* connections connected (idle or busy) */
    int busy;                  /* connections with a job in flight */
    int queued;                /* jobs waiting for a connection */
    unsigned long connects;    /* successful connections since creation */
    unsigned long failed_jobs; /* jobs that got res == NULL, err != NULL */
};

void pg_pool_stats(const struct pg_pool *pool, struct pg_pool_stats *st);

#endif
