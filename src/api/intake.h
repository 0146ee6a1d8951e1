/*
 * intake.h — POST /api/v1/calls: validated calls stored with group commit.
 *
 * Owns: the create path of DESIGN.md section 3 step 1.  Requests that arrive
 * while the database connections are busy are gathered and stored with ONE
 * statement (one commit answers many requests); every 201 is sent only
 * after that commit.  Also owns the Idempotency-Key semantics: same key and
 * body → 200 with the stored call, same key and another body → 422, and
 * concurrent requests with one key create one call.
 */
#ifndef CO_INTAKE_H
#define CO_INTAKE_H

#include <stddef.h>

#include "net/http_server.h"

struct api;
struct api_hold;
struct call_input;
struct intake;
struct strbuf;

/* At most this many requests go into one statement. */
#define INTAKE_MAX_BATCH 512

/* Intake statements one http child has at the database at once.  One: the
 * requests that arrive while it commits all go into the next one, so the
 * batches are as large as the commit is long, and the child's other pool
 * connections stay free for reads, PATCHes and webhooks.  More batches in
 * flight only make smaller ones that compete for the same WAL flush:
 * bench/intake on 2 CPUs, 2 children, pool_size 4: 7 900 req/s, p99 27 ms
 * with up to 4 batches per child in flight; 10 700 req/s, p99 16.5 ms with
 * one (14 rows per commit instead of 7). */
#define INTAKE_MAX_IN_FLIGHT 1

struct intake *intake_new(struct api *api, char *err, size_t errlen);
void intake_free(struct intake *in);

/* Handle a POST /api/v1/calls (route, auth and content type checked). */
void intake_create(struct intake *in, struct http_request *req);

/* Called after a call was committed: the dispatch path hooks in here to
 * publish it.  ID and TO are the call's; may be NULL (nothing to do). */
typedef void (*intake_created_fn)(void *arg, const char *id, const char *to);
void intake_on_created(struct intake *in, intake_created_fn fn, void *arg);

/* Append call C (validated, zones and hold H decided) to B as one input
 * row of intake_calls() / campaign_insert_calls(), without the closing
 * brace (the caller adds its own members): ORD, ID (NULL: the database
 * makes one) and the call's columns. */
void intake_call_row(struct strbuf *b, int ord, const char *id, const struct call_input *c,
                     const struct api_hold *h);

#endif
