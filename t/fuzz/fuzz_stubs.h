/*
 * fuzz_stubs.h — the fake PostgreSQL pool, Redis client and Kafka producer
 * of fuzz_stubs.c, for t/fuzz/fuzz_http.c only.
 */
#ifndef CO_FUZZ_STUBS_H
#define CO_FUZZ_STUBS_H

#include <ev.h>

/* Answer jobs on LOOP (call once, before any job is submitted). */
void fuzz_stubs_init(struct ev_loop *loop);

/* 1 when no job waits for its answer. */
int fuzz_stubs_idle(void);

/* Forget the Idempotency-Keys stored so far (one input = one database). */
void fuzz_stubs_reset(void);

#endif
