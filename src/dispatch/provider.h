/*
 * provider.h — the client of the AI voice provider (DESIGN.md section 5).
 *
 * Owns: the "start a call" request (URL, Bearer key, JSON body with the
 * webhook URL and the "<call id>:<attempt>" reference, the Idempotency-Key
 * header carrying the same text), its timeout, and the classification of
 * what came back into the outcomes of DESIGN.md sections 3 and 5: started
 * (2xx with a valid callId), retry (no connection made, 5xx, 429 — with
 * Retry-After honoured), rejected (any other 4xx), unknown (a timeout or a
 * lost connection after the request may have been sent, a 2xx without a
 * valid callId or not JSON, an answer not read in full).  Also the status
 * lookup ([provider] status_url) and the validation of its answer, and the
 * rule for a provider callId (validate_call_id(), api/validate.h).  Requests go
 * through curl_ev, many in flight at once; nothing blocks.
 */
#ifndef CO_PROVIDER_H
#define CO_PROVIDER_H

#include <ev.h>

#include "util/config.h"

struct provider;

enum provider_outcome {
    PROVIDER_STARTED,
    PROVIDER_RETRY,    /* certainly not started, may be retried */
    PROVIDER_REJECTED, /* certainly not started, do not retry */
    PROVIDER_UNKNOWN   /* may have started: keep slot and lock, find out */
};

struct provider_result {
    enum provider_outcome outcome;
    const char *call_id; /* the provider's callId when STARTED (validated) */
    const char *error;   /* what happened, for lastError, when not STARTED;
                            holds no provider text unquoted */
    double retry_after;  /* s, from a 429/503 Retry-After; 0 when none */
    long http_status;    /* the provider's status; 0 when no answer */
};

struct provider_call {
    const char *call_id;
    int attempt;
    const char *to;
    const char *script_id;
    const char *metadata; /* compact JSON object text */
};

typedef void (*provider_done_fn)(void *arg, const struct provider_result *r);

struct provider *provider_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                              size_t errlen);

/* Start CALL at the provider; DONE runs once, from the loop.  Returns -1
 * when the request could not be set up (DONE is not called). */
int provider_start(struct provider *p, const struct provider_call *call, provider_done_fn done,
                   void *arg);

/* What a status lookup found. */
enum provider_lookup_outcome {
    LOOKUP_FOUND,     /* 200 with a valid callId and a known status */
    LOOKUP_NOT_FOUND, /* 404: the provider has no call for the reference */
    LOOKUP_FAILED     /* anything else: nothing learnt */
};

struct provider_lookup_result {
    enum provider_lookup_outcome outcome;
    const char *call_id; /* FOUND: the provider's callId */
    const char *status;  /* FOUND: INITIATED, IN_PROGRESS, COMPLETED, FAILED,
                            BUSY or NO_ANSWER (a static string) */
    int final;           /* FOUND: 1 when STATUS is an end */
    const char *error;   /* FAILED: why (provider text quoted) */
};

typedef void (*provider_lookup_fn)(void *arg, const struct provider_lookup_result *r);

/* 1 when status lookups are configured ([provider] status_url). */
int provider_can_look_up(const struct provider *p);

/* Look up the status of attempt ATTEMPT of CALL_ID (reference "<id>:<n>")
 * at [provider] status_url.  DONE runs once, from the loop; -1 when the
 * request could not be set up or no status_url is set (DONE not called). */
int provider_lookup(struct provider *p, const char *call_id, int attempt, provider_lookup_fn done,
                    void *arg);


/* Fails what is in flight (starts: DONE with an UNKNOWN outcome; lookups:
 * FAILED). */
void provider_free(struct provider *p);

#endif
