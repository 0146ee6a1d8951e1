/*
 * provider.c — starting calls at the provider (see provider.h).
 */
#include "dispatch/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/validate.h"
#include "net/curl_ev.h"
#include "util/log.h"
#include "util/strbuf.h"

#define CALLBACK_PATH "/api/v1/callbacks/call-status"

struct provider {
    struct curl_ev *ce;
    const struct co_config *cfg;
    char auth[512];
    char webhook_url[1024];
};

struct start_ctx {
    provider_done_fn done;
    void *arg;
};

struct provider *provider_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                              size_t errlen)
{
    struct provider *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->ce = curl_ev_new(loop)) == NULL) {
        snprintf(err, errlen, "cannot set up the HTTP client");
        free(p);
        return NULL;
    }
    p->cfg = cfg;
    snprintf(p->auth, sizeof(p->auth), "Authorization: Bearer %s", cfg->provider_api_key);
    snprintf(p->webhook_url, sizeof(p->webhook_url), "%s%s", cfg->public_base_url, CALLBACK_PATH);
    return p;
}

/* Retry-After in seconds (delta form only; an HTTP date counts as none). */
static double parse_retry_after(const char *v)
{
    if (v == NULL)
        return 0.;
    char *end;
    double s = strtod(v, &end);
    return end != v && s > 0 && s < 86400 ? s : 0.;
}

/* A 2xx: started with a valid callId, else unknown (it may have started). */
static void classify_2xx(const struct curl_ev_response *resp, struct provider_result *r, char *why,
                         size_t whylen, json_t **doc)
{
    long st = resp->status;
    *doc = json_loadb(resp->body, resp->body_len, 0, NULL);
    if (!json_is_object(*doc)) {
        snprintf(why, whylen, "provider answered %ld with a body that is not a JSON object", st);
        return;
    }
    json_t *idv = json_object_get(*doc, "callId");
    const char *id = json_string_value(idv);
    if (validate_call_id(id)) {
        r->outcome = PROVIDER_STARTED;
        r->call_id = id;
        return;
    }
    if (idv == NULL)
        snprintf(why, whylen, "provider answered %ld without a callId", st);
    else
        snprintf(why, whylen, "provider answered %ld with an invalid callId %s", st,
                 id != NULL ? CO_LOG_Q(id) : "(not a string)");
}

static void classify_answer(const struct curl_ev_response *resp, struct provider_result *r,
                            char *why, size_t whylen, json_t **doc)
{
    long st = resp->status;
    r->outcome = PROVIDER_UNKNOWN;
    if (resp->result != CURLE_OK || resp->body_truncated) {
        /* an answer not read in full: what it would have said is unknown */
        snprintf(why, whylen, "provider answer %ld cut short: %s", st,
                 resp->error ? resp->error : "body too long");
    } else if (st >= 200 && st < 300) {
        classify_2xx(resp, r, why, whylen, doc);
    } else if (st >= 500 || st == 429) {
        snprintf(why, whylen, "provider answered %ld", st);
        r->outcome = PROVIDER_RETRY;
        r->retry_after = parse_retry_after(resp->retry_after);
    } else if (st >= 400) {
        snprintf(why, whylen, "provider rejected the call with %ld", st);
        r->outcome = PROVIDER_REJECTED;
    } else {
        snprintf(why, whylen, "provider answered %ld", st); /* 1xx, 3xx: unknown */
    }
}

/* No HTTP answer: only a connection that was never made certainly did not
 * start the call; after that the request may have been sent. */
static void classify_no_answer(const struct curl_ev_response *resp, struct provider_result *r,
                               char *why, size_t whylen)
{
    switch (resp->result) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        r->outcome = PROVIDER_RETRY;
        snprintf(why, whylen, "provider unreachable: %s", resp->error ? resp->error : "no answer");
        break;
    default:
        r->outcome = PROVIDER_UNKNOWN;
        snprintf(why, whylen, "no answer from the provider: %s",
                 resp->error ? resp->error : "unknown error");
        break;
    }
}

static void on_answer(void *arg, const struct curl_ev_response *resp)
{
    struct start_ctx *sc = arg;
    struct provider_result r = { .outcome = PROVIDER_UNKNOWN };
    char why[CO_LOG_QUOTE_MAX + 100];
    json_t *doc = NULL;

    r.http_status = resp->status;
    if (resp->status == 0)
        classify_no_answer(resp, &r, why, sizeof(why));
    else
        classify_answer(resp, &r, why, sizeof(why), &doc);
    if (r.outcome != PROVIDER_STARTED)
        r.error = why;
    sc->done(sc->arg, &r);
    json_decref(doc);
    free(sc);
}

static char *request_body(const struct provider *p, const struct provider_call *call)
{
    char reference[96];
    snprintf(reference, sizeof(reference), "%s:%d", call->call_id, call->attempt);
    json_t *meta = json_loads(call->metadata ? call->metadata : "{}", 0, NULL);
    json_t *body = json_pack("{s:s, s:s, s:o, s:s, s:s}", "to", call->to, "scriptId",
                             call->script_id, "metadata", meta ? meta : json_object(), "webhookUrl",
                             p->webhook_url, "reference", reference);
    char *txt = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return txt;
}

int provider_start(struct provider *p, const struct provider_call *call, provider_done_fn done,
                   void *arg)
{
    struct start_ctx *sc = calloc(1, sizeof(*sc));
    char *body = request_body(p, call);
    if (sc == NULL || body == NULL) {
        free(sc);
        free(body);
        return -1;
    }
    char idem[128];
    snprintf(idem, sizeof(idem), "Idempotency-Key: %s:%d", call->call_id, call->attempt);
    const char *headers[] = { p->auth, "Content-Type: application/json", "Accept: application/json",
                              idem, NULL };
    struct curl_ev_request req = {
        .method = "POST",
        .url = p->cfg->provider_url,
        .headers = p->cfg->provider_api_key[0] ? headers : headers + 1,
        .body = body,
        .body_len = strlen(body),
        .timeout_s = p->cfg->provider_timeout,
    };
    sc->done = done;
    sc->arg = arg;
    int rc = curl_ev_send(p->ce, &req, on_answer, sc);
    free(body);
    if (rc < 0) {
        free(sc);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------ status lookup */

struct lookup_ctx {
    provider_lookup_fn done;
    void *arg;
};

/* The statuses of DESIGN.md section 5 that the daemon acts on. */
static const struct {
    const char *word;
    int final;
} lookup_statuses[] = {
    { "INITIATED", 0 }, { "IN_PROGRESS", 0 }, { "COMPLETED", 1 },
    { "FAILED", 1 },    { "BUSY", 1 },        { "NO_ANSWER", 1 },
    { "VOICEMAIL", 1 }, { "REJECTED", 1 },    { "INVALID_NUMBER", 1 },
};

static void lookup_found(const struct curl_ev_response *resp, struct provider_lookup_result *r,
                         char *why, size_t whylen, json_t **doc)
{
    *doc = json_loadb(resp->body, resp->body_len, 0, NULL);
    const char *id = json_string_value(json_object_get(*doc, "callId"));
    const char *st = json_string_value(json_object_get(*doc, "status"));
    if (!json_is_object(*doc)) {
        snprintf(why, whylen, "status lookup answered 200 with a body that is not JSON");
        return;
    }
    if (!validate_call_id(id)) {
        snprintf(why, whylen, "status lookup answered an invalid callId %s",
                 id != NULL ? CO_LOG_Q(id) : "(none)");
        return;
    }
    for (size_t i = 0; st != NULL && i < sizeof(lookup_statuses) / sizeof(lookup_statuses[0]);
         i++) {
        if (strcmp(st, lookup_statuses[i].word) == 0) {
            r->outcome = LOOKUP_FOUND;
            r->call_id = id;
            r->status = lookup_statuses[i].word;
            r->final = lookup_statuses[i].final;
            return;
        }
    }
    snprintf(why, whylen, "status lookup answered an unknown status %s",
             st != NULL ? CO_LOG_Q(st) : "(none)");
}

static void on_lookup(void *arg, const struct curl_ev_response *resp)
{
    struct lookup_ctx *lc = arg;
    struct provider_lookup_result r = { .outcome = LOOKUP_FAILED };
    char why[CO_LOG_QUOTE_MAX + 100];
    json_t *doc = NULL;

    if (resp->status == 0 || resp->result != CURLE_OK || resp->body_truncated)
        snprintf(why, sizeof(why), "status lookup failed: %s",
                 resp->error ? resp->error : "answer too long");
    else if (resp->status == 404)
        r.outcome = LOOKUP_NOT_FOUND;
    else if (resp->status == 200)
        lookup_found(resp, &r, why, sizeof(why), &doc);
    else
        snprintf(why, sizeof(why), "status lookup answered %ld", resp->status);
    if (r.outcome == LOOKUP_FAILED)
        r.error = why;
    lc->done(lc->arg, &r);
    json_decref(doc);
    free(lc);
}

int provider_can_look_up(const struct provider *p)
{
    return p->cfg->provider_status_url != NULL && p->cfg->provider_status_url[0] != '\0';
}

int provider_lookup(struct provider *p, const char *call_id, int attempt, provider_lookup_fn done,
                    void *arg)
{
    if (!provider_can_look_up(p))
        return -1;
    char reference[96];
    snprintf(reference, sizeof(reference), "%s:%d", call_id, attempt);
    /* {reference} replaced by the reference: a uuid, ':' and digits, all
     * safe in a URL as they are */
    struct strbuf url = { 0 };
    const char *t = p->cfg->provider_status_url, *hit;
    while ((hit = strstr(t, "{reference}")) != NULL) {
        strbuf_add(&url, t, (size_t)(hit - t));
        strbuf_adds(&url, reference);
        t = hit + strlen("{reference}");
    }
    strbuf_adds(&url, t);
    char *u = strbuf_take(&url);
    struct lookup_ctx *lc = calloc(1, sizeof(*lc));
    if (u == NULL || lc == NULL) {
        free(u);
        free(lc);
        return -1;
    }
    const char *headers[] = { p->auth, "Accept: application/json", NULL };
    struct curl_ev_request req = {
        .method = "GET",
        .url = u,
        .headers = p->cfg->provider_api_key[0] ? headers : headers + 1,
        .timeout_s = p->cfg->provider_timeout,
    };
    lc->done = done;
    lc->arg = arg;
    int rc = curl_ev_send(p->ce, &req, on_lookup, lc);
    free(u);
    if (rc < 0) {
        free(lc);
        return -1;
    }
    return 0;
}

void provider_free(struct provider *p)
{
    if (p == NULL)
        return;
    curl_ev_free(p->ce);
    free(p);
}
