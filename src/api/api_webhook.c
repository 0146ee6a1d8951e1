/*
 * api_webhook.c — POST /api/v1/callbacks/call-status, the provider's
 * webhook (DESIGN.md sections 3 step 4 and 5).
 *
 * Owns: authenticating the webhook (Standard Webhooks signature with
 * timestamp tolerance and two keys during rotation, or X-Api-Key), reading
 * its body, applying it through apply_webhook() in PostgreSQL (webhook-id
 * dedupe, attempt found by reference or by the provider's call id, settled
 * once), and then ending the attempt (attempt_finished(): slot and phone
 * lock released in Redis, counted).
 *
 * The provider's callId must be 1 to 256 printable characters.  A repeated
 * or late webhook answers 200 and changes nothing — except a COMPLETED one
 * for an attempt the daemon gave up on (reclaimed at call_timeout) when no
 * later attempt started: it completes the call (sql/004); a webhook
 * that arrives before the provider's answer to the start request finds the
 * attempt already IN_PROGRESS (the dispatcher commits that before it calls
 * the provider) and is applied like any other.
 *
 * "status" is one of outcomes[]; each but COMPLETED is retried by its
 * [retry] rule (attempt_retry_ms(), sql/010_retry_rules.sql): a fixed
 * delay, the exponential backoff, or never (the call ends FAILED).
 *
 * "disposition" is optional: null, or "OPT_OUT" (DESIGN.md section 9),
 * which lists the call's number on the do-not-call list and suppresses its
 * PENDING calls in the statement that applies the webhook
 * (sql/008_suppressed.sql), also when the webhook is late; any other value
 * is a 400 naming "disposition", as for "status": the provider's opt-out
 * must not be lost to a misspelling.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "api/api.h"
#include "api/validate.h"
#include "dispatch/attempt.h"
#include "store/attempts.h"
#include "util/log.h"
#include "util/shm.h"
#include "util/timeutil.h"
#include "util/webhook_sig.h"


/* DESIGN.md section 9, "Outcomes"; the retry rule of each is [retry]'s */
static const char *const outcomes[] = { "COMPLETED", "FAILED",   "BUSY",          "NO_ANSWER",
                                        "VOICEMAIL", "REJECTED", "INVALID_NUMBER" };
#define N_OUTCOMES (sizeof(outcomes) / sizeof(outcomes[0]))

struct webhook {
    char call_id[CALL_ID_MAX + 1]; /* the provider's callId */
    int has_reference;
    char ref_id[UUID_LEN + 1];
    int ref_attempt;
    const char *outcome;     /* one of outcomes[] */
    const char *disposition; /* "OPT_OUT" or NULL */
};

/* 1 when the request carries valid credentials; else answers 401. */
static int authenticated(struct api *api, struct http_request *req, const char *body, size_t len)
{
    const struct co_config *cfg = api->cfg;
    const char *why = NULL;
    if (cfg->callback_auth == CO_AUTH_API_KEY) {
        if (webhook_apikey_ok(http_request_header(req, "X-Api-Key"), cfg->callback_secret))
            return 1;
        why = "missing or invalid X-Api-Key";
        shm_count(CNT_WEBHOOK_REJ_API_KEY);
    } else {
        enum webhook_verdict v =
            webhook_verify(&api->webhook_keys, http_request_header(req, "webhook-id"),
                           http_request_header(req, "webhook-timestamp"),
                           http_request_header(req, "webhook-signature"), body, len,
                           (long long)time(NULL), cfg->signature_tolerance, &why);
        if (v == WEBHOOK_OK)
            return 1;
        if (v == WEBHOOK_ERROR) { /* 500: the provider retries later */
            api_internal_error(req, "webhook verification", why);
            return 0;
        }
        co_warn("webhook rejected", "reason=%s detail=%s", webhook_verdict_name(v),
                CO_LOG_Q(why ? why : ""));
        shm_count(v == WEBHOOK_MISSING_HEADER    ? CNT_WEBHOOK_REJ_MISSING_HEADER
                  : v == WEBHOOK_MALFORMED       ? CNT_WEBHOOK_REJ_MALFORMED
                  : v == WEBHOOK_STALE_TIMESTAMP ? CNT_WEBHOOK_REJ_STALE
                                                 : CNT_WEBHOOK_REJ_SIGNATURE);
    }
    struct problem p;
    problem_init(&p);
    problem_set(&p, 401, "%s", why ? why : "webhook not authenticated");
    api_problem(req, &p);
    problem_reset(&p);
    return 0;
}

/* "<uuid>:<attempt>" */
static int parse_reference(const char *ref, struct webhook *w)
{
    const char *colon = strrchr(ref, ':');
    if (colon == NULL || colon - ref != UUID_LEN)
        return -1;
    memcpy(w->ref_id, ref, UUID_LEN);
    w->ref_id[UUID_LEN] = '\0';
    char *end;
    long n = strtol(colon + 1, &end, 10);
    if (!validate_uuid(w->ref_id) || *end != '\0' || end == colon + 1 || n < 1 || n > 1000)
        return -1;
    w->ref_attempt = (int)n;
    w->has_reference = 1;
    return 0;
}

static void check_outcome(json_t *doc, struct webhook *w, struct problem *p)
{
    const char *st = json_string_value(json_object_get(doc, "status"));
    for (size_t i = 0; st != NULL && i < N_OUTCOMES; i++)
        if (strcmp(st, outcomes[i]) == 0)
            w->outcome = outcomes[i];
    if (w->outcome == NULL)
        problem_add_field(p, "status",
                          "must be one of COMPLETED, FAILED, BUSY, NO_ANSWER, VOICEMAIL, "
                          "REJECTED, INVALID_NUMBER");
    json_t *disp = json_object_get(doc, "disposition");
    if (disp == NULL || json_is_null(disp))
        return;
    if (json_is_string(disp) && strcmp(json_string_value(disp), "OPT_OUT") == 0)
        w->disposition = "OPT_OUT";
    else
        problem_add_field(p, "disposition", "must be \"OPT_OUT\" or null");
}

/* Providers add fields over time: unknown ones are ignored, known ones must
 * have the documented types. */
static int parse_body(const char *body, size_t len, struct webhook *w, struct problem *p)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        problem_add_field(p, "body", "must be a JSON object%s%s", doc ? "" : ": ",
                          doc ? "" : jerr.text);
        json_decref(doc);
        return -1;
    }
    const char *cid = json_string_value(json_object_get(doc, "callId"));
    if (!validate_call_id(cid))
        problem_add_field(p, "callId", "must be a string of 1 to %d printable characters",
                          CALL_ID_MAX);
    else
        snprintf(w->call_id, sizeof(w->call_id), "%s", cid);
    json_t *ref = json_object_get(doc, "reference");
    if (ref != NULL && (!json_is_string(ref) || parse_reference(json_string_value(ref), w) < 0))
        problem_add_field(p, "reference", "must be \"<call id>:<attempt>\"");
    check_outcome(doc, w, p);
    json_t *dur = json_object_get(doc, "durationSec");
    if (dur != NULL && !json_is_null(dur) && (!json_is_number(dur) || json_number_value(dur) < 0))
        problem_add_field(p, "durationSec", "must be a non-negative number");
    json_t *at = json_object_get(doc, "completedAt");
    if (at != NULL && !json_is_null(at) && !json_is_string(at))
        problem_add_field(p, "completedAt", "must be a string");
    json_decref(doc);
    return problem_failed(p) ? -1 : 0;
}

/* The outcomes that have a counter (util/shm.h), in the order of
 * outcomes[]; VOICEMAIL, REJECTED and INVALID_NUMBER have none yet. */
static void count_outcome(const char *outcome)
{
    /* in the order of outcomes[] */
    static const enum co_counter c[] = { CNT_WEBHOOKS_COMPLETED,     CNT_WEBHOOKS_FAILED,
                                         CNT_WEBHOOKS_BUSY,          CNT_WEBHOOKS_NO_ANSWER,
                                         CNT_WEBHOOKS_VOICEMAIL,     CNT_WEBHOOKS_REJECTED,
                                         CNT_WEBHOOKS_INVALID_NUMBER };
    _Static_assert(sizeof(c) / sizeof(c[0]) == sizeof(outcomes) / sizeof(outcomes[0]),
                   "a counter per outcome");
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        if (strcmp(outcome, outcomes[i]) == 0)
            shm_count(c[i]);
}

/* The request and what it said, until apply_webhook() answers. */
struct webhook_req {
    struct api *api;
    struct http_request *req;
    const char *outcome; /* one of outcomes[] */
};

/* An OPT_OUT was applied (listed, pending calls suppressed): say so. */
static void log_opt_out(const struct store_webhook_result *r)
{
    if (r->opted_out >= 0)
        co_info("number opted out: on the do-not-call list", "call=%s suppressed=%d", r->call_id,
                r->opted_out);
}

static void applied(void *ctx, const struct store_err *e, const struct store_webhook_result *r)
{
    struct webhook_req *w = ctx;
    struct http_request *req = w->req;
    if (e != NULL) {
        api_store_failed(req, e, "query");
    } else if (r == NULL) {
        api_internal_error(req, "webhook", "apply_webhook() returned no row");
    } else if (strcmp(r->result, "unknown") == 0) {
        struct problem p;
        problem_init(&p);
        problem_set(&p, 404, "no call matches this webhook");
        api_problem(req, &p);
        problem_reset(&p);
    } else {
        if (strcmp(r->result, "applied") == 0) {
            co_info("webhook applied", "call=%s attempt=%d status=%s", r->call_id, r->attempt,
                    r->status);
            log_opt_out(r);
            count_outcome(w->outcome);
            /* the lease belongs to the dispatch job that took it */
            struct attempt_end end = {
                .call_id = r->call_id,
                .attempt = r->attempt,
                .to = r->to,
                .owner = r->slot_owner,
                .noticed_by = "webhook",
                .status = r->status,
            };
            attempt_finished(w->api->pg, w->api->redis, &end, NULL, NULL);
        } else {
            co_info("webhook changes nothing", "result=%s call=%s", r->result, r->call_id);
            log_opt_out(r); /* a late OPT_OUT still counts */
            shm_count(CNT_WEBHOOKS_DUPLICATE);
        }
        char body[64];
        int n = snprintf(body, sizeof(body), "{\"result\":\"%s\"}", r->result);
        api_json(req, 200, body, (size_t)n, NULL);
    }
    free(w);
}

void api_webhook(struct api *api, struct http_request *req)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    struct webhook w = { 0 };
    struct problem p;

    if (!authenticated(api, req, body, len))
        return;
    problem_init(&p);
    if (parse_body(body, len, &w, &p) < 0) {
        api_problem(req, &p);
        problem_reset(&p);
        return;
    }
    struct webhook_req *wr = malloc(sizeof(*wr));
    if (wr == NULL) {
        api_internal_error(req, "query", "out of memory");
        return;
    }
    wr->api = api;
    wr->req = req;
    wr->outcome = w.outcome;
    struct store_webhook sw = {
        .webhook_id = http_request_header(req, "webhook-id"),
        .ref_id = w.has_reference ? w.ref_id : NULL,
        .ref_attempt = w.ref_attempt,
        .call_id = w.call_id,
        .outcome = w.outcome,
        .disposition = w.disposition,
        .backoff = { co_ms(api->cfg->backoff_base), co_ms(api->cfg->backoff_max) },
        .retry_ms = attempt_retry_ms(api->cfg, w.outcome),
    };
    if (store_webhook_apply(api->pg, &sw, applied, wr) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        free(wr);
    }
}
