/*
 * provider.c — starting calls at the provider (see provider.h).
 */
#include "dispatch/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "net/curl_ev.h"
#include "util/log.h"

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
    snprintf(p->webhook_url, sizeof(p->webhook_url), "%s%s", cfg->public_base_url,
             CALLBACK_PATH);
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

static void classify_answer(const struct curl_ev_response *resp, struct provider_result *r,
                            char *why, size_t whylen, json_t **doc)
{
    long st = resp->status;
    if (st >= 200 && st < 300) {
        *doc = json_loadb(resp->body, resp->body_len, 0, NULL);
        const char *id = json_string_value(json_object_get(*doc, "callId"));
        if (id != NULL && id[0] != '\0' && strlen(id) <= 256) {
            r->outcome = PROVIDER_STARTED;
            r->call_id = id;
            return;
        }
        snprintf(why, whylen, "provider answered %ld without a callId", st);
        r->outcome = PROVIDER_REJECTED;
    } else if (st >= 500 || st == 429) {
        snprintf(why, whylen, "provider answered %ld", st);
        r->outcome = PROVIDER_RETRY;
        r->retry_after = parse_retry_after(resp->retry_after);
    } else {
        snprintf(why, whylen, "provider rejected the call with %ld", st);
        r->outcome = PROVIDER_REJECTED;
    }
}

static void on_answer(void *arg, const struct curl_ev_response *resp)
{
    struct start_ctx *sc = arg;
    struct provider_result r = { .outcome = PROVIDER_RETRY };
    char why[300];
    json_t *doc = NULL;

    r.http_status = resp->status;
    if (resp->status == 0) {
        snprintf(why, sizeof(why), "provider unreachable: %s",
                 resp->error ? resp->error : "no answer");
    } else {
        classify_answer(resp, &r, why, sizeof(why), &doc);
    }
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
                             call->script_id, "metadata", meta ? meta : json_object(),
                             "webhookUrl", p->webhook_url, "reference", reference);
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
    const char *headers[] = { p->auth, "Content-Type: application/json",
                              "Accept: application/json", NULL };
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

void provider_free(struct provider *p)
{
    if (p == NULL)
        return;
    curl_ev_free(p->ce);
    free(p);
}
