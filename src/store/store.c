/*
 * store.c — the shared part of the data-access module (store.h,
 * store_job.h).
 *
 * Owns: running one statement through the pool and turning its answer into
 * a store error for the typed callbacks of the other store files.
 */
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_job.h"
#include "util/strbuf.h"

struct store_job {
    store_decode_fn decode; /* NULL: ROWS decodes */
    const struct store_rows *rows;
    store_cb cb;
    void *ctx;
};

int store_unavailable(const struct store_err *e)
{
    const char *state = e->sqlstate;
    if (!e->answered)
        return 1;
    return state != NULL && (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
                             strncmp(state, "53", 2) == 0);
}

const char *store_int(struct store_num *b, long long v)
{
    snprintf(b->s, sizeof(b->s), "%lld", v);
    return b->s;
}

const struct store_err *store_err_from(struct store_err *e, const PGresult *res, const char *err)
{
    if (err == NULL && res != NULL)
        return NULL;
    e->msg = err != NULL ? err : "no answer";
    e->answered = res != NULL;
    e->sqlstate = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return e;
}

static void decode_rows(const struct store_rows *how, const PGresult *res,
                        const struct store_err *e, store_cb cb, void *ctx)
{
    static const struct store_err oom = { .msg = "out of memory", .answered = true };
    char *rows = NULL;
    int n = 0;
    if (e == NULL) {
        n = PQntuples(res);
        if ((rows = calloc((size_t)n + 1, how->size)) == NULL) {
            e = &oom;
            n = 0;
        }
        for (int r = 0; r < n; r++)
            how->row(res, r, rows + (size_t)r * how->size);
    }
    how->deliver(cb, ctx, e, rows, n);
    free(rows);
}

static void job_done(void *arg, const PGresult *res, const char *err)
{
    struct store_job *j = arg;
    struct store_err e;
    const struct store_err *ep = store_err_from(&e, res, err);
    if (j->decode != NULL)
        j->decode(ep ? NULL : res, ep, j->cb, j->ctx);
    else
        decode_rows(j->rows, ep ? NULL : res, ep, j->cb, j->ctx);
    free(j);
}

static int queue(struct pg_pool *pg, const char *sql, int nparams, const char *const *values,
                 const struct store_job *job)
{
    struct store_job *j = malloc(sizeof(*j));
    if (j == NULL)
        return -1;
    *j = *job;
    if (pg_pool_query(pg, sql, nparams, values, job_done, j) < 0) {
        free(j);
        return -1;
    }
    return 0;
}

int store_query(struct pg_pool *pg, const char *sql, int nparams, const char *const *values,
                store_decode_fn decode, store_cb cb, void *ctx)
{
    struct store_job j = { .decode = decode, .cb = cb, .ctx = ctx };
    return queue(pg, sql, nparams, values, &j);
}

int store_query_rows(struct pg_pool *pg, const char *sql, int nparams, const char *const *values,
                     const struct store_rows *how, store_cb cb, void *ctx)
{
    struct store_job j = { .rows = how, .cb = cb, .ctx = ctx };
    return queue(pg, sql, nparams, values, &j);
}

void store_decode_none(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    ((store_done_fn)cb)(ctx, e);
}

/* S as a quoted element of an array literal; NULL as NULL. */
void store_array_element(struct strbuf *b, const char *s)
{
    if (s == NULL) {
        strbuf_adds(b, "NULL");
        return;
    }
    strbuf_addc(b, '"');
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            strbuf_addc(b, '\\');
        strbuf_addc(b, *s);
    }
    strbuf_addc(b, '"');
}
