/*
 * fuzz_stubs.c — in-process stand-ins for PostgreSQL, Redis and Kafka, so
 * that t/fuzz/fuzz_http.c can run the real API code (api.c, api_calls.c,
 * api_ops.c, api_webhook.c, intake.c) with no server behind it.
 *
 * Owns: a fake pg_pool, redis_slots and kafka_producer with the same
 * contract as the real ones (pg_pool.h, dispatch/slots.h, kafka_producer.h):
 * a job that is accepted is answered exactly once, later, from the loop
 * (never inside the submit call), so the answers reach http_server.c
 * asynchronously, as in production.  What they answer:
 *  - pg_pool_query(): no answer from the server (res NULL) — the API's 503;
 *  - pg_pool_submit() (the intake's group commit): BUILD is called, its
 *    statement checked (the $1 JSON must parse: it was assembled by hand),
 *    and every row answered as PostgreSQL would — created, or, for an
 *    Idempotency-Key already used in this input, replayed (same body hash)
 *    or refused (another hash);
 *  - redis_slots_count(): 3 slots in use; redis_slots_release(): refused,
 *    redis_slots_release_retried(): dropped;
 *  - kafka_producer_send(): accepted and forgotten.
 * fuzz_stubs_reset() forgets the keys between inputs; fuzz_stubs_idle()
 * tells the harness that nothing is waiting for an answer.
 *
 * Only for the fuzz targets: never linked into the daemon or the tests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "fuzz_stubs.h"
#include "net/kafka_producer.h"
#include "net/pg_pool.h"
#include "dispatch/slots.h"

/* One job of the fake pool or the fake Redis client, answered on the loop. */
struct job {
    struct job *next;
    pg_pool_build_cb build;      /* pg_pool_submit */
    pg_pool_done_cb done;        /* pg_pool_query, pg_pool_submit */
    slot_done_cb slot_done;      /* redis_slots_count */
    void *arg;
};

/* An Idempotency-Key stored by an earlier row of this input. */
struct key_row {
    struct key_row *next;
    char *key;
    char *hash;
    char *id;                    /* the call it created */
};

static struct {
    struct ev_loop *loop;
    ev_timer tick;               /* answers the queued jobs */
    struct job *head, **tail;
    int n_jobs;
    struct key_row *keys;
} fake = { .tail = &fake.head };

struct pg_pool {
    int unused;
};
struct redis_slots {
    int unused;
};
struct kafka_producer {
    int unused;
};

/* Abort with a message: a broken contract between the API and the pool. */
static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_stubs: %s\n", what);
    abort();
}

/* ------------------------------------------------------------ the queue -- */

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void queue_job(struct job *j)
{
    j->next = NULL;
    *fake.tail = j;
    fake.tail = &j->next;
    fake.n_jobs++;
    if (!ev_is_active(&fake.tick)) {
        ev_timer_set(&fake.tick, 0., 0.);
        ev_timer_start(fake.loop, &fake.tick);
    }
}

static struct job *new_job(void)
{
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        fuzz_fail("out of memory");
    return j;
}

/* The outcome of an intake row: 'C' created, 'R' replayed (*ID becomes the
 * stored call's), 'X' key used with another body. */
static char row_kind(const char *key, const char *hash, const char **id)
{
    if (key == NULL)
        return 'C';
    for (struct key_row *k = fake.keys; k != NULL; k = k->next) {
        if (strcmp(k->key, key) == 0) {
            *id = k->id;
            return strcmp(k->hash, hash) == 0 ? 'R' : 'X';
        }
    }
    struct key_row *k = calloc(1, sizeof(*k));
    if (k == NULL || (k->key = strdup(key)) == NULL || (k->hash = strdup(hash)) == NULL ||
        (k->id = strdup(*id)) == NULL)
        fuzz_fail("out of memory");
    k->next = fake.keys;
    fake.keys = k;
    return 'C';
}

/* Answer the intake statement Q as PostgreSQL would: one row per input row. */
static PGresult *intake_result(const struct pg_query *q)
{
    static PGresAttDesc cols[3] = {
        { .name = "ord", .typid = 23, .typlen = 4, .atttypmod = -1 },
        { .name = "?column?", .typid = 25, .typlen = -1, .atttypmod = -1 },
        { .name = "body", .typid = 114, .typlen = -1, .atttypmod = -1 },
    };
    json_error_t jerr;
    json_t *rows, *row;
    size_t i;

    if (q->sql == NULL || q->nparams != 2 || q->values == NULL || q->values[0] == NULL ||
        q->values[1] == NULL)
        fuzz_fail("intake statement without its two parameters");
    rows = json_loads(q->values[0], JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_array(rows) || json_array_size(rows) == 0) {
        fprintf(stderr, "fuzz_stubs: intake $1 is not a JSON array: %s\n%s\n", jerr.text,
                q->values[0]);
        abort();
    }
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    if (res == NULL || !PQsetResultAttrs(res, 3, cols))
        fuzz_fail("out of memory");
    json_array_foreach(rows, i, row) {
        json_t *ord = json_object_get(row, "ord"), *id = json_object_get(row, "id");
        const char *key = json_string_value(json_object_get(row, "idem_key"));
        const char *hash = json_string_value(json_object_get(row, "req_hash"));
        const char *call_id = json_string_value(id);
        char ords[16], kind[2] = { 0 }, body[96];

        if (!json_is_integer(ord) || !json_is_string(id) || hash == NULL ||
            strlen(hash) != 64 || (json_object_get(row, "idem_key") != NULL && key == NULL))
            fuzz_fail("intake row without ord, id, req_hash or with a bad idem_key");
        snprintf(ords, sizeof(ords), "%lld", (long long)json_integer_value(ord));
        kind[0] = row_kind(key, hash, &call_id);
        snprintf(body, sizeof(body), "{\"id\":\"%.40s\",\"status\":\"PENDING\"}", call_id);
        if (!PQsetvalue(res, (int)i, 0, ords, (int)strlen(ords)) ||
            !PQsetvalue(res, (int)i, 1, kind, 1) ||
            !PQsetvalue(res, (int)i, 2, body, (int)strlen(body)))
            fuzz_fail("out of memory");
    }
    json_decref(rows);
    return res;
}

/* Answer the jobs queued so far (later ones wait for the next tick). */
static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct job *list = fake.head;
    (void)loop;
    (void)w;
    (void)revents;

    fake.head = NULL;
    fake.tail = &fake.head;
    while (list != NULL) {
        struct job *j = list;
        list = j->next;
        fake.n_jobs--;
        if (j->slot_done != NULL) {
            j->slot_done(j->arg, 3, NULL);
        } else if (j->build != NULL) {
            struct pg_query q = { 0 };
            if (j->build(j->arg, &q) != 0) {
                j->done(j->arg, NULL, NULL);
            } else {
                PGresult *res = intake_result(&q);
                j->done(j->arg, res, NULL);
                PQclear(res);
            }
        } else {
            j->done(j->arg, NULL, "fuzz: no database behind this pool");
        }
        free(j);
    }
}

void fuzz_stubs_init(struct ev_loop *loop)
{
    fake.loop = loop;
    ev_init(&fake.tick, tick_cb);
}

int fuzz_stubs_idle(void)
{
    return fake.n_jobs == 0;
}

void fuzz_stubs_reset(void)
{
    while (fake.keys != NULL) {
        struct key_row *k = fake.keys;
        fake.keys = k->next;
        free(k->key);
        free(k->hash);
        free(k->id);
        free(k);
    }
}

/* -------------------------------------------------------------- pg_pool -- */

void pg_pool_opts_init(struct pg_pool_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
}

struct pg_pool *pg_pool_new(struct ev_loop *loop, const char *conninfo,
                            const struct pg_pool_opts *opts, char *err, size_t errlen)
{
    struct pg_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        snprintf(err, errlen, "out of memory");
    return p;
}

void pg_pool_free(struct pg_pool *pool)
{
    free(pool);
}

int pg_pool_query(struct pg_pool *pool, const char *sql, int nparams, const char *const *values,
                  pg_pool_done_cb done, void *arg)
{
    size_t total = strlen(sql);
    /* the real pool copies SQL and VALUES now: read them all, for ASan */
    for (int i = 0; i < nparams; i++)
        total += values[i] != NULL ? strlen(values[i]) : 0;
    (void)total;
    struct job *j = new_job();
    j->done = done;
    j->arg = arg;
    queue_job(j);
    return 0;
}

int pg_pool_submit(struct pg_pool *pool, pg_pool_build_cb build, pg_pool_done_cb done, void *arg)
{
    struct job *j = new_job();
    j->build = build;
    j->done = done;
    j->arg = arg;
    queue_job(j);
    return 0;
}

int pg_pool_is_up(const struct pg_pool *pool)
{
    return 1;
}

enum pg_pool_state pg_pool_state(const struct pg_pool *pool)
{
    return PG_POOL_UP;
}

int pg_pool_idle(const struct pg_pool *pool)
{
    return fake.n_jobs == 0;
}

/* ---------------------------------------------------------- redis_slots -- */

void redis_opts_init(struct redis_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
}

struct redis_slots *redis_slots_new(struct ev_loop *loop, const struct co_config *cfg,
                                    const struct redis_opts *opts, char *err,
                                    size_t errlen)
{
    struct redis_slots *rs = calloc(1, sizeof(*rs));
    if (rs == NULL)
        snprintf(err, errlen, "out of memory");
    return rs;
}

void redis_slots_free(struct redis_slots *rs)
{
    free(rs);
}

int redis_slots_count(struct redis_slots *rs, slot_done_cb cb, void *arg)
{
    struct job *j = new_job();
    j->slot_done = cb;
    j->arg = arg;
    queue_job(j);
    return 0;
}

int redis_slots_release(struct redis_slots *rs, const char *call_id, int attempt,
                        const char *phone, slot_done_cb cb, void *arg)
{
    return -1;
}

void redis_slots_release_retried(struct redis_slots *rs, const char *call_id, int attempt,
                                 const char *phone, const char *why)
{
}

int redis_slots_is_up(const struct redis_slots *rs)
{
    return 1;
}

/* ------------------------------------------------------- kafka_producer -- */

struct kafka_producer *kafka_producer_new(struct ev_loop *loop, const struct co_config *cfg,
                                          char *err, size_t errlen)
{
    struct kafka_producer *kp = calloc(1, sizeof(*kp));
    if (kp == NULL)
        snprintf(err, errlen, "out of memory");
    return kp;
}

void kafka_producer_free(struct kafka_producer *kp)
{
    free(kp);
}

int kafka_producer_send(struct kafka_producer *kp, const char *key, const char *value,
                        size_t len, kafka_delivery_fn done, void *arg)
{
    if (key == NULL || value == NULL || len == 0 || strlen(value) != len)
        fuzz_fail("kafka_producer_send: bad message");
    return 0;
}

int kafka_producer_pending(const struct kafka_producer *kp)
{
    return 0;
}

int kafka_call_message(char *buf, size_t size, const char *call_id, int attempt)
{
    int n = snprintf(buf, size, "{\"id\":\"%s\",\"attempt\":%d}", call_id, attempt);
    return n < 0 || (size_t)n >= size ? -1 : n;
}
