/*
 * fuzz_validate.c — libFuzzer target for the call validators (src/api/validate.c
 * and the problem bodies of src/api/problem.c).
 *
 * One input is used every way the API uses untrusted text: as a create and
 * a PATCH body (validate_create, validate_patch, request_hash), as the query
 * string of GET /api/v1/calls (validate_list_query), as a list cursor
 * (cursor_decode), a call id, a status, an Idempotency-Key and an
 * Authorization header value (auth_bearer_ok).  Bodies are passed in a
 * buffer of exactly their length, without a NUL, so a read past LEN is an
 * ASan report.  Besides the sanitizers, it checks what the API relies on:
 *  - every failure renders to a problem+json object that parses back, with
 *    type, title, detail and the status of the struct problem;
 *  - a valid body yields a valid "to" and "scriptId", compact metadata
 *    within the limit, hashes with request_hash(), and passes as a PATCH;
 *    a failed one leaves nothing to free;
 *  - a valid query has its values in range, and never page with cursor;
 *  - a cursor that decodes encodes back to the same text, and any (time,
 *    uuid) made from the input survives cursor_encode + cursor_decode when
 *    the time is below CURSOR_US_LIMIT, and is refused past it;
 *  - auth_bearer_ok() only accepts a header that contains a key.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/problem.h"
#include "api/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_META 256             /* small, so the limit is reached */

static char *const api_keys[] = { "fuzz-client-key-1", "fuzz-client-key-2", NULL };

/* Abort with a message: a property of the validators does not hold. */
static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_validate: %s\n", what);
    abort();
}

/* P failed: it must render to a problem+json object with its status. */
static void check_problem(const struct problem *p)
{
    size_t len = 0;
    json_error_t jerr;

    if (!problem_failed(p))
        fuzz_fail("validator failed without recording a problem");
    char *s = problem_render(p, &len);
    if (s == NULL)
        fuzz_fail("problem_render returned NULL");
    if (strlen(s) != len)
        fuzz_fail("problem_render length differs from the text");
    json_t *doc = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        fprintf(stderr, "fuzz_validate: problem body is not JSON: %s\n%s\n", jerr.text, s);
        abort();
    }
    int want = p->oom ? 500 : p->status ? p->status : 400;
    if (json_integer_value(json_object_get(doc, "status")) != want ||
        !json_is_string(json_object_get(doc, "type")) ||
        !json_is_string(json_object_get(doc, "title")) ||
        !json_is_string(json_object_get(doc, "detail")))
        fuzz_fail("problem body lacks type, title, detail or the status");
    json_t *errors = json_object_get(doc, "errors");
    if (p->nfields > 0 && !p->oom && json_array_size(errors) != p->nfields)
        fuzz_fail("problem body lists another number of field errors");
    json_decref(doc);
    free(s);
}

/* A validated call: the fields have the documented shape. */
static void check_call(const struct call_input *in, int patch)
{
    if (!patch && (!in->has_to || !in->has_script_id))
        fuzz_fail("create accepted without to or scriptId");
    if (patch && !in->has_to && !in->has_script_id && !in->has_metadata)
        fuzz_fail("PATCH accepted with no field to change");
    if (in->has_to) {
        size_t n = strlen(in->to);
        if (n < 9 || n > CALL_TO_MAX || in->to[0] != '+' || in->to[1] == '0' ||
            strspn(in->to + 1, "0123456789") != n - 1)
            fuzz_fail("accepted a \"to\" that is not E.164");
    }
    if (in->has_script_id) {
        size_t n = strlen(in->script_id);
        if (n < 1 || n > CALL_SCRIPT_ID_MAX)
            fuzz_fail("accepted a scriptId of bad length");
    }
    if (in->metadata != NULL) {
        json_t *m = json_loads(in->metadata, JSON_REJECT_DUPLICATES, NULL);
        if (!in->has_metadata || strlen(in->metadata) > MAX_META || !json_is_object(m))
            fuzz_fail("metadata is not a compact JSON object within the limit");
        json_decref(m);
    } else if (in->has_metadata && !patch) {
        fuzz_fail("create has_metadata without metadata");
    }
}

/* validate_create / validate_patch on BODY (exactly LEN bytes, no NUL). */
static void fuzz_bodies(const char *body, size_t len)
{
    struct call_input in, in2;
    struct problem p;
    char hash[REQUEST_HASH_HEX];

    problem_init(&p);
    memset(&in, 0x5a, sizeof(in)); /* the validator must not trust what is there */
    int created = validate_create(body, len, MAX_META, &in, &p) == 0;
    if (created) {
        check_call(&in, 0);
        if (problem_failed(&p))
            fuzz_fail("create succeeded with a problem recorded");
        if (request_hash(body, len, hash) != 0 || strlen(hash) != 64)
            fuzz_fail("a valid body does not hash");
        call_input_free(&in);
    } else {
        if (in.metadata != NULL)
            fuzz_fail("failed create left metadata to free");
        check_problem(&p);
    }
    problem_reset(&p);

    problem_init(&p);
    if (validate_patch(body, len, MAX_META, &in2, &p) == 0) {
        check_call(&in2, 1);
        call_input_free(&in2);
    } else {
        if (in2.metadata != NULL)
            fuzz_fail("failed PATCH left metadata to free");
        if (created)
            fuzz_fail("a valid create body is not a valid PATCH body");
        check_problem(&p);
    }
    problem_reset(&p);

    if (request_hash(body, len, hash) == 0 && strlen(hash) != 64)
        fuzz_fail("request_hash: not 64 hex digits");
}

/* validate_list_query on S. */
static void fuzz_query(const char *s)
{
    struct list_query q;
    struct problem p;

    problem_init(&p);
    if (validate_list_query(s, &q, &p) == 0) {
        if (q.page < 1 || q.page_size < 1 || q.page_size > LIST_PAGE_SIZE_MAX ||
            (q.has_page && q.has_cursor) ||
            (q.status != NULL && validate_status(q.status) != q.status))
            fuzz_fail("accepted query out of range");
        if (q.has_cursor && (q.cursor_created_us < 0 || !validate_uuid(q.cursor_id)))
            fuzz_fail("accepted a cursor with a bad position");
    } else {
        check_problem(&p);
    }
    problem_reset(&p);
}

/* cursor_decode on S, and a round trip of a position made of the input. */
static void fuzz_cursor(const char *s, const uint8_t *data, size_t size)
{
    char uuid[UUID_LEN + 1], again[CURSOR_BUF];
    int64_t t;

    if (cursor_decode(s, &t, uuid) == 0) {
        if (t < 0 || !validate_uuid(uuid))
            fuzz_fail("cursor_decode gave a bad position");
        if (cursor_encode(t, uuid, again, sizeof(again)) != 0 || strcmp(again, s) != 0)
            fuzz_fail("a decoded cursor does not encode back to itself");
    }
    if (size >= 24) {
        static const char hex[] = "0123456789abcdefABCDEF";
        char id[UUID_LEN + 1];
        uint64_t v;
        memcpy(&v, data, sizeof(v));
        for (int i = 0, j = 8; i < UUID_LEN; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                id[i] = '-';
            else
                id[i] = hex[data[j++ % size] % (sizeof(hex) - 1)];
        }
        id[UUID_LEN] = '\0';
        t = (int64_t)(v >> 1);
        /* a time past CURSOR_US_LIMIT is refused; below it, never */
        if ((cursor_encode(t, id, again, sizeof(again)) != 0) != (t >= CURSOR_US_LIMIT))
            fuzz_fail("cursor_encode refused a valid position or took an invalid one");
        if (t >= CURSOR_US_LIMIT)
            return;
        int64_t t2;
        if (cursor_decode(again, &t2, uuid) != 0 || t2 != t || strcmp(uuid, id) != 0)
            fuzz_fail("cursor_encode + cursor_decode is not the identity");
    }
}

/* The predicates on S. */
static void fuzz_predicates(const char *s)
{
    if (validate_uuid(s) && strlen(s) != UUID_LEN)
        fuzz_fail("validate_uuid accepted a bad length");
    const char *st = validate_status(s);
    if (st != NULL && strcmp(st, s) != 0)
        fuzz_fail("validate_status returned another status");
    if (validate_idempotency_key(s) && (strlen(s) < 1 || strlen(s) > IDEMPOTENCY_KEY_MAX))
        fuzz_fail("validate_idempotency_key accepted a bad length");
    if (auth_bearer_ok(s, api_keys, 2) && strstr(s, api_keys[0]) == NULL &&
        strstr(s, api_keys[1]) == NULL)
        fuzz_fail("auth_bearer_ok accepted a header without a key");
    if (!auth_bearer_ok(s, api_keys, 0))
        fuzz_fail("auth_bearer_ok with no keys must accept");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size ? size : 1);
    char *s = malloc(size + 1);

    if (body == NULL || s == NULL)
        fuzz_fail("out of memory");
    memcpy(body, data, size);
    memcpy(s, data, size);
    s[size] = '\0';

    fuzz_bodies(body, size);
    fuzz_query(s);
    fuzz_cursor(s, data, size);
    fuzz_predicates(s);

    free(body);
    free(s);
    return 0;
}
