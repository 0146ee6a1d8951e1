/*
 * store_job.h — the plumbing the store's files share (private to src/store/).
 *
 * Owns: one queued statement with its decoder, the caller's typed callback
 * and CTX; turning the pool's (res, err) into a struct store_err; decoding
 * rows into a typed array.  Each store file writes only its SQL, its
 * parameters and how one row reads.
 */
#ifndef CO_STORE_JOB_H
#define CO_STORE_JOB_H

#include <stddef.h>

#include <libpq-fe.h>

#include "net/pg_pool.h"
#include "store/store.h"

struct strbuf;

/* Any callback type, stored generically and cast back by its decoder. */
typedef void (*store_cb)(void);

/* Decode RES (NULL when E != NULL) and call CB with CTX, exactly once. */
typedef void (*store_decode_fn)(const PGresult *res, const struct store_err *e, store_cb cb,
                                void *ctx);

/* Queue SQL; see store.h for the 0 / -1 rule. */
int store_query(struct pg_pool *pg, const char *sql, int nparams, const char *const *values,
                store_decode_fn decode, store_cb cb, void *ctx);

/* How the rows of a statement become a typed array: ROW fills element R
 * from row R of RES; DELIVER hands the N elements (NULL when E != NULL) to
 * the typed callback CB. */
typedef void (*store_row_fn)(const PGresult *res, int r, void *out);
typedef void (*store_deliver_fn)(store_cb cb, void *ctx, const struct store_err *e,
                                 const void *rows, int n);
struct store_rows {
    size_t size; /* bytes of one element */
    store_row_fn row;
    store_deliver_fn deliver;
};

/* Queue SQL whose rows HOW decodes; see store.h for the 0 / -1 rule.  Out
 * of memory for the array reaches CB as an (answered) error. */
int store_query_rows(struct pg_pool *pg, const char *sql, int nparams, const char *const *values,
                     const struct store_rows *how, store_cb cb, void *ctx);

/* The pool's answer as a store error: NULL when it succeeded. */
const struct store_err *store_err_from(struct store_err *e, const PGresult *res, const char *err);

/* Decoder for statements whose rows nobody reads: CB is a store_done_fn. */
void store_decode_none(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx);

/* Append S to B as one quoted element of a PostgreSQL array literal
 * ("{...}"), NULL as NULL: for the text[] parameters of bulk statements. */
void store_array_element(struct strbuf *b, const char *s);

#endif
