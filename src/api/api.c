/*
 * api.c — routing, authentication and the common answers of the API.
 *
 * Checks run in this order, so each error is the most specific one:
 * route (404) → method (405 + Allow) → Bearer key (401) → content type
 * (415) → the handler's own validation (400, 404, 409, 422 …).
 */
#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <http_parser.h>

#include "api/intake.h"
#include "api/validate.h"
#include "compliance/tzprefix.h"
#include "dispatch/slots.h"
#include "net/kafka_producer.h"
#include "util/log.h"
#include "util/shm.h"

#define API_PREFIX "/api/v1"
#define CALLS_PATH API_PREFIX "/calls"
#define DNC_PATH API_PREFIX "/dnc"
#define CAMPAIGNS_PATH API_PREFIX "/campaigns"

enum route {
    ROUTE_NONE,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS_JSON,
    ROUTE_CALLS,
    ROUTE_CALL,
    ROUTE_CALL_CANCEL,
    ROUTE_CALL_EVENTS,
    ROUTE_WEBHOOK,
    ROUTE_METRICS,
    ROUTE_DNC_LIST,
    ROUTE_DNC_IMPORT,
    ROUTE_DNC_ENTRY,
    ROUTE_CALLS_RETRY,
    ROUTE_CALL_RETRY,
    ROUTE_CAMPAIGNS,
    ROUTE_CAMPAIGN,
    ROUTE_CAMPAIGN_CALLS,
    ROUTE_CAMPAIGN_PAUSE,
    ROUTE_CAMPAIGN_RESUME,
    ROUTE_CAMPAIGN_CANCEL,
};

/* Which methods a route takes, for dispatch and for the Allow header. */
static const struct route_info {
    const char *allow;
    int needs_auth;
} routes[] = {
    [ROUTE_NONE] = { "", 0 },
    [ROUTE_HEALTHZ] = { "GET, HEAD", 0 },
    [ROUTE_READYZ] = { "GET, HEAD", 0 },
    [ROUTE_METRICS_JSON] = { "GET, HEAD", 1 },
    [ROUTE_CALLS] = { "GET, HEAD, POST", 1 },
    [ROUTE_CALL] = { "GET, HEAD, PATCH", 1 },
    [ROUTE_CALL_CANCEL] = { "POST", 1 },
    [ROUTE_CALL_EVENTS] = { "GET, HEAD", 1 },
    [ROUTE_WEBHOOK] = { "POST", 0 },      /* signed, see api_webhook.c */
    [ROUTE_METRICS] = { "GET, HEAD", 0 }, /* Prometheus scrapes without a key */
    [ROUTE_DNC_LIST] = { "GET, HEAD", 1 },
    [ROUTE_DNC_IMPORT] = { "POST", 1 },
    [ROUTE_DNC_ENTRY] = { "GET, HEAD, PUT, DELETE", 1 },
    [ROUTE_CALLS_RETRY] = { "POST", 1 },
    [ROUTE_CALL_RETRY] = { "POST", 1 },
    [ROUTE_CAMPAIGNS] = { "GET, HEAD, POST", 1 },
    [ROUTE_CAMPAIGN] = { "GET, HEAD", 1 },
    [ROUTE_CAMPAIGN_CALLS] = { "GET, HEAD, POST", 1 },
    [ROUTE_CAMPAIGN_PAUSE] = { "POST", 1 },
    [ROUTE_CAMPAIGN_RESUME] = { "POST", 1 },
    [ROUTE_CAMPAIGN_CANCEL] = { "POST", 1 },
};

/* The {id} routes under /api/v1/calls/ and /api/v1/campaigns/: the suffix
 * after the id, and the route it names. */
static const struct sub_route {
    int campaign;
    const char *suffix;
    enum route route;
} sub_routes[] = {
    { 0, "", ROUTE_CALL },
    { 0, "/cancel", ROUTE_CALL_CANCEL },
    { 0, "/retry", ROUTE_CALL_RETRY },
    { 0, "/events", ROUTE_CALL_EVENTS },
    { 1, "", ROUTE_CAMPAIGN },
    { 1, "/calls", ROUTE_CAMPAIGN_CALLS },
    { 1, "/pause", ROUTE_CAMPAIGN_PAUSE },
    { 1, "/resume", ROUTE_CAMPAIGN_RESUME },
    { 1, "/cancel", ROUTE_CAMPAIGN_CANCEL },
};

/* PATH below BASE (with its '/'): copy the id into ID, map the rest. */
static enum route match_sub(const char *path, const char *base, int campaign, char *id,
                            size_t idlen)
{
    size_t bl = strlen(base);
    if (strncmp(path, base, bl) != 0 || path[bl] != '/')
        return ROUTE_NONE;
    const char *rest = path + bl + 1;
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    if (n == 0)
        return ROUTE_NONE;
    if (n >= idlen)
        n = idlen - 1; /* too long for a UUID: the handler answers 404 */
    memcpy(id, rest, n);
    id[n] = '\0';
    for (size_t i = 0; i < sizeof sub_routes / sizeof *sub_routes; i++)
        if (sub_routes[i].campaign == campaign &&
            strcmp(slash ? slash : "", sub_routes[i].suffix) == 0)
            return sub_routes[i].route;
    return ROUTE_NONE;
}

/* Map PATH to a route; *id points into PATH for the {id} routes. */
static enum route match(const char *path, char *id, size_t idlen)
{
    if (strcmp(path, "/healthz") == 0)
        return ROUTE_HEALTHZ;
    if (strcmp(path, "/readyz") == 0)
        return ROUTE_READYZ;
    if (strcmp(path, API_PREFIX "/metrics") == 0)
        return ROUTE_METRICS_JSON;
    if (strcmp(path, "/metrics") == 0)
        return ROUTE_METRICS;
    if (strcmp(path, CALLS_PATH) == 0)
        return ROUTE_CALLS;
    if (strcmp(path, API_PREFIX "/callbacks/call-status") == 0)
        return ROUTE_WEBHOOK;
    if (strcmp(path, DNC_PATH) == 0)
        return ROUTE_DNC_LIST;
    if (strcmp(path, DNC_PATH "/import") == 0)
        return ROUTE_DNC_IMPORT;
    if (strncmp(path, DNC_PATH "/", sizeof(DNC_PATH)) == 0) {
        const char *num = path + sizeof(DNC_PATH);
        size_t n = strlen(num);
        if (n == 0 || strchr(num, '/') != NULL)
            return ROUTE_NONE;
        if (n >= idlen)
            n = idlen - 1; /* too long for a number: the handler answers 400 */
        memcpy(id, num, n);
        id[n] = '\0';
        return ROUTE_DNC_ENTRY;
    }
    if (strcmp(path, CALLS_PATH "/retry") == 0)
        return ROUTE_CALLS_RETRY;
    if (strcmp(path, CAMPAIGNS_PATH) == 0)
        return ROUTE_CAMPAIGNS;
    if (strncmp(path, CAMPAIGNS_PATH "/", sizeof(CAMPAIGNS_PATH)) == 0)
        return match_sub(path, CAMPAIGNS_PATH, 1, id, idlen);
    return match_sub(path, CALLS_PATH, 0, id, idlen);
}

static int method_allowed(const char *allow, int method)
{
    const char *name = http_method_str((enum http_method)method);
    size_t n = strlen(name);
    for (const char *p = allow; (p = strstr(p, name)) != NULL; p += n)
        if ((p == allow || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return 1;
    return 0;
}

int api_content_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (ct == NULL || strncasecmp(ct, want, n) != 0)
        return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t';
}

void api_json(struct http_request *req, int status, const char *body, size_t len,
              const char *extra_headers)
{
    http_respond(req, status, "application/json", extra_headers, body, len);
}

void api_problem(struct http_request *req, const struct problem *p)
{
    size_t len;
    char *body = problem_render(p, &len);
    int status = p->oom || body == NULL ? 500 : p->status;
    const char *extra = status == 401 ? "WWW-Authenticate: Bearer realm=\"callorch\"\r\n" : NULL;
    if (status == 503) {
        char ra[64];
        snprintf(ra, sizeof(ra), "Retry-After: %d\r\n", API_RETRY_AFTER);
        http_respond(req, status, PROBLEM_CONTENT_TYPE, ra, body, len);
    } else if (body == NULL) {
        http_respond_problem(req, 500, "out of memory", NULL);
    } else {
        http_respond(req, status, PROBLEM_CONTENT_TYPE, extra, body, len);
    }
    free(body);
}

/* Answer a problem with just a status and a detail. */
static void answer_status(struct http_request *req, int status, const char *detail,
                          const char *extra_headers)
{
    if (extra_headers != NULL) { /* they replace api_problem()'s own headers */
        http_respond_problem(req, status, detail, extra_headers);
        return;
    }
    struct problem p;
    problem_init(&p);
    problem_set(&p, status, "%s", detail);
    api_problem(req, &p);
    problem_reset(&p);
}

void api_unavailable(struct http_request *req, const char *detail)
{
    answer_status(req, 503, detail ? detail : "the database is unreachable", NULL);
}

void api_internal_error(struct http_request *req, const char *what, const char *err)
{
    /* ERR is often PostgreSQL's text, which can echo what a client sent */
    co_error("request failed", "what=\"%s\" error=%s", what, CO_LOG_Q(err ? err : "?"));
    answer_status(req, 500, "internal error", NULL);
}

void api_call_not_found(struct http_request *req, const char *id)
{
    struct problem p;
    problem_init(&p);
    problem_set(&p, 404, "no call with id %s", id);
    api_problem(req, &p);
    problem_reset(&p);
}

void api_store_failed(struct http_request *req, const struct store_err *e, const char *what)
{
    if (store_unavailable(e))
        api_unavailable(req, API_DB_UNREACHABLE);
    else
        api_internal_error(req, what, e->msg);
}

struct api_req *api_req_new(struct http_request *req, const char *id)
{
    struct api_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        api_internal_error(req, "query", "out of memory");
        return NULL;
    }
    r->req = req;
    if (id != NULL)
        snprintf(r->id, sizeof(r->id), "%s", id);
    return r;
}

/* Bearer auth for client endpoints; answers 401 itself on failure. */
static int authorized(struct api *api, struct http_request *req)
{
    const char *h = http_request_header(req, "Authorization");
    if (auth_bearer_ok(h, api->cfg->api_keys, api->cfg->n_api_keys))
        return 1;
    answer_status(req, 401, h == NULL ? "missing Authorization: Bearer <key>" : "invalid API key",
                  "WWW-Authenticate: Bearer realm=\"callorch\"\r\n");
    return 0;
}

static void dispatch_call_route(struct api *api, struct http_request *req, enum route r, int method,
                                const char *id)
{
    if (!validate_uuid(id)) {
        api_call_not_found(req, id);
        return;
    }
    if (r == ROUTE_CALL_CANCEL)
        api_calls_cancel(api, req, id);
    else if (r == ROUTE_CALL_EVENTS)
        api_events_list(api, req, id);
    else if (r == ROUTE_CALL_RETRY)
        api_calls_retry(api, req, id);
    else if (method == HTTP_PATCH)
        api_calls_patch(api, req, id);
    else
        api_calls_get(api, req, id);
}

static void dispatch_campaign_route(struct api *api, struct http_request *req, enum route r,
                                    int method, const char *id)
{
    if (!validate_uuid(id)) {
        struct problem p;
        problem_init(&p);
        problem_set(&p, 404, "no campaign with id %s", id);
        api_problem(req, &p);
        problem_reset(&p);
    } else if (r == ROUTE_CAMPAIGN_CALLS && method == HTTP_POST) {
        api_campaigns_add_calls(api, req, id);
    } else if (r == ROUTE_CAMPAIGN_CALLS) {
        api_campaigns_list(api, req, id);
    } else if (r == ROUTE_CAMPAIGN) {
        api_campaigns_get(api, req, id);
    } else {
        api_campaigns_action(api, req, id,
                             r == ROUTE_CAMPAIGN_PAUSE    ? "pause"
                             : r == ROUTE_CAMPAIGN_RESUME ? "resume"
                                                          : "cancel");
    }
}

/* The metrics label of route R requested with METHOD. */
static enum co_route metrics_route(enum route r, int method)
{
    switch (r) {
    case ROUTE_CALLS: return method == HTTP_POST ? RT_CALLS_CREATE : RT_CALLS_LIST;
    case ROUTE_CALL: return method == HTTP_PATCH ? RT_CALL_PATCH : RT_CALL_GET;
    case ROUTE_CALL_CANCEL: return RT_CALL_CANCEL;
    case ROUTE_WEBHOOK: return RT_WEBHOOK;
    case ROUTE_METRICS_JSON: return RT_METRICS_JSON;
    case ROUTE_METRICS: return RT_METRICS;
    case ROUTE_HEALTHZ: return RT_HEALTHZ;
    case ROUTE_READYZ: return RT_READYZ;
    default: return RT_OTHER;
    }
}

void api_handle(struct http_request *req, void *arg)
{
    struct api *api = arg;
    char id[64];
    enum route r = match(http_request_path(req), id, sizeof(id));
    int method = http_request_method(req);

    http_request_set_tag(req, (int)metrics_route(r, method));

    if (r == ROUTE_NONE) {
        answer_status(req, 404, "no such route", NULL);
        return;
    }
    if (!method_allowed(routes[r].allow, method)) {
        char allow[96];
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", routes[r].allow);
        answer_status(req, 405, "method not allowed here", allow);
        return;
    }
    if (routes[r].needs_auth && !authorized(api, req))
        return;
    if ((method == HTTP_POST && (r == ROUTE_CALLS || r == ROUTE_WEBHOOK || r == ROUTE_CAMPAIGNS ||
                                 r == ROUTE_CAMPAIGN_CALLS || r == ROUTE_CALLS_RETRY)) ||
        method == HTTP_PATCH) {
        if (!api_content_type_is(http_request_header(req, "Content-Type"), "application/json")) {
            answer_status(req, 415, "Content-Type must be application/json", NULL);
            return;
        }
    }
    switch (r) {
    case ROUTE_HEALTHZ: api_ops_healthz(api, req); break;
    case ROUTE_READYZ: api_ops_readyz(api, req); break;
    case ROUTE_METRICS_JSON: api_ops_metrics_json(api, req); break;
    case ROUTE_WEBHOOK: api_webhook(api, req); break;
    case ROUTE_METRICS: api_ops_prometheus(api, req); break;
    case ROUTE_CALLS:
        if (method == HTTP_POST)
            intake_create(api->intake, req);
        else
            api_calls_list(api, req);
        break;
    case ROUTE_DNC_LIST: api_dnc_list(api, req); break;
    case ROUTE_DNC_IMPORT: api_dnc_import(api, req); break;
    case ROUTE_DNC_ENTRY:
        if (method == HTTP_PUT)
            api_dnc_put(api, req, id);
        else if (method == HTTP_DELETE)
            api_dnc_delete(api, req, id);
        else
            api_dnc_get(api, req, id);
        break;
    case ROUTE_CALLS_RETRY: api_calls_retry_bulk(api, req); break;
    case ROUTE_CAMPAIGNS:
        if (method == HTTP_POST)
            api_campaigns_create(api, req);
        else
            api_campaigns_list(api, req, NULL);
        break;
    case ROUTE_CAMPAIGN:
    case ROUTE_CAMPAIGN_CALLS:
    case ROUTE_CAMPAIGN_PAUSE:
    case ROUTE_CAMPAIGN_RESUME:
    case ROUTE_CAMPAIGN_CANCEL: dispatch_campaign_route(api, req, r, method, id); break;
    default: dispatch_call_route(api, req, r, method, id); break;
    }
}

size_t api_max_body(const char *path, int method, void *arg)
{
    struct api *api = arg;
    char id[64];
    enum route r = match(path, id, sizeof id);
    if (method == HTTP_POST && (r == ROUTE_CAMPAIGNS || r == ROUTE_CAMPAIGN_CALLS) &&
        api->cfg->max_body < API_CAMPAIGN_MAX_BODY)
        return API_CAMPAIGN_MAX_BODY;
    return api->cfg->max_body;
}

/* A call was committed: publish {"id","attempt":1} keyed by its number.
 * Fire and forget: if Kafka does not take it, the scheduler publishes it. */
static void publish_created(void *arg, const char *id, const char *to)
{
    struct api *api = arg;
    char msg[96];
    int n = kafka_call_message(msg, sizeof(msg), id, 1);
    if (n > 0)
        kafka_producer_send(api->producer, to, msg, (size_t)n, NULL, NULL);
}

/* ------------------------------------------------------ compliance -- */

void api_call_zones(const struct api *api, const char *to, const char *zone, struct api_hold *h)
{
    /* "zone", not "timezone": that is a global of <time.h> (-Wshadow) */
    if (zone != NULL && zone[0] != '\0') {
        h->zones[0] = zone;
        h->nzones = 1;
        return;
    }
    int n = rules_number_zones(api->tzprefix, to, h->zones, RULES_MAX_ZONES);
    h->nzones = n > 0 ? (size_t)n : 0;
}

void api_call_hold(const struct api *api, const struct window *w,
                   const struct call_instant *not_before, int64_t now_us, struct api_hold *h)
{
    char err[256];
    int64_t from_us = not_before->set && not_before->us > now_us ? not_before->us : now_us;
    time_t until;
    h->until_us = 0;
    h->reason = NULL;
    /* the rules count whole seconds: the second FROM_US falls in */
    time_t from = (time_t)(from_us >= 0 ? from_us / 1000000 : (from_us - 999999) / 1000000);
    enum rules_verdict v =
        rules_check(api->cfg, w, h->zones, h->nzones, from, &until, err, sizeof err);
    if (v == RULES_ERROR) {
        co_warn("a time zone of the prefix data is not in the system tzdata; call held", "error=%s",
                CO_LOG_Q(err));
        v = RULES_HOLD;
        until = from + RULES_SKIP_RECHECK;
    }
    if (v == RULES_HOLD && (int64_t)until * 1000000 > from_us) {
        h->until_us = (int64_t)until * 1000000;
        h->reason = "window";
    } else if (from_us > now_us) {
        h->until_us = from_us;
        h->reason = "schedule";
    }
}

int64_t api_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---------------------------------------------------------------- init -- */

/* Set by the master before it forks; read-only after. */
static const struct tzprefix *tzprefix_table;

void api_tzprefix_set(const struct tzprefix *t)
{
    tzprefix_table = t;
}

/* The master's table, else one of our own (api_free frees it). */
static int api_tzprefix_init(struct api *api, char *err, size_t errlen)
{
    char why[512];
    api->tzprefix = tzprefix_table;
    if (api->tzprefix != NULL)
        return 0;
    if (tzprefix_load(api->cfg->timezone_prefixes, &api->own_tzprefix, why, sizeof why) < 0) {
        snprintf(err, errlen, "[compliance] timezone_prefixes: %s", why);
        return -1;
    }
    api->tzprefix = api->own_tzprefix;
    return 0;
}

int api_init(struct api *api, struct ev_loop *loop, const struct co_config *cfg, char *err,
             size_t errlen)
{
    struct pg_pool_opts opts;
    struct redis_opts ropts;
    pg_pool_opts_init(&opts);
    opts.size = cfg->pg_pool_size;
    opts.name = "api";
    redis_opts_init(&ropts);
    ropts.name = "api";
    memset(api, 0, sizeof(*api));
    api->loop = loop;
    api->cfg = cfg;
    if (webhook_keys_from_config(cfg, &api->webhook_keys) == 0 &&
        cfg->callback_auth == CO_AUTH_HMAC) {
        snprintf(err, errlen, "[provider] callback_secret: no usable key");
        return -1;
    }
    if (api_tzprefix_init(api, err, errlen) < 0)
        return -1;
    if ((api->pg = pg_pool_new(loop, cfg->pg_conninfo, &opts, err, errlen)) == NULL ||
        (api->intake = intake_new(api, err, errlen)) == NULL ||
        (api->redis = redis_slots_new(loop, cfg, &ropts, err, errlen)) == NULL ||
        (api->producer = kafka_producer_new(loop, cfg, err, errlen)) == NULL) {
        api_free(api);
        return -1;
    }
    intake_on_created(api->intake, publish_created, api);
    return 0;
}

void api_free(struct api *api)
{
    /* Each client fails what it still holds when freed, and those
     * callbacks may go on to the next step of their request: free every
     * client while what its callbacks use is still there, and set CLOSING
     * so that they answer instead of starting anything new.  Redis first
     * (/metrics goes on to PostgreSQL after it), then the pool (intake's
     * and the webhook's callbacks use the intake and the producer), then
     * the intake (its queue), then the producer. */
    api->closing = 1;
    if (api->redis != NULL)
        redis_slots_free(api->redis);
    api->redis = NULL;
    if (api->pg != NULL)
        pg_pool_free(api->pg);
    api->pg = NULL;
    intake_free(api->intake);
    api->intake = NULL;
    if (api->producer != NULL)
        kafka_producer_free(api->producer);
    webhook_keys_clear(&api->webhook_keys);
    tzprefix_free(api->own_tzprefix);
    memset(api, 0, sizeof(*api));
}
