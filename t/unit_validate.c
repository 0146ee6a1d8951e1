/*
 * unit_validate.c — TAP tests for src/api/validate.c and src/api/problem.c.
 *
 * Every rule of DESIGN.md section 4 that the validation layer owns, each
 * checked through what a client sees: the errors[].field values of the
 * rendered problem+json body, parsed back with jansson.
 */
#include <jansson.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/problem.h"
#include "api/validate.h"
#include "tap.h"

#define META_MAX 16384
#define UUID_A "5f0c2a9e-1b2c-4d3e-8f40-0123456789ab"

static struct problem P;
static struct call_input IN;
static json_t *doc;       /* the last rendered problem, parsed */
static char fields[4096]; /* its errors[].field values, comma-joined */

/* Render P, keep it parsed in doc, return the comma-joined field names. */
static const char *render(const struct problem *p)
{
    size_t len = 0;
    json_decref(doc);
    doc = NULL;
    fields[0] = '\0';
    char *s = problem_render(p, &len);
    if (!s)
        return "(render failed)";
    doc = json_loadb(s, len, JSON_REJECT_DUPLICATES, NULL);
    free(s);
    if (!doc)
        return "(render is not JSON)";
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "errors"), i, e)
    {
        if (i)
            strncat(fields, ",", sizeof fields - strlen(fields) - 1);
        strncat(fields, json_string_value(json_object_get(e, "field")),
                sizeof fields - strlen(fields) - 1);
    }
    return fields;
}

static const char *doc_str(const char *key)
{
    return json_string_value(json_object_get(doc, key));
}

/* The message of the first error on FIELD in doc. */
static const char *doc_message(const char *field)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "errors"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "field")), field) == 0)
            return json_string_value(json_object_get(e, "message"));
    }
    return NULL;
}

/* "" when the body is valid, else the fields blamed. */
static const char *check(int patch, const char *body, size_t max)
{
    problem_reset(&P);
    call_input_free(&IN);
    int rc = patch ? validate_patch(body, strlen(body), max, &IN, &P)
                   : validate_create(body, strlen(body), max, &IN, &P);
    if (rc == 0)
        return problem_failed(&P) ? "(rc 0 with a problem)" : "";
    return render(&P);
}

static const char *create(const char *body)
{
    return check(0, body, META_MAX);
}

static const char *patch(const char *body)
{
    return check(1, body, META_MAX);
}

/* A create body with the given JSON for "to". */
static const char *create_to(const char *to_json)
{
    char body[512];
    snprintf(body, sizeof body, "{\"to\":%s,\"scriptId\":\"s\"}", to_json);
    return create(body);
}

static const char *create_script(const char *script_json)
{
    char body[512];
    snprintf(body, sizeof body, "{\"to\":\"+15551234567\",\"scriptId\":%s}", script_json);
    return create(body);
}

static const char *create_meta(const char *meta_json, size_t max)
{
    char body[32768];
    snprintf(body, sizeof body, "{\"to\":\"+15551234567\",\"scriptId\":\"s\",\"metadata\":%s}",
             meta_json);
    return check(0, body, max);
}

static void test_problem(void)
{
    struct problem p;
    problem_init(&p);
    ok(!problem_failed(&p), "fresh problem has not failed");
    problem_set(&p, 404, "no call %s", "x");
    is_string("", render(&p), "404: no errors member");
    ok(json_object_get(doc, "errors") == NULL, "errors absent without field errors");
    is_string("https://callorch.dev/problems/not-found", doc_str("type"), "404 type URI");
    is_string("Not Found", doc_str("title"), "404 title");
    is_int(404, json_integer_value(json_object_get(doc, "status")), "404 status");
    is_string("no call x", doc_str("detail"), "404 detail");
    problem_reset(&p);

    problem_set(&p, 418, NULL);
    render(&p);
    is_string("about:blank", doc_str("type"), "status without a kind: about:blank");
    is_string(doc_str("title"), doc_str("detail"), "no detail given: detail is the title");
    problem_reset(&p);

    problem_add_field(&p, "a", "m%d", 1);
    problem_add_field(&p, "b\xff", "bad utf-8 \xfe");
    is_string("a,b?", render(&p), "field errors rendered, invalid UTF-8 replaced");
    is_int(400, json_integer_value(json_object_get(doc, "status")), "field error implies 400");
    is_string("https://callorch.dev/problems/validation", doc_str("type"), "validation type");
    is_string("2 invalid fields", doc_str("detail"), "detail counts the fields");
    problem_reset(&p);

    for (int i = 0; i < PROBLEM_MAX_FIELDS + 5; i++)
        problem_add_field(&p, "f", "m");
    render(&p);
    is_int(PROBLEM_MAX_FIELDS, json_array_size(json_object_get(doc, "errors")),
           "field errors capped at %d", PROBLEM_MAX_FIELDS);
    like(doc_str("detail"), "55 invalid fields (first 50 listed)", "detail says how many");
    problem_reset(&p);
    is_string("application/problem+json", PROBLEM_CONTENT_TYPE, "content type");
}

static void test_create_valid(void)
{
    is_string("",
              create("{\"to\":\"+15551234567\",\"scriptId\":\"welcome-flow\","
                     "\"metadata\": { \"campaign\" : \"fall\", \"n\" : 1 }}"),
              "full valid body");
    is_string("+15551234567", IN.to, "to copied");
    is_string("welcome-flow", IN.script_id, "scriptId copied");
    is_string("{\"campaign\":\"fall\",\"n\":1}", IN.metadata, "metadata compact, order kept");
    ok(IN.has_to && IN.has_script_id && IN.has_metadata, "has_* set");
    is_string("", create("{\"scriptId\":\"a\",\"to\":\"+15551234567\"}"), "without metadata");
    ok(!IN.has_metadata && IN.metadata == NULL, "no metadata: has_metadata 0");
    is_string("", create_meta("null", META_MAX), "metadata null accepted");
    ok(!IN.has_metadata && IN.metadata == NULL, "create: metadata null is absent");
    is_string("", create_meta("{}", META_MAX), "empty metadata object");
    is_string("{}", IN.metadata, "empty metadata stored as {}");
}

static void test_to(void)
{
    is_string("to", create_to("\"15551234567\""), "to: missing plus");
    is_string("to", create_to("\"+05551234567\""), "to: leading 0");
    is_string("to", create_to("\"+1234567\""), "to: 7 digits too short");
    is_string("to", create_to("\"+1234567890123456\""), "to: 16 digits too long");
    is_string("to", create_to("\"+1555abc4567\""), "to: letters");
    is_string("to", create_to("\"+1 555 123 4567\""), "to: spaces");
    is_string("to", create_to("\"+\""), "to: plus alone");
    is_string("to", create_to("15551234567"), "to: a number");
    like(doc_message("to"), "must be a string", "to: type message");
    is_string("to", create_to("null"), "to: null");
    is_string("to", create_to("\"\""), "to: empty");
    is_string("to", create("{\"scriptId\":\"s\"}"), "to: missing");
    is_string("is required", doc_message("to"), "to: required message");
    is_string("", create_to("\"+12345678\""), "to: 8 digits ok");
    is_string("", create_to("\"+123456789012345\""), "to: 15 digits ok");
    is_string("+123456789012345", IN.to, "to: 15 digits stored whole");
}

static void test_script_id(void)
{
    char long_id[200];
    is_string("scriptId", create_script("\"\""), "scriptId: empty");
    memset(long_id, 0, sizeof long_id);
    long_id[0] = '"';
    memset(long_id + 1, 'a', 129);
    long_id[130] = '"';
    is_string("scriptId", create_script(long_id), "scriptId: 129 chars");
    long_id[129] = '"';
    long_id[130] = '\0';
    is_string("", create_script(long_id), "scriptId: 128 chars ok");
    is_int(128, (long long)strlen(IN.script_id), "scriptId: 128 chars stored");
    is_string("scriptId", create_script("\"a/b\""), "scriptId: slash");
    is_string("scriptId", create_script("\"a b\""), "scriptId: space");
    is_string("scriptId", create_script("\"caf\xc3\xa9\""), "scriptId: non-ASCII");
    is_string("scriptId", create_script("42"), "scriptId: number");
    is_string("", create_script("\"A-z_0.9:x\""), "scriptId: every allowed class");
    is_string("scriptId", create("{\"to\":\"+15551234567\"}"), "scriptId: missing");
}

static void test_metadata(void)
{
    const char *meta = "{\"k\": \"vvvv\"}"; /* compact: {"k":"vvvv"} = 12 bytes */
    is_string("metadata", create_meta("[1]", META_MAX), "metadata: array");
    like(doc_message("metadata"), "must be a JSON object", "metadata: type message");
    is_string("metadata", create_meta("\"x\"", META_MAX), "metadata: string");
    is_string("metadata", create_meta("5", META_MAX), "metadata: number");
    is_string("metadata", create_meta("true", META_MAX), "metadata: boolean");
    is_string("", create_meta(meta, 12), "metadata: exactly at the limit");
    is_string("metadata", create_meta(meta, 11), "metadata: one byte over");
    like(doc_message("metadata"), "at most 11 bytes", "metadata: message names the limit");
    is_string("", create_meta("{ \"a\": {\"b\": {\"c\": [1, 2, {\"d\": null}]}} }", META_MAX),
              "metadata: nested object ok");
    is_string("{\"a\":{\"b\":{\"c\":[1,2,{\"d\":null}]}}}", IN.metadata,
              "metadata: nested stored compact");
}

static void test_body_shape(void)
{
    is_string("foo", create("{\"to\":\"+15551234567\",\"scriptId\":\"s\",\"foo\":1}"),
              "unknown field named");
    is_string("unknown field", doc_message("foo"), "unknown field message");
    is_string("body", create("{\"to\":"), "malformed JSON");
    like(doc_str("detail"), "line 1, column", "malformed: detail has line and column");
    is_int(400, json_integer_value(json_object_get(doc, "status")), "malformed: 400");
    is_string("body", create("{} x"), "trailing garbage");
    is_string("body", create(""), "empty body");
    is_string("body", create("{\"to\":\"+1555\xff\",\"scriptId\":\"s\"}"), "invalid UTF-8");
    is_string("body", create("[1,2]"), "array body");
    like(doc_message("body"), "must be a JSON object", "array body message");
    is_string("body", create("\"str\""), "string body");
    is_string("body", create("null"), "null body");
    is_string("body",
              create("{\"to\":\"+15551234567\",\"to\":\"+15551234567\",\"scriptId\":\"s\"}"),
              "duplicate keys");
    like(doc_message("body"), "duplicate", "duplicate keys message");

    size_t depth = 3000;
    char *deep = malloc(2 * depth + 64);
    strcpy(deep, "{\"to\":\"+15551234567\",\"scriptId\":\"s\",\"metadata\":");
    size_t n = strlen(deep);
    for (size_t i = 0; i < depth; i++)
        deep[n++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[n++] = ']';
    strcpy(deep + n, "}");
    is_string("body", create(deep), "nesting beyond the parser depth limit");
    free(deep);
}

static void test_many_errors(void)
{
    is_string("to,scriptId,metadata,x,y",
              create("{\"to\":\"bad\",\"scriptId\":\"\",\"metadata\":[],\"x\":1,\"y\":2}"),
              "all errors collected in body order");
    is_string("5 invalid fields", doc_str("detail"), "detail counts them");
    is_string("https://callorch.dev/problems/validation", doc_str("type"), "validation type");
    ok(IN.metadata == NULL && !IN.has_to, "nothing left in call_input on failure");
    is_string("x,to,scriptId", create("{\"x\":1}"), "unknown plus both required");
    is_string("to,scriptId", create("{}"), "empty object: both required");
}

static void test_patch(void)
{
    is_string("body", patch("{}"), "patch: nothing to change");
    is_string("no field to change", doc_message("body"), "patch: message");
    is_string("", patch("{\"scriptId\":\"x\"}"), "patch: one field");
    ok(IN.has_script_id && !IN.has_to && !IN.has_metadata, "patch: only scriptId set");
    is_string("", patch("{\"metadata\":null}"), "patch: metadata null");
    ok(IN.has_metadata && IN.metadata == NULL, "patch: metadata null clears");
    is_string("to", patch("{\"to\":\"bad\"}"), "patch: same rules for to");
    is_string("foo", patch("{\"foo\":1}"), "patch: unknown field only");
    is_string("metadata", check(1, "{\"metadata\":{\"a\":\"bbbb\"}}", 5), "patch: metadata limit");
    is_string("body", patch("[]"), "patch: not an object");
}

static void test_uuid_status(void)
{
    ok(validate_uuid(UUID_A), "uuid lowercase");
    ok(validate_uuid("5F0C2A9E-1B2C-4D3E-8F40-0123456789AB"), "uuid uppercase");
    ok(!validate_uuid("5f0c2a9e1b2c4d3e8f400123456789ab"), "uuid without dashes");
    ok(!validate_uuid("5f0c2a9e-1b2c-4d3e-8f40-0123456789a"), "uuid 35 chars");
    ok(!validate_uuid("5f0c2a9e-1b2c-4d3e-8f40-0123456789abc"), "uuid 37 chars");
    ok(!validate_uuid("5f0c2a9e1-b2c-4d3e-8f40-0123456789ab"), "uuid dash misplaced");
    ok(!validate_uuid("5f0c2a9e-1b2c-4d3e-8f40-0123456789ag"), "uuid non-hex");
    ok(!validate_uuid("{5f0c2a9e-1b2c-4d3e-8f40-0123456789a}"), "uuid braces");
    ok(!validate_uuid("") && !validate_uuid(NULL), "uuid empty and NULL");
    is_string("IN_PROGRESS", validate_status("IN_PROGRESS"), "status exact");
    is_string("EXPIRED", validate_status("EXPIRED"), "status EXPIRED (section 9)");
    ok(validate_status("pending") == NULL, "status is case-sensitive");
}

static const char *query(const char *q, struct list_query *lq)
{
    problem_reset(&P);
    if (validate_list_query(q, lq, &P) == 0)
        return problem_failed(&P) ? "(rc 0 with a problem)" : "";
    return render(&P);
}

static void test_list_query(void)
{
    struct list_query lq;
    char cur[CURSOR_BUF], q[256];
    is_string("", query(NULL, &lq), "no query");
    ok(lq.page == 1 && lq.page_size == 20 && !lq.status && !lq.has_cursor, "defaults");
    is_string("", query("", &lq), "empty query");
    is_string("", query("status=FAILED&page=3&pageSize=100", &lq), "all valid");
    ok(lq.page == 3 && lq.page_size == 100 && strcmp(lq.status, "FAILED") == 0, "values set");
    is_string("", query("status=IN%5fPROGRESS&&", &lq), "percent-decoded, empty pairs skipped");
    is_string("IN_PROGRESS", lq.status, "decoded status");
    is_string("status", query("status=failed", &lq), "status lowercase");
    is_string("status", query("status=", &lq), "status empty");
    is_string("status", query("status", &lq), "status without =");
    is_string("status", query("status=%zz", &lq), "bad percent-encoding");
    is_string("status", query("status=PENDING%00", &lq), "encoded NUL");
    is_string("query", query("%zz=1", &lq), "bad percent-encoding in a name");
    is_string("page", query("page=0", &lq), "page 0");
    is_string("page", query("page=-1", &lq), "page negative");
    is_string("page", query("page=abc", &lq), "page letters");
    is_string("page", query("page=99999999999", &lq), "page overflow");
    is_string("pageSize", query("pageSize=0", &lq), "pageSize 0");
    is_string("pageSize", query("pageSize=101", &lq), "pageSize 101");
    is_string("pageSize", query("pageSize=+5", &lq), "pageSize with a space");
    is_string("", query("pageSize=1", &lq), "pageSize 1");
    is_string("foo", query("foo=1", &lq), "unknown parameter");
    is_string("unknown query parameter", doc_message("foo"), "unknown parameter message");
    is_string("page", query("page=1&page=2&page=3", &lq), "repeated parameter, one error");
    is_string("page,pageSize,bogus", query("page=0&pageSize=0&bogus=1", &lq), "all collected");
    is_string("cursor", query("cursor=garbage!", &lq), "garbage cursor");
    is_string("cursor", query("cursor=Zm9v", &lq), "base64 of something else");

    ok(cursor_encode(1767268800000000LL, UUID_A, cur, sizeof cur) == 0, "cursor encodes");
    ok(strspn(cur, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
           strlen(cur),
       "cursor is unpadded base64url");
    snprintf(q, sizeof q, "cursor=%s&pageSize=5", cur);
    is_string("", query(q, &lq), "cursor accepted");
    ok(lq.has_cursor && lq.cursor_created_us == 1767268800000000LL &&
           strcmp(lq.cursor_id, UUID_A) == 0,
       "cursor round trip");
    snprintf(q, sizeof q, "page=2&cursor=%s", cur);
    is_string("page", query(q, &lq), "page and cursor together refused");
}

static void test_cursor(void)
{
    char cur[CURSOR_BUF], id[UUID_LEN + 1];
    int64_t t = 0;
    ok(cursor_encode(CURSOR_US_LIMIT - 1, UUID_A, cur, sizeof cur) == 0,
       "cursor: the last microsecond of year 9999 encodes");
    ok(cursor_decode(cur, &t, id) == 0 && t == CURSOR_US_LIMIT - 1,
       "cursor: the last microsecond of year 9999 round trip");
    ok(cursor_encode(CURSOR_US_LIMIT, UUID_A, cur, sizeof cur) != 0, "cursor: year 10000 refused");
    ok(cursor_encode(INT64_MAX, UUID_A, cur, sizeof cur) != 0, "cursor: INT64_MAX refused");
    ok(cursor_encode(0, UUID_A, cur, sizeof cur) == 0 && cursor_decode(cur, &t, id) == 0 && t == 0,
       "cursor: zero round trip");
    ok(cursor_encode(-1, UUID_A, cur, sizeof cur) != 0, "cursor: negative time refused");
    ok(cursor_encode(1, "nope", cur, sizeof cur) != 0, "cursor: bad uuid refused");
    ok(cursor_encode(1, UUID_A, cur, 10) != 0, "cursor: short buffer refused");
    ok(cursor_decode("", &t, id) != 0, "cursor: empty");
    ok(cursor_encode(5, UUID_A, cur, sizeof cur) == 0, "cursor: encodes");
    strcat(cur, "=");
    ok(cursor_decode(cur, &t, id) != 0, "cursor: padding refused");

    unsigned char b64[128];
    const char *raw = "0012:" UUID_A; /* leading zeros: not what we produce */
    int n = EVP_EncodeBlock(b64, (const unsigned char *)raw, (int)strlen(raw));
    while (n > 0 && b64[n - 1] == '=')
        b64[--n] = '\0';
    ok(cursor_decode((const char *)b64, &t, id) != 0, "cursor: non-canonical number refused");

    /* forged times that PostgreSQL cannot turn into a timestamp */
    const char *forged[] = { "9223372036854775807:" UUID_A, "253402300800000000:" UUID_A };
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        n = EVP_EncodeBlock(b64, (const unsigned char *)forged[i], (int)strlen(forged[i]));
        while (n > 0 && b64[n - 1] == '=')
            b64[--n] = '\0';
        for (int k = 0; k < n; k++)
            b64[k] = b64[k] == '+' ? '-' : b64[k] == '/' ? '_' : b64[k];
        ok(cursor_decode((const char *)b64, &t, id) != 0, "cursor: forged time %s refused",
           forged[i]);
    }
}

static void test_hash(void)
{
    char a[REQUEST_HASH_HEX], b[REQUEST_HASH_HEX];
    const char *x = "{\"a\":1,\"b\":[1,2],\"m\":{\"y\":1,\"x\":2}}";
    const char *y = " {\n \"m\" : {\"x\":2, \"y\":1}, \"b\" : [ 1, 2 ], \"a\" : 1 }\n";
    ok(request_hash(x, strlen(x), a) == 0 && request_hash(y, strlen(y), b) == 0, "hash: both");
    is_string(a, b, "hash: key order and whitespace do not matter");
    is_int(64, (long long)strlen(a), "hash: 64 hex digits");
    ok(request_hash("{\"a\":2}", 7, b) == 0 && strcmp(a, b) != 0, "hash: other value differs");
    ok(request_hash("[1,2]", 5, a) == 0 && request_hash("[2,1]", 5, b) == 0 && strcmp(a, b) != 0,
       "hash: array order matters");
    ok(request_hash("{}", 2, a) == 0, "hash: empty object");
    is_string("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", a,
              "hash: SHA-256 of canonical {}");
    ok(request_hash("{\"a\":", 5, a) != 0, "hash: malformed refused");
}

static void test_idempotency_key(void)
{
    char k[300];
    ok(validate_idempotency_key("order-42"), "key: simple");
    ok(validate_idempotency_key("with space"), "key: inner space is printable");
    ok(!validate_idempotency_key("") && !validate_idempotency_key(NULL), "key: empty, NULL");
    memset(k, 'k', 255);
    k[255] = '\0';
    ok(validate_idempotency_key(k), "key: 255 chars");
    k[255] = 'k';
    k[256] = '\0';
    ok(!validate_idempotency_key(k), "key: 256 chars");
    ok(!validate_idempotency_key("a\tb"), "key: tab");
    ok(!validate_idempotency_key("a\x7f"), "key: DEL");
    ok(!validate_idempotency_key("caf\xc3\xa9"), "key: non-ASCII");
}

static void test_auth(void)
{
    char k1[] = "k1-secret", k2[] = "k2-other";
    char *keys[] = { k1, k2, NULL };
    ok(!auth_bearer_ok(NULL, keys, 2), "auth: header missing");
    ok(!auth_bearer_ok("", keys, 2), "auth: header empty");
    ok(!auth_bearer_ok("Basic azEtc2VjcmV0", keys, 2), "auth: wrong scheme");
    ok(!auth_bearer_ok("Bearer", keys, 2), "auth: no token");
    ok(!auth_bearer_ok("Bearer   ", keys, 2), "auth: blank token");
    ok(!auth_bearer_ok("Bearerk1-secret", keys, 2), "auth: no space after scheme");
    ok(!auth_bearer_ok("Bearer wrong", keys, 2), "auth: wrong key");
    ok(!auth_bearer_ok("Bearer k1-secre", keys, 2), "auth: prefix of a key");
    ok(!auth_bearer_ok("Bearer k1-secretX", keys, 2), "auth: key plus a byte");
    ok(!auth_bearer_ok("Bearer k1-secret extra", keys, 2), "auth: two tokens");
    ok(auth_bearer_ok("Bearer k2-other", keys, 2), "auth: second of two keys");
    ok(auth_bearer_ok("Bearer k1-secret", keys, 2), "auth: first of two keys");
    ok(auth_bearer_ok("bEARER   k1-secret \t", keys, 2), "auth: scheme any case, OWS");
    ok(auth_bearer_ok(NULL, NULL, 0), "auth: no keys configured, no header");
    ok(auth_bearer_ok("Bearer anything", NULL, 0), "auth: no keys configured");
}


/* ---------------------------------------------------- section 9 fields -- */

/* validate_instant's µs for S, or -1 (as a sentinel: no test uses it). */
static long long instant(const char *s)
{
    int64_t us;
    return validate_instant(s, &us) == 0 ? (long long)us : -1;
}

static void test_instant(void)
{
    char t[INSTANT_TEXT_MAX];
    is_int(0, instant("1970-01-01T00:00:00Z"), "instant: the epoch");
    is_int(1767268800000000LL, instant("2026-01-01T12:00:00Z"), "instant: Z");
    is_int(1767268800000000LL, instant("2026-01-01t12:00:00z"), "instant: lowercase t and z");
    is_int(1767268800000000LL, instant("2026-01-01T14:30:00+02:30"), "instant: + offset");
    is_int(1767268800000000LL, instant("2026-01-01T09:00:00-03:00"), "instant: - offset");
    is_int(1767268800000000LL, instant("2026-01-01T12:00:00-00:00"), "instant: -00:00");
    is_int(1767268800500000LL, instant("2026-01-01T12:00:00.5Z"), "instant: .5");
    is_int(1767268800123456LL, instant("2026-01-01T12:00:00.123456Z"), "instant: microseconds");
    is_int(1767268800123456LL, instant("2026-01-01T12:00:00.1234569999Z"),
           "instant: digits past the microsecond are cut");
    is_int(951782400000000LL, instant("2000-02-29T00:00:00Z"), "instant: 2000-02-29 (leap)");
    is_int(-1, instant("1900-02-29T00:00:00Z"), "instant: 1900-02-29 (not leap)");
    is_int(-1, instant("2025-02-29T00:00:00Z"), "instant: 2025-02-29");
    is_int(-1, instant("2026-04-31T00:00:00Z"), "instant: April 31");
    is_int(1483228800000000LL, instant("2016-12-31T23:59:60Z"), "instant: leap second 60");
    is_int(-1, instant("2026-01-01T12:00:61Z"), "instant: second 61");
    is_int(-1, instant("2026-01-01T24:00:00Z"), "instant: hour 24");
    is_int(-1, instant("2026-13-01T00:00:00Z"), "instant: month 13");
    is_int(-1, instant("2026-00-01T00:00:00Z"), "instant: month 0");
    is_int(-1, instant("2026-01-00T00:00:00Z"), "instant: day 0");
    is_int(-1, instant("0000-01-01T00:00:00Z"), "instant: year 0");
    is_int(-1, instant("2026-01-01T12:00:00"), "instant: no offset");
    is_int(-1, instant("2026-01-01 12:00:00Z"), "instant: space for T");
    is_int(-1, instant("2026-01-01"), "instant: a date");
    is_int(-1, instant("2026-01-01T12:00Z"), "instant: no seconds");
    is_int(-1, instant("2026-01-01T12:00:00.Z"), "instant: empty fraction");
    is_int(-1, instant("2026-01-01T12:00:00,5Z"), "instant: comma fraction");
    is_int(-1, instant("2026-01-01T12:00:00+0200"), "instant: offset without colon");
    is_int(-1, instant("2026-01-01T12:00:00+24:00"), "instant: offset hour 24");
    is_int(-1, instant("2026-01-01T12:00:00+02:60"), "instant: offset minute 60");
    is_int(-1, instant("2026-01-01T12:00:00Zjunk"), "instant: trailing text");
    is_int(-1, instant("2026-1-01T12:00:00Z"), "instant: one-digit month");
    is_int(-1, instant("+2026-01-01T12:00:00Z"), "instant: signed year");
    is_int(-1, instant(""), "instant: empty");
    is_int(-1, instant(NULL), "instant: NULL");
    instant_format(1767268800123456LL, t);
    is_string("2026-01-01T12:00:00.123456Z", t, "instant_format: µs, Z");
    instant_format(0, t);
    is_string("1970-01-01T00:00:00.000000Z", t, "instant_format: the epoch");
    instant_format(-1, t);
    is_string("1969-12-31T23:59:59.999999Z", t, "instant_format: before the epoch");
    instant_format(instant("9999-12-31T23:59:59.999999Z"), t);
    is_string("9999-12-31T23:59:59.999999Z", t, "instant_format: the last instant, round trip");
    instant_format(instant("2000-02-29T12:34:56+05:00"), t);
    is_string("2000-02-29T07:34:56.000000Z", t, "instant_format: leap day, in UTC");
}

static const char *create_with(const char *member)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"to\":\"+15551234567\",\"scriptId\":\"s\",%s}", member);
    return create(body);
}

static void test_section9_fields(void)
{
    is_string("", create_with("\"timezone\":\"America/Chicago\""), "timezone: a zone");
    ok(IN.has_timezone && strcmp(IN.timezone, "America/Chicago") == 0, "timezone kept");
    is_string("timezone", create_with("\"timezone\":\"Mars/Base\""), "timezone: unknown zone");
    is_string("timezone", create_with("\"timezone\":\"../../etc/passwd\""), "timezone: a path");
    is_string("timezone", create_with("\"timezone\":\"\""), "timezone: empty");
    is_string("timezone", create_with("\"timezone\":[]"), "timezone: not a string");
    is_string("", create_with("\"timezone\":null"), "timezone: null on create");
    ok(!IN.has_timezone, "timezone null on create: not given");

    is_string("",
              create_with("\"callingWindow\":{\"start\":\"09:00\",\"end\":\"20:00\","
                          "\"days\":[\"sun\",\"mon\"]}"),
              "callingWindow: valid");
    is_string("{\"start\":\"09:00\",\"end\":\"20:00\",\"days\":[\"mon\",\"sun\"]}", IN.window_json,
              "callingWindow: its normal form");
    is_int(9 * 3600, IN.window.start, "callingWindow: parsed start");
    is_string("callingWindow",
              create_with("\"callingWindow\":{\"start\":\"9am\",\"end\":\"20:00\"}"),
              "callingWindow: bad time");
    is_string(
        "callingWindow",
        create_with("\"callingWindow\":{\"start\":\"09:00\",\"end\":\"20:00\",\"days\":[\"xyz\"]}"),
        "callingWindow: unknown day");
    is_string("callingWindow",
              create_with("\"callingWindow\":{\"start\":\"09:00\",\"tz\":\"UTC\"}"),
              "callingWindow: unknown member");
    is_string("callingWindow", create_with("\"callingWindow\":[]"), "callingWindow: not an object");
    is_string("", create_with("\"callingWindow\":null"), "callingWindow: null on create");
    ok(!IN.has_window && IN.window_json == NULL, "callingWindow null on create: not given");

    is_string("", create_with("\"notBefore\":\"2026-01-01T12:00:00Z\""), "notBefore: valid");
    ok(IN.not_before.given && IN.not_before.set && IN.not_before.us == 1767268800000000LL,
       "notBefore parsed");
    is_string("notBefore", create_with("\"notBefore\":\"tomorrow\""), "notBefore: malformed");
    is_string("expiresAt", create_with("\"expiresAt\":12"), "expiresAt: a number");
    is_string("", create_with("\"expiresAt\":null"), "expiresAt: null on create");
    ok(!IN.expires_at.given, "expiresAt null on create: not given");
    is_string("notBefore,expiresAt,timezone",
              create_with("\"notBefore\":\"x\",\"expiresAt\":\"y\",\"timezone\":\"z\""),
              "every malformed field named");

    is_string("",
              patch("{\"timezone\":null,\"callingWindow\":null,\"notBefore\":null,"
                    "\"expiresAt\":null}"),
              "patch: every section 9 field null");
    ok(IN.has_timezone && IN.timezone[0] == '\0', "patch: timezone null clears");
    ok(IN.has_window && IN.window_json == NULL, "patch: callingWindow null clears");
    ok(IN.not_before.given && !IN.not_before.set, "patch: notBefore null clears");
    ok(IN.expires_at.given && !IN.expires_at.set, "patch: expiresAt null clears");
}

static const char *schedule(long long nb, long long ex, int nb_given, int ex_given, long long now)
{
    struct call_instant b = { nb_given, nb != 0, nb }, e = { ex_given, ex != 0, ex };
    problem_reset(&P);
    if (validate_schedule(&b, &e, ex_given, now, &P) == 0)
        return problem_failed(&P) ? "(rc 0 with a problem)" : "";
    return render(&P);
}

static void test_schedule(void)
{
    is_string("", schedule(0, 0, 0, 0, 100), "schedule: nothing set");
    is_string("", schedule(200, 300, 1, 1, 100), "schedule: notBefore < expiresAt, both ahead");
    is_string("expiresAt", schedule(300, 200, 1, 1, 100), "schedule: expiresAt before notBefore");
    is_string("expiresAt", schedule(300, 300, 1, 1, 100), "schedule: expiresAt = notBefore");
    is_string("expiresAt", schedule(0, 50, 0, 1, 100), "schedule: expiresAt in the past");
    is_string("expiresAt", schedule(0, 100, 0, 1, 100), "schedule: expiresAt now");
    is_string("", schedule(0, 50, 0, 0, 100), "schedule: a stored expiresAt that passed");
    is_string("notBefore", schedule(300, 200, 1, 0, 100),
              "schedule: a new notBefore after the stored expiresAt names notBefore");
    is_string("", schedule(50, 0, 1, 0, 100), "schedule: a notBefore in the past is fine");
}

/* DESIGN.md section 10: priority and eventsUrl on a call, the campaign
 * body, the retry bodies. */
static const char *campaign(const char *body, int *status)
{
    struct campaign_input ci;
    problem_reset(&P);
    int rc = validate_campaign(body, strlen(body), META_MAX, 100, &ci, &P);
    *status = P.status;
    campaign_input_free(&ci);
    return rc == 0 ? (problem_failed(&P) ? "(rc 0 with a problem)" : "") : render(&P);
}

static const char *retry(const char *body, int bulk)
{
    struct retry_input ri;
    problem_reset(&P);
    int rc = validate_retry(body, body ? strlen(body) : 0, bulk, 100, &ri, &P);
    retry_input_free(&ri);
    return rc == 0 ? (problem_failed(&P) ? "(rc 0 with a problem)" : "") : render(&P);
}

static void test_section10(void)
{
    int st = 0;
    is_string("", create("{\"to\":\"+15551234567\",\"scriptId\":\"s\",\"priority\":0}"),
              "priority 0");
    ok(IN.has_priority && IN.priority == 0, "priority kept");
    is_string("priority", create("{\"to\":\"+15551234567\",\"scriptId\":\"s\",\"priority\":10}"),
              "priority 10");
    is_string("priority", create("{\"to\":\"+15551234567\",\"scriptId\":\"s\",\"priority\":\"5\"}"),
              "priority as a string");
    is_string("",
              create("{\"to\":\"+15551234567\",\"scriptId\":\"s\","
                     "\"eventsUrl\":\"HTTPS://hooks.example/x?a=1\"}"),
              "eventsUrl https");
    is_string("eventsUrl",
              create("{\"to\":\"+15551234567\",\"scriptId\":\"s\","
                     "\"eventsUrl\":\"ftp://hooks.example/\"}"),
              "eventsUrl ftp");
    is_string("eventsUrl",
              create("{\"to\":\"+15551234567\",\"scriptId\":\"s\","
                     "\"eventsUrl\":\"http:///path\"}"),
              "eventsUrl without a host");
    is_string("eventsUrl",
              create("{\"to\":\"+15551234567\",\"scriptId\":\"s\","
                     "\"eventsUrl\":\"http://a b/\"}"),
              "eventsUrl with a space");
    is_string("eventsUrl", patch("{\"eventsUrl\":\"http://a.example/\"}"),
              "eventsUrl: not on PATCH");
    is_string("", patch("{\"priority\":3}"), "PATCH priority");

    is_string("", campaign("{\"name\":\"n\",\"scriptId\":\"s\"}", &st), "campaign: minimal");
    is_string("",
              campaign("{\"name\":\"n\",\"scriptId\":\"s\",\"calls\":[],\"maxConcurrent\":3,"
                       "\"callsPerSecond\":0.5,\"priority\":9,\"maxAttempts\":4,"
                       "\"retry\":{\"busy\":\"5m\",\"failed\":\"backoff\",\"timeout\":\"never\"},"
                       "\"eventsUrl\":\"http://e.example/\",\"metadata\":{}}",
                       &st),
              "campaign: every setting");
    is_string("name,scriptId", campaign("{}", &st), "campaign: name and scriptId required");
    is_string("colour", campaign("{\"name\":\"n\",\"scriptId\":\"s\",\"colour\":1}", &st),
              "campaign: unknown field");
    is_string("retry,retry",
              campaign("{\"name\":\"n\",\"scriptId\":\"s\",\"retry\":{\"busy\":\"500ms\","
                       "\"sunny\":\"5m\"}}",
                       &st),
              "campaign: retry below 1 s and an unknown outcome");
    is_string("calls", campaign("{\"name\":\"n\",\"scriptId\":\"s\",\"calls\":{}}", &st),
              "campaign: calls not an array");
    is_string("name", campaign("{\"name\":\"\",\"scriptId\":\"s\"}", &st), "campaign: empty name");

    is_string("", retry(NULL, 0), "retry: no body");
    is_string("", retry("{\"maxAttempts\":2}", 0), "retry: maxAttempts");
    is_string("filter", retry("{\"maxAttempts\":2}", 1), "bulk: filter required");
    is_string("",
              retry("{\"filter\":{\"status\":\"EXPIRED\",\"campaignId\":\"" UUID_A
                    "\",\"lastError\":\"x\",\"createdBefore\":\"2026-01-01T00:00:00Z\"},"
                    "\"limit\":10000}",
                    1),
              "bulk: every filter");
    is_string(
        "filter.status,filter.campaignId,limit",
        retry("{\"filter\":{\"status\":\"COMPLETED\",\"campaignId\":\"x\"},\"limit\":10001}", 1),
        "bulk: a live status, a bad id, limit over 10 000");
    is_string("notBefore", retry("{\"filter\":{},\"notBefore\":\"x\"}", 1), "bulk: no notBefore");
}

int main(void)
{
    problem_init(&P);
    test_problem();
    test_create_valid();
    test_to();
    test_script_id();
    test_metadata();
    test_body_shape();
    test_many_errors();
    test_patch();
    test_uuid_status();
    test_list_query();
    test_cursor();
    test_hash();
    test_idempotency_key();
    test_auth();
    test_instant();
    test_section9_fields();
    test_schedule();
    test_section10();
    problem_reset(&P);
    call_input_free(&IN);
    json_decref(doc);
    return done_testing();
}
