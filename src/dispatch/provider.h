/*
 * provider.h — the client of the AI voice provider (DESIGN.md section 5).
 *
 * Owns: the "start a call" request (URL, Bearer key, JSON body with the
 * webhook URL and the "<call id>:<attempt>" reference), its timeout, and the
 * classification of what came back into the three outcomes of DESIGN.md
 * section 3 step 3: started (2xx with a callId), retry (connection error,
 * timeout, 5xx, 429 — with Retry-After honoured), rejected (any other 4xx,
 * or a 2xx without a usable callId).  Requests go through curl_ev, many in
 * flight at once.
 */
#ifndef CO_PROVIDER_H
#define CO_PROVIDER_H

#include <ev.h>

#include "util/config.h"

struct provider;

enum provider_outcome { PROVIDER_STARTED, PROVIDER_RETRY, PROVIDER_REJECTED };

struct provider_result {
    enum provider_outcome outcome;
    const char *call_id;         /* the provider's callId when STARTED */
    const char *error;           /* what happened, for lastError, when not STARTED */
    double retry_after;          /* s, from a 429/503 Retry-After; 0 when none */
    long http_status;            /* the provider's status; 0 when no answer */
};

struct provider_call {
    const char *call_id;
    int attempt;
    const char *to;
    const char *script_id;
    const char *metadata;        /* compact JSON object text */
};

typedef void (*provider_done_fn)(void *arg, const struct provider_result *r);

struct provider *provider_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                              size_t errlen);

/* Start CALL at the provider; DONE runs once, from the loop.  Returns -1
 * when the request could not be set up (DONE is not called). */
int provider_start(struct provider *p, const struct provider_call *call, provider_done_fn done,
                   void *arg);

/* Fails what is in flight (their DONE runs with a RETRY outcome). */
void provider_free(struct provider *p);

#endif
