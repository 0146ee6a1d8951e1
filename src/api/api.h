/*
 * api.h — the HTTP API of DESIGN.md section 4, as served by an http child.
 *
 * Owns: routing (method + path to handler, 404 and 405 + Allow), client
 * authentication (Bearer keys of [http] api_keys), the content-type rule
 * (415), the problem+json and 503 + Retry-After answers, and the state the
 * handlers share (config, PostgreSQL pool, Redis client, Kafka producer).
 * The handlers themselves live in api_calls.c (the call resource), intake.c
 * (creating calls), api_webhook.c (the provider's webhook), api_ops.c
 * (health, readiness, metrics), api_dnc.c (the do-not-call list) and
 * api_events.c (a call's client events) and api_campaigns.c (campaigns and
 * dead-letter replay).  Also the body limit per route (api_max_body(): the
 * campaign routes take bulk bodies).
 */
#ifndef CO_API_H
#define CO_API_H

#include <ev.h>

#include "api/problem.h"
#include "api/validate.h"
#include "compliance/rules.h"
#include "net/http_server.h"
#include "net/pg_pool.h"
#include "store/store.h"
#include "util/config.h"
#include "util/webhook_sig.h"

struct intake;
struct kafka_producer;
struct redis_slots;
struct tzprefix;

struct api {
    struct ev_loop *loop;
    const struct co_config *cfg;
    struct pg_pool *pg;
    struct intake *intake;
    struct redis_slots *redis;       /* webhooks release slots; metrics */
    struct kafka_producer *producer; /* publishes created calls */
    struct webhook_keys webhook_keys;
    const struct tzprefix *tzprefix; /* the zone data (api_tzprefix_set) */
    struct tzprefix *own_tzprefix;   /* loaded by api_init: none was set */
    int closing;                     /* api_free() runs: start nothing new */
};

/* The time-zone prefix table (DESIGN.md section 9) the API uses.  The
 * master loads it once, before it forks, and sets it here: the http
 * children inherit it, and a reload keeps it ([compliance]
 * timezone_prefixes needs a restart).  When none was set (a process
 * without the master), api_init() loads cfg->timezone_prefixes itself. */
void api_tzprefix_set(const struct tzprefix *t);

/* Seconds a client is told to wait when the database is unreachable. */
#define API_RETRY_AFTER 5

/* Set up the API state on LOOP; returns 0 or -1 with a message in err. */
int api_init(struct api *api, struct ev_loop *loop, const struct co_config *cfg, char *err,
             size_t errlen);

void api_free(struct api *api);

/* The http_server handler: ARG is a struct api. */
void api_handle(struct http_request *req, void *arg);

/* --- helpers for the handler modules ------------------------------------ */

/* What the rules of DESIGN.md section 9 say about a call at create or
 * PATCH time: its zones, and when it may first be dialled. */
struct api_hold {
    const char *zones[RULES_MAX_ZONES]; /* into the table or the caller's timezone */
    size_t nzones;                      /* 0: no zone data */
    int64_t until_us;                   /* 0: due now; else µs since the epoch */
    const char *reason;                 /* NULL (due now), "window" or "schedule" */
};

/* H's zones: TIMEZONE alone when the call has one (NULL or "": none),
 * else what the prefix data says for TO. */
void api_call_zones(const struct api *api, const char *to, const char *timezone,
                    struct api_hold *h);

/* H's hold at NOW_US for a call with window W (NULL: [compliance]) and
 * NOT_BEFORE: the window's next opening at or after max(now, notBefore)
 * ("window"), else notBefore when still ahead ("schedule"), else due now.
 * A zone of the prefix data that the system tzdata lacks (the client's own
 * zone was validated) is logged and holds the call ("window") for
 * RULES_SKIP_RECHECK, as the dispatcher does: the create still succeeds,
 * and nothing is dialled on a guess. */
void api_call_hold(const struct api *api, const struct window *w,
                   const struct call_instant *not_before, int64_t now_us, struct api_hold *h);

/* The wall clock in µs since the epoch. */
int64_t api_now_us(void);

/* 1 when the media type of Content-Type CT is WANT: any case, optionally
 * with parameters (charset=…); 0 for NULL. */
int api_content_type_is(const char *ct, const char *want);

/* Answer with JSON text BODY. */
void api_json(struct http_request *req, int status, const char *body, size_t len,
              const char *extra_headers);

/* Answer with P rendered as problem+json. */
void api_problem(struct http_request *req, const struct problem *p);

/* 503 + Retry-After: the database is unreachable (DETAIL says why). */
void api_unavailable(struct http_request *req, const char *detail);

/* 500: something that should not happen; logged once here. */
void api_internal_error(struct http_request *req, const char *what, const char *err);

/* 404 for /api/v1/calls/{id} with an unknown or malformed id. */
void api_call_not_found(struct http_request *req, const char *id);

/* The 503 detail when the database cannot take or answer a statement. */
#define API_DB_UNREACHABLE "the database is unreachable; retry later"

/* A store callback's error E answered: 503 + Retry-After when the database
 * is unavailable (no answer, or such an SQLSTATE), else 500 (logged as WHAT). */
void api_store_failed(struct http_request *req, const struct store_err *e, const char *what);

/* What a handler hands to its store callback: the request and, for
 * messages, the call id.  The handler's callback frees it. */
struct api_req {
    struct http_request *req;
    char id[UUID_LEN + 1];
};

/* A new api_req (ID may be NULL); NULL after answering 500. */
struct api_req *api_req_new(struct http_request *req, const char *id);

/* The handlers (api_calls.c, api_ops.c). ID is a validated UUID. */
void api_calls_get(struct api *api, struct http_request *req, const char *id);
void api_calls_patch(struct api *api, struct http_request *req, const char *id);
void api_calls_cancel(struct api *api, struct http_request *req, const char *id);
void api_calls_list(struct api *api, struct http_request *req);
void api_ops_metrics_json(struct api *api, struct http_request *req);
void api_ops_healthz(struct api *api, struct http_request *req);
void api_ops_readyz(struct api *api, struct http_request *req);
void api_webhook(struct api *api, struct http_request *req);
void api_ops_prometheus(struct api *api, struct http_request *req);

/* Campaigns and replay (api_campaigns.c).  ID is a validated UUID;
 * api_campaigns_list() lists campaigns (ID NULL) or one's calls. */
void api_campaigns_create(struct api *api, struct http_request *req);
void api_campaigns_get(struct api *api, struct http_request *req, const char *id);
void api_campaigns_list(struct api *api, struct http_request *req, const char *id);
void api_campaigns_add_calls(struct api *api, struct http_request *req, const char *id);
void api_campaigns_action(struct api *api, struct http_request *req, const char *id,
                          const char *action); /* "pause", "resume", "cancel" */
void api_calls_retry(struct api *api, struct http_request *req, const char *id);
void api_calls_retry_bulk(struct api *api, struct http_request *req);

/* The body limit of the campaign routes that take up to CAMPAIGN_MAX_CALLS
 * calls (POST /api/v1/campaigns and …/{id}/calls): 10 000 calls with
 * metadata do not fit [http] max_body (64 KiB by default), which stays
 * the limit of every other route.  The larger of the two applies. */
#define API_CAMPAIGN_MAX_BODY ((size_t)16 << 20)

/* The body limit of a request to PATH with METHOD (the http_server's
 * per-request hook); ARG is a struct api. */
size_t api_max_body(const char *path, int method, void *arg);

/* The do-not-call list (api_dnc.c).  NUMBER is the raw path segment. */
void api_dnc_put(struct api *api, struct http_request *req, const char *number);
void api_dnc_get(struct api *api, struct http_request *req, const char *number);
void api_dnc_delete(struct api *api, struct http_request *req, const char *number);
void api_dnc_list(struct api *api, struct http_request *req);
/* 422 naming "to": the number of a create or PATCH is on the list. */
void api_to_listed(struct http_request *req);
void api_dnc_import(struct api *api, struct http_request *req);

/* GET /api/v1/calls/{id}/events (api_events.c).  ID is a validated UUID. */
void api_events_list(struct api *api, struct http_request *req, const char *id);

#endif
