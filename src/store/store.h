/*
 * store.h — what every data-access function of src/store/ shares.
 *
 * Owns: the error a store callback gets (no answer at all, or the server's
 * SQL error with its SQLSTATE), the rule for which SQL errors mean "the
 * database is unavailable", and the text form of numeric parameters.
 *
 * The store is the only place in src/ (with migrate.c) that holds SQL text
 * or reads result rows.  Each function sends one statement through a
 * pg_pool (pg_pool.h) and hands typed results to a callback with the
 * caller's CTX.  The rule of pg_pool carries through: a function returns 0
 * when the statement was queued, and then its callback runs exactly once,
 * later, from the loop; it returns -1 when the pool refused the job at once
 * (pg_pool_error() says why) or memory ran out, and then the callback
 * never runs.  Whatever
 * a callback is handed (strings, rows) lives only during the callback.
 */
#ifndef CO_STORE_H
#define CO_STORE_H

#include <stdbool.h>

/* Why a statement failed; NULL is passed instead when it succeeded. */
struct store_err {
    const char *msg;      /* the pool's or the server's message */
    bool answered;        /* false: no answer came (connection lost,
                             queue or query timeout, pool closed); the
                             statement may or may not have committed */
    const char *sqlstate; /* when answered: e.g. "23505"; may be NULL */
};

/* 1 when E means the database is unavailable rather than a bug: no answer,
 * or a connection exception, operator intervention, insufficient resources. */
int store_unavailable(const struct store_err *e);

/* The callback of a statement that hands back nothing but success. */
typedef void (*store_done_fn)(void *ctx, const struct store_err *e);

/* A numeric parameter's text; the buffer lives as long as the statement's
 * other parameters (the pool copies them when queuing). */
struct store_num {
    char s[24];
};
const char *store_int(struct store_num *b, long long v);

#endif
