/*
 * store_job.h — the plumbing the store's files share (private to src/store/).
 *
 * Owns: one queued statement with its decoder, the caller's typed callback
 * and CTX; turning the pool's (res, err) into a struct store_err.  Each
 * store file writes only its SQL, its parameters and its decoders.
 */
#ifndef CO_STORE_JOB_H
#define CO_STORE_JOB_H

#include <libpq-fe.h>

#include "net/pg_pool.h"
#include "store/store.h"

/* Any callback type, stored generically and cast back by its decoder. */
typedef void (*store_cb)(void);

/* Decode RES (NULL when E != NULL) and call CB with CTX, exactly once. */
typedef void (*store_decode_fn)(const PGresult *res, const struct store_err *e, store_cb cb,
                                void *ctx);

/* Queue SQL; see store.h for the 0 / -1 rule. */
int store_query(struct pg_pool *pg, const char *sql, int nparams, const char *const *values,
                store_decode_fn decode, store_cb cb, void *ctx);

/* The pool's answer as a store error: NULL when it succeeded. */
const struct store_err *store_err_from(struct store_err *e, const PGresult *res,
                                       const char *err);

/* Decoder for statements whose rows nobody reads: CB is a store_done_fn. */
void store_decode_none(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx);

#endif
