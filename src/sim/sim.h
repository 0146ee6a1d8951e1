/*
 * sim.h — the simulated AI voice provider of callorch-provider-sim
 * (DESIGN.md section 5), as an http_server handler.
 *
 * Owns: the provider's HTTP endpoints (POST /api/v1/calls with
 * Idempotency-Key, GET /api/v1/calls?reference= (status lookup), GET
 * /stats, POST /stats/reset, /control/outcomes[/{e164}], GET /healthz),
 * the simulated calls with one ev_timer each, the bounded tables of
 * references and call ids, the webhook deliveries (signed as Standard
 * Webhooks, through curl_ev, retried on connection errors, 5xx and 429),
 * the fault knobs (5xx, 429, hanging, lost, slow and bad-callId answers,
 * early, duplicate and dropped webhooks), the outcome knobs (shares, per
 * number) and the statistics the tests assert on.
 *
 * Does not own: the listening socket, the loop, signals, option parsing
 * (provider_sim.c, main()).
 */
#ifndef CO_SIM_H
#define CO_SIM_H

#include <ev.h>
#include <stddef.h>

#include "net/http_server.h"

enum sim_callback_auth { SIM_AUTH_HMAC = 0, SIM_AUTH_API_KEY };

/* A call's outcome, the webhook's "status" (DESIGN.md sections 5 and 9). */
enum sim_outcome {
    SIM_COMPLETED = 0,
    SIM_FAILED,
    SIM_BUSY,
    SIM_NO_ANSWER,
    SIM_VOICEMAIL,
    SIM_REJECTED,
    SIM_INVALID_NUMBER,
    SIM_OUTCOME_N
};

#define SIM_E164_MAX 16 /* "+" and 15 digits */

/* --outcome NUMBER=STATUS[,opt-out]: the outcome of every call to NUMBER. */
struct sim_forced {
    char number[SIM_E164_MAX + 1];
    enum sim_outcome outcome;
    int opt_out; /* 1: "disposition":"OPT_OUT" */
};

struct sim_opts {
    const char *api_key; /* required bearer key of POST /api/v1/calls; NULL: none */
    enum sim_callback_auth callback_auth;
    const char *secret;              /* whsec_… (hmac: signs with the first) or
                                      * token[,token] (api-key: sends the first) */
    double delay_min, delay_max;     /* s, initiation to webhook */
    double success_rate;             /* share of COMPLETED among started calls */
    double fail_5xx, fail_429, hang; /* shares of initiations refused or never answered */
    double duplicate, early, drop;   /* shares of started calls */
    unsigned long long seed;
    int have_seed;               /* 0: seeded from time and pid */
    int webhook_retries;         /* extra attempts of one delivery */
    double webhook_timeout;      /* s, per webhook request */
    double lose_answer;          /* share of started calls whose answer is never sent */
    double slow_answer;          /* share of started calls answered after slow_delay */
    double slow_delay;           /* s */
    double bad_call_id;          /* share of started calls answered 202 without a valid callId */
    double share[SIM_OUTCOME_N]; /* --outcomes: VOICEMAIL, REJECTED, INVALID_NUMBER only */
    double opt_out;              /* share of COMPLETED calls with disposition OPT_OUT */
    const struct sim_forced *forced; /* --outcome, N_FORCED of them */
    size_t n_forced;
    size_t max_records; /* cap of the reference and call-id tables */
};

struct sim;

/* A provider on LOOP.  NULL with a message in ERR on a bad secret or no
 * memory. */
struct sim *sim_new(struct ev_loop *loop, const struct sim_opts *o, char *err, size_t errlen);

/* The http_handler_fn of the simulator's http_server; ARG is the struct sim. */
void sim_handle(struct http_request *req, void *arg);

/* Free S without sending what is pending.  Call after http_server_free(),
 * so requests S still holds (hanging, early) are "gone" and only freed. */
void sim_free(struct sim *s);

/*
 * Parse a --delay range "MIN-MAX" (or one value) of co_parse_duration()
 * durations; a MIN without a unit takes MAX's ("0-50ms", "10-30s",
 * "1s-2s", "250ms").  0 or -1 with a message in ERR.
 */
int sim_parse_delay(const char *s, double *min, double *max, char *err, size_t errlen);

/* The outcome named NAME ("VOICEMAIL"), or -1. */
int sim_outcome_from_name(const char *name);

/* Parse --outcome "NUMBER=STATUS[,opt-out]" into OUT.  0 or -1 with a
 * message in ERR. */
int sim_parse_forced(const char *s, struct sim_forced *out, char *err, size_t errlen);

/* Parse --outcomes "STATUS:P[,STATUS:P]..." (VOICEMAIL, REJECTED,
 * INVALID_NUMBER) into SHARE[] (others untouched).  0 or -1 with ERR. */
int sim_parse_shares(const char *s, double share[SIM_OUTCOME_N], char *err, size_t errlen);

#endif
