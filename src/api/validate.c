/*
 * validate.c — request validation for the call API (DESIGN.md section 4).
 *
 * Owns: the field rules for calls, the create/PATCH body checks, RFC 3339
 * instants, call ids, list query parsing and the keyset cursor format,
 * Idempotency-Key and the canonical body hash, and the Bearer API-key
 * check.  No clock and no global state; the zone check reads tzdata.
 */
/* strdup, strtok_r, strncasecmp under -std=c11 */
#define _POSIX_C_SOURCE 200809L

#include "api/validate.h"

#include "compliance/rules.h"

#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const statuses[] = { "PENDING",   "IN_PROGRESS", "COMPLETED", "FAILED",
                                        "CANCELLED", "SUPPRESSED",  "EXPIRED" };

/* ------------------------------------------------------------ fields ---- */

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* ^\+[1-9][0-9]{7,14}$ by hand: eight to fifteen digits after the '+'. */
static int is_e164(const char *s, size_t n)
{
    if (n < 9 || n > CALL_TO_MAX || s[0] != '+' || s[1] < '1' || s[1] > '9')
        return 0;
    for (size_t i = 2; i < n; i++)
        if (!is_digit(s[i]))
            return 0;
    return 1;
}

static int is_script_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

/* For messages: "must be a string, not an array". */
static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static void check_to(const json_t *v, struct call_input *out, struct problem *p)
{
    if (!json_is_string(v)) {
        problem_add_field(p, "to", "must be a string, not %s", json_kind(v));
        return;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!is_e164(s, n)) {
        problem_add_field(p, "to",
                          "must be an E.164 number: '+' and 8 to 15 digits, "
                          "the first not 0");
        return;
    }
    memcpy(out->to, s, n + 1);
    out->has_to = 1;
}

static void check_script_id(const json_t *v, struct call_input *out, struct problem *p)
{
    if (!json_is_string(v)) {
        problem_add_field(p, "scriptId", "must be a string, not %s", json_kind(v));
        return;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n < 1 || n > CALL_SCRIPT_ID_MAX) {
        problem_add_field(p, "scriptId", "must be 1 to %d characters long (is %zu)",
                          CALL_SCRIPT_ID_MAX, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_script_char(s[i])) {
            problem_add_field(p, "scriptId", "may contain only A-Z a-z 0-9 . _ : -");
            return;
        }
    }
    memcpy(out->script_id, s, n + 1);
    out->has_script_id = 1;
}

/* The limit is on the compact serialisation, the form we store and send
 * on, so whitespace in the request does not count against the client. */
static void check_metadata(const json_t *v, size_t max, int patch, struct call_input *out,
                           struct problem *p)
{
    if (json_is_null(v)) {
        out->has_metadata = patch; /* PATCH null clears; create null = absent */
        return;
    }
    if (!json_is_object(v)) {
        problem_add_field(p, "metadata", "must be a JSON object, not %s", json_kind(v));
        return;
    }
    char *text = json_dumps(v, JSON_COMPACT);
    if (!text) {
        p->oom = 1;
        return;
    }
    size_t n = strlen(text);
    if (n > max) {
        problem_add_field(p, "metadata", "must be at most %zu bytes as compact JSON (is %zu)", max,
                          n);
        free(text);
        return;
    }
    out->metadata = text;
    out->has_metadata = 1;
}


/* A zone of the system tzdata.  window_zone_valid's message quotes the
 * name back to the client (JSON-escaped by the problem renderer), which
 * is where it belongs; it is never logged. */
static void check_timezone(const json_t *v, int patch, struct call_input *out, struct problem *p)
{
    char why[WINDOW_ZONE_MAX + 128];
    if (json_is_null(v)) {
        out->has_timezone = patch;
        return;
    }
    if (!json_is_string(v)) {
        problem_add_field(p, "timezone", "must be an IANA time zone name, not %s", json_kind(v));
        return;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > WINDOW_ZONE_MAX || strlen(s) != n) {
        problem_add_field(p, "timezone", "must be an IANA time zone name of 1 to %d characters",
                          WINDOW_ZONE_MAX);
        return;
    }
    if (window_zone_valid(s, why, sizeof why) < 0) {
        problem_add_field(p, "timezone", "%s", why);
        return;
    }
    memcpy(out->timezone, s, n + 1);
    out->has_timezone = 1;
}

/* The window is kept parsed (for the rules) and in its normal form (to
 * store); only calls that have one pay for the JSON text. */
static void check_window(const json_t *v, int patch, struct call_input *out, struct problem *p)
{
    char why[256];
    if (json_is_null(v)) {
        out->has_window = patch;
        return;
    }
    if (rules_window_from_json(v, &out->window, why, sizeof why) < 0) {
        problem_add_field(p, "callingWindow", "%s", why);
        return;
    }
    json_t *norm = rules_window_to_json(&out->window);
    out->window_json = norm != NULL ? json_dumps(norm, JSON_COMPACT) : NULL;
    json_decref(norm);
    if (out->window_json == NULL) {
        p->oom = 1;
        return;
    }
    out->has_window = 1;
}

static void check_instant(const json_t *v, const char *field, struct call_instant *out,
                          struct problem *p)
{
    out->given = 1;
    if (json_is_null(v))
        return;
    if (!json_is_string(v) || validate_instant(json_string_value(v), &out->us) < 0 ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        problem_add_field(p, field,
                          "must be an RFC 3339 date-time with an offset, such as "
                          "\"2026-01-01T12:00:00Z\" or \"2026-01-01T09:00:00.5-03:00\"");
        return;
    }
    out->set = 1;
}

/* 0-9; null on create is the default (5), as if absent. */
static int check_priority(const json_t *v, int *out, struct problem *p)
{
    if (json_is_null(v)) {
        *out = CALL_PRIORITY_DEFAULT;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 9) {
        problem_add_field(p, "priority", "must be an integer from 0 to 9");
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

/* An http:// or https:// URL with a host, printable ASCII, no spaces:
 * where callorch POSTs the client's events (another scheme would be a
 * request to something that is not a web server). */
static void check_events_url(const json_t *v, char **out, struct problem *p)
{
    if (json_is_null(v))
        return;
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    size_t n = s != NULL ? json_string_length(v) : 0;
    size_t scheme = s == NULL                            ? 0
                    : strncasecmp(s, "http://", 7) == 0  ? 7
                    : strncasecmp(s, "https://", 8) == 0 ? 8
                                                         : 0;
    int ok = scheme > 0 && n > scheme && n <= EVENTS_URL_MAX && strlen(s) == n &&
             s[scheme] != '/' && s[scheme] != ':' && s[scheme] != '?' && s[scheme] != '#';
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f;
    if (!ok) {
        problem_add_field(p, "eventsUrl",
                          "must be an http:// or https:// URL with a host, at most %d characters",
                          EVENTS_URL_MAX);
        return;
    }
    if ((*out = strdup(s)) == NULL)
        p->oom = 1;
}

/* ----------------------------------------------------------- bodies ---- */

int validate_e164(const char *s)
{
    return s != NULL && is_e164(s, strlen(s));
}

int validate_call_id(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n < 1 || n > CALL_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

void call_input_free(struct call_input *in)
{
    free(in->metadata);
    free(in->window_json);
    free(in->events_url);
    memset(in, 0, sizeof *in);
}

/* Parse BODY into a JSON object, or record why not on field "body". */
static json_t *parse_body(const char *body, size_t len, struct problem *p)
{
    json_error_t err;
    json_t *root = json_loadb(body ? body : "", body ? len : 0,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!root) {
        problem_set(p, 400, "malformed JSON: %s at line %d, column %d", err.text, err.line,
                    err.column);
        problem_add_field(p, "body", "malformed JSON: %s at line %d, column %d", err.text, err.line,
                          err.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        problem_add_field(p, "body", "must be a JSON object, not %s", json_kind(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

/* Check every member in body order; unknown names are errors by name. */
static void check_members(json_t *root, size_t max_meta, int patch, struct call_input *out,
                          struct problem *p)
{
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "to") == 0)
            check_to(v, out, p);
        else if (strcmp(key, "scriptId") == 0)
            check_script_id(v, out, p);
        else if (strcmp(key, "metadata") == 0)
            check_metadata(v, max_meta, patch, out, p);
        else if (strcmp(key, "timezone") == 0)
            check_timezone(v, patch, out, p);
        else if (strcmp(key, "callingWindow") == 0)
            check_window(v, patch, out, p);
        else if (strcmp(key, "notBefore") == 0)
            check_instant(v, key, &out->not_before, p);
        else if (strcmp(key, "expiresAt") == 0)
            check_instant(v, key, &out->expires_at, p);
        else if (strcmp(key, "priority") == 0)
            out->has_priority = check_priority(v, &out->priority, p) == 0;
        else if (strcmp(key, "eventsUrl") == 0 && !patch)
            check_events_url(v, &out->events_url, p);
        else
            problem_add_field(p, key, "unknown field");
    }
}

/* The checks of a create (or, PATCH, a change) on the parsed ROOT. */
static int validate_root(const json_t *root, size_t max_meta, int patch, int require_script,
                         struct call_input *out, struct problem *p)
{
    memset(out, 0, sizeof *out);
    check_members((json_t *)root, max_meta, patch, out, p);
    if (!patch && !json_object_get(root, "to"))
        problem_add_field(p, "to", "is required");
    if (!patch && require_script && !json_object_get(root, "scriptId"))
        problem_add_field(p, "scriptId", "is required");
    if (patch && !problem_failed(p) && json_object_size(root) == 0)
        problem_add_field(p, "body", "no field to change");
    /* on create, null is "not given": only a PATCH clears */
    out->not_before.given &= patch | out->not_before.set;
    out->expires_at.given &= patch | out->expires_at.set;
    if (p->oom && p->status != 500)
        problem_set(p, 500, "out of memory");
    if (!problem_failed(p))
        return 0;
    call_input_free(out);
    return -1;
}

int validate_call_object(const struct json_t *obj, size_t max_metadata_bytes, int require_script,
                         struct call_input *out, struct problem *p)
{
    if (!json_is_object(obj)) {
        memset(out, 0, sizeof *out);
        problem_add_field(p, "body", "must be a JSON object, not %s", json_kind(obj));
        return -1;
    }
    return validate_root(obj, max_metadata_bytes, 0, require_script, out, p);
}

/* Shared body of validate_create() and validate_patch(). */
static int validate_call(const char *body, size_t len, size_t max_meta, int patch,
                         struct call_input *out, struct problem *p)
{
    memset(out, 0, sizeof *out);
    json_t *root = parse_body(body, len, p);
    if (!root)
        return -1;
    int rc = validate_root(root, max_meta, patch, 1, out, p);
    json_decref(root);
    return rc;
}

int validate_create(const char *body, size_t len, size_t max_metadata_bytes, struct call_input *out,
                    struct problem *p)
{
    return validate_call(body, len, max_metadata_bytes, 0, out, p);
}

int validate_patch(const char *body, size_t len, size_t max_metadata_bytes, struct call_input *out,
                   struct problem *p)
{
    return validate_call(body, len, max_metadata_bytes, 1, out, p);
}


/* ---------------------------------------------------------- instants ---- */

/* N digits at S as a number, or -1. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int days_in_month(int y, int m)
{
    static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : mdays[m - 1];
}

/* Days from 1970-01-01 to Y-M-D, proleptic Gregorian (Howard Hinnant's
 * days_from_civil): no timegm(), no TZ. */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* ".fff…" at *S: microseconds (truncated past six digits), S moved on. */
static int fraction_us(const char **s, int64_t *us)
{
    const char *r = *s;
    int64_t v = 0;
    int n = 0;
    if (*r != '.')
        return 0;
    for (r++; is_digit(*r); r++, n++)
        if (n < 6)
            v = v * 10 + (*r - '0');
    if (n == 0)
        return -1;
    for (; n < 6; n++)
        v *= 10;
    *us = v;
    *s = r;
    return 0;
}

/* "Z" or "+HH:MM"/"-HH:MM" at S, the whole rest: the offset in seconds
 * east of UTC. */
static int offset_secs(const char *s, int *secs)
{
    if ((s[0] == 'Z' || s[0] == 'z') && s[1] == '\0') {
        *secs = 0;
        return 0;
    }
    if ((s[0] != '+' && s[0] != '-') || s[3] != ':' || strlen(s) != 6)
        return -1;
    int h = digits(s + 1, 2), m = digits(s + 4, 2);
    if (h < 0 || h > 23 || m < 0 || m > 59)
        return -1;
    *secs = (s[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return 0;
}

int validate_instant(const char *s, int64_t *us)
{
    int64_t frac = 0;
    int off;
    if (s == NULL || strlen(s) < 20 || s[4] != '-' || s[7] != '-' ||
        (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':')
        return -1;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h < 0 || h > 23 ||
        mi < 0 || mi > 59 || sec < 0 || sec > 60)
        return -1;
    const char *rest = s + 19;
    if (fraction_us(&rest, &frac) < 0 || offset_secs(rest, &off) < 0)
        return -1;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off;
    *us = t * 1000000 + frac;
    return 0;
}

/* Days since 1970-01-01 back to a date (civil_from_days). */
static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

void instant_format(int64_t us, char out[INSTANT_TEXT_MAX])
{
    int64_t secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    int64_t frac = us - secs * 1000000;
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t sod = secs - days * 86400;
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    snprintf(out, INSTANT_TEXT_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", y, m, d,
             (int)(sod / 3600), (int)(sod % 3600 / 60), (int)(sod % 60), (int)frac);
}

int validate_schedule(const struct call_instant *not_before, const struct call_instant *expires_at,
                      int given_expires, int64_t now_us, struct problem *p)
{
    if (!expires_at->set)
        return 0;
    const char *field = given_expires || !not_before->given ? "expiresAt" : "notBefore";
    if (not_before->set && expires_at->us <= not_before->us)
        problem_add_field(p, field, "expiresAt must be after notBefore");
    else if (given_expires && expires_at->us <= now_us)
        problem_add_field(p, "expiresAt", "is already in the past");
    return problem_failed(p) ? -1 : 0;
}

/* -------------------------------------------------------- ids, status ---- */

int validate_uuid(const char *s)
{
    if (!s || strlen(s) != UUID_LEN)
        return 0;
    for (int i = 0; i < UUID_LEN; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return 0;
    }
    return 1;
}

const char *validate_status(const char *s)
{
    for (size_t i = 0; s && i < sizeof statuses / sizeof statuses[0]; i++)
        if (strcmp(s, statuses[i]) == 0)
            return statuses[i];
    return NULL;
}

/* ------------------------------------------------------------ cursor ---- */

/* Longest raw cursor: 19 digits of INT64_MAX, ':', a uuid. */
#define CURSOR_RAW_MAX (19 + 1 + UUID_LEN)

int cursor_encode(int64_t created_us, const char *uuid, char *out, size_t outlen)
{
    char raw[CURSOR_RAW_MAX + 1];
    unsigned char b64[4 * ((CURSOR_RAW_MAX + 2) / 3) + 1];
    if (created_us < 0 || created_us >= CURSOR_US_LIMIT || !validate_uuid(uuid))
        return -1;
    int n = snprintf(raw, sizeof raw, "%lld:%s", (long long)created_us, uuid);
    int m = EVP_EncodeBlock(b64, (const unsigned char *)raw, n);
    while (m > 0 && b64[m - 1] == '=')
        m--; /* base64url: no padding */
    if ((size_t)m >= outlen)
        return -1;
    for (int i = 0; i < m; i++)
        out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
    out[m] = '\0';
    return 0;
}

/* Undo the base64url of S into RAW (NUL-terminated); -1 if it is not. */
static int cursor_unwrap(const char *s, char raw[CURSOR_RAW_MAX + 1])
{
    unsigned char b64[CURSOR_BUF + 4];
    unsigned char bin[CURSOR_BUF];
    size_t n = strlen(s);
    if (n == 0 || n >= CURSOR_BUF || n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
              c == '_'))
            return -1;
        b64[i] = c == '-' ? '+' : c == '_' ? '/' : (unsigned char)c;
    }
    size_t pad = (4 - n % 4) % 4;
    memset(b64 + n, '=', pad);
    int m = EVP_DecodeBlock(bin, b64, (int)(n + pad));
    /* EVP_DecodeBlock counts padding as zero bytes; take them back off. */
    if (m < 0 || (size_t)m < pad || (size_t)m - pad > CURSOR_RAW_MAX)
        return -1;
    m -= (int)pad;
    if (memchr(bin, '\0', (size_t)m))
        return -1;
    memcpy(raw, bin, (size_t)m);
    raw[m] = '\0';
    return 0;
}

/* "<digits>:<uuid>" into its parts; -1 if RAW has any other shape. */
static int cursor_split(const char *raw, int64_t *created_us, char uuid[UUID_LEN + 1])
{
    const char *colon = strchr(raw, ':');
    size_t nd = colon ? (size_t)(colon - raw) : 0;
    if (nd == 0 || nd > 19 || !validate_uuid(colon + 1))
        return -1;
    unsigned long long v = 0;
    for (size_t i = 0; i < nd; i++) {
        if (!is_digit(raw[i]))
            return -1;
        v = v * 10 + (unsigned)(raw[i] - '0'); /* 19 digits fit in 64 bits */
    }
    if (v > INT64_MAX)
        return -1;
    *created_us = (int64_t)v;
    memcpy(uuid, colon + 1, UUID_LEN + 1);
    return 0;
}

int cursor_decode(const char *cursor, int64_t *created_us, char uuid[UUID_LEN + 1])
{
    char raw[CURSOR_RAW_MAX + 1];
    char again[CURSOR_BUF];
    int64_t t;
    char id[UUID_LEN + 1];
    if (!cursor || cursor_unwrap(cursor, raw) != 0 || cursor_split(raw, &t, id) != 0)
        return -1;
    /* Only what we produce: no leading zeros, no stray bits in the last
     * base64 character, so one position has exactly one cursor. */
    if (cursor_encode(t, id, again, sizeof again) != 0 || strcmp(again, cursor) != 0)
        return -1;
    *created_us = t;
    memcpy(uuid, id, UUID_LEN + 1);
    return 0;
}

/* ------------------------------------------------------- list query ---- */

static int hex_value(char c)
{
    if (is_digit(c))
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

/*
 * Percent-decode S in place ('+' is a space, as HTML forms send it).
 * Written here rather than curl_easy_unescape(), which keeps a malformed
 * "%zz" as it is and leaves '+' alone; we want both to be definite.
 * Returns -1 on a malformed escape or an encoded NUL.
 */
static int percent_decode(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r == '+') {
            *w++ = ' ';
        } else if (*r != '%') {
            *w++ = *r;
        } else if (is_hex(r[1]) && is_hex(r[2])) {
            char c = (char)(hex_value(r[1]) * 16 + hex_value(r[2]));
            if (c == '\0')
                return -1;
            *w++ = c;
            r += 2;
        } else {
            return -1;
        }
    }
    *w = '\0';
    return 0;
}

/* A decimal integer in [min, max], digits only; -1 otherwise. */
static int parse_int(const char *s, int min, int max, int *out)
{
    long long v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (!is_digit(*s))
            return -1;
        v = v * 10 + (*s - '0');
        if (v > max)
            return -1;
    }
    if (v < min)
        return -1;
    *out = (int)v;
    return 0;
}

enum { Q_STATUS, Q_PAGE, Q_PAGE_SIZE, Q_CURSOR, Q_COUNT };
static const char *const query_names[Q_COUNT] = { "status", "page", "pageSize", "cursor" };

/* Apply one known parameter's value to OUT. */
static void query_value(int which, const char *value, struct list_query *out, struct problem *p)
{
    const char *name = query_names[which];
    switch (which) {
    case Q_STATUS:
        out->status = validate_status(value);
        if (!out->status)
            problem_add_field(p, name,
                              "must be one of PENDING, IN_PROGRESS, COMPLETED, "
                              "FAILED, CANCELLED, SUPPRESSED, EXPIRED");
        break;
    case Q_PAGE:
        out->has_page = 1;
        if (parse_int(value, 1, INT_MAX, &out->page) != 0)
            problem_add_field(p, name, "must be an integer from 1 to %d", INT_MAX);
        break;
    case Q_PAGE_SIZE:
        if (parse_int(value, 1, LIST_PAGE_SIZE_MAX, &out->page_size) != 0)
            problem_add_field(p, name, "must be an integer from 1 to %d", LIST_PAGE_SIZE_MAX);
        break;
    default:
        out->has_cursor = 1;
        if (cursor_decode(value, &out->cursor_created_us, out->cursor_id) != 0)
            problem_add_field(p, name, "is not a cursor returned as nextCursor");
        break;
    }
}

/* One "name=value" pair (modified in place). */
static void query_pair(char *pair, int seen[Q_COUNT], struct list_query *out, struct problem *p)
{
    char *eq = strchr(pair, '=');
    char *value = eq ? eq + 1 : pair + strlen(pair);
    if (eq)
        *eq = '\0';
    if (percent_decode(pair) != 0) {
        problem_add_field(p, "query", "malformed percent-encoding in a parameter name");
        return;
    }
    int which = 0;
    while (which < Q_COUNT && strcmp(pair, query_names[which]) != 0)
        which++;
    if (which == Q_COUNT) {
        problem_add_field(p, pair, "unknown query parameter");
    } else if (seen[which]++) {
        if (seen[which] == 2) /* one error however often repeated */
            problem_add_field(p, pair, "repeated parameter");
    } else if (percent_decode(value) != 0) {
        problem_add_field(p, pair, "malformed percent-encoding");
    } else if (!*value) {
        problem_add_field(p, pair, "must not be empty");
    } else {
        query_value(which, value, out, p);
    }
}

int validate_list_query(const char *query, struct list_query *out, struct problem *p)
{
    int seen[Q_COUNT] = { 0 };
    memset(out, 0, sizeof *out);
    out->page = 1;
    out->page_size = LIST_PAGE_SIZE_DEFAULT;
    char *copy = strdup(query ? query : "");
    if (!copy) {
        problem_set(p, 500, "out of memory");
        p->oom = 1;
        return -1;
    }
    char *save = NULL;
    for (char *pair = strtok_r(copy, "&", &save); pair; pair = strtok_r(NULL, "&", &save))
        query_pair(pair, seen, out, p);
    free(copy);
    /* A cursor already says where the page starts; an offset beside it
     * would be ambiguous, so refuse rather than silently pick one. */
    if (seen[Q_PAGE] && seen[Q_CURSOR])
        problem_add_field(p, "page", "cannot be combined with cursor");
    if (p->oom && p->status != 500)
        problem_set(p, 500, "out of memory");
    return problem_failed(p) ? -1 : 0;
}

/* ------------------------------------------------------- idempotency ---- */

static void to_hex(const unsigned char *bin, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[bin[i] >> 4];
        hex[2 * i + 1] = digits[bin[i] & 15];
    }
    hex[2 * n] = '\0';
}

int request_hash(const char *body, size_t len, char out_hex[REQUEST_HASH_HEX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    json_t *root = json_loadb(body ? body : "", body ? len : 0,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    if (!root)
        return -1;
    char *canon = json_dumps(root, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(root);
    if (!canon)
        return -1;
    int rc = EVP_Digest(canon, strlen(canon), md, &mdlen, EVP_sha256(), NULL);
    free(canon);
    if (rc != 1 || mdlen != 32)
        return -1;
    to_hex(md, mdlen, out_hex);
    return 0;
}

int validate_idempotency_key(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > IDEMPOTENCY_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

/* ---------------------------------------------------------------- auth ---- */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The token of "Bearer <token>" as [*start, *start + *len); -1 if absent. */
static int bearer_token(const char *h, const char **start, size_t *len)
{
    while (is_ows(*h))
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || !is_ows(h[6]))
        return -1;
    h += 6;
    while (is_ows(*h))
        h++;
    size_t n = strlen(h);
    while (n > 0 && is_ows(h[n - 1]))
        n--;
    for (size_t i = 0; i < n; i++)
        if (is_ows(h[i]))
            return -1;
    *start = h;
    *len = n;
    return n > 0 ? 0 : -1;
}

static int sha256(const void *data, size_t n, unsigned char md[32])
{
    unsigned int mdlen = 0;
    return EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32 ? 0 : -1;
}

/*
 * Compare SHA-256 digests rather than the strings: both sides then have the
 * same length, so CRYPTO_memcmp() runs in the same time whatever the token,
 * and neither the length of a key nor which key matched leaks through an
 * early exit.  Every key is compared even after a match.
 */
int auth_bearer_ok(const char *authorization, char *const *keys, int nkeys)
{
    const char *tok;
    size_t toklen;
    unsigned char want[32], got[32];
    int match = 0;
    if (nkeys <= 0)
        return 1;
    if (!authorization || bearer_token(authorization, &tok, &toklen) != 0 ||
        sha256(tok, toklen, got) != 0)
        return 0;
    for (int i = 0; i < nkeys; i++) {
        if (!keys[i] || !keys[i][0] || sha256(keys[i], strlen(keys[i]), want) != 0)
            continue;
        match |= CRYPTO_memcmp(want, got, sizeof got) == 0;
    }
    return match;
}

/* -------------------------------------------------------- campaigns ---- */

/* The [retry] keys (DESIGN.md section 9): a campaign's "retry" names the
 * same outcomes, lower case as in callorch.ini. */
static const char *const retry_outcomes[] = { "failed",    "busy",     "no_answer",
                                              "voicemail", "rejected", "invalid_number",
                                              "timeout" };

/* "never", "backoff" or a duration from 1s to 3650d, as [retry] takes
 * ("90s", "10m", "1.5h", "2d"; a bare number is seconds).  Parsed here
 * rather than by config.c so that validation stays free of the config
 * module (the fuzzers link validate.c alone). */
static int retry_rule_ok(const char *v)
{
    static const struct {
        const char *name;
        double mult;
    } units[] = {
        { "", 1 }, { "ms", 0.001 }, { "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 }
    };
    char *end;
    if (strcmp(v, "never") == 0 || strcmp(v, "backoff") == 0)
        return 1;
    if (!is_digit(v[0]))
        return 0;
    double d = strtod(v, &end);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end, units[i].name) == 0)
            return d * units[i].mult >= 1 && d * units[i].mult <= 3650 * 86400.;
    return 0;
}

static void check_retry(const json_t *v, char **out, struct problem *p)
{
    const char *key;
    json_t *rule;
    if (json_is_null(v))
        return;
    if (!json_is_object(v)) {
        problem_add_field(p, "retry", "must be an object of outcome rules, not %s", json_kind(v));
        return;
    }
    json_object_foreach((json_t *)v, key, rule)
    {
        size_t i = 0;
        while (i < sizeof retry_outcomes / sizeof *retry_outcomes && strcmp(key, retry_outcomes[i]))
            i++;
        if (i == sizeof retry_outcomes / sizeof *retry_outcomes)
            problem_add_field(p, "retry",
                              "\"%s\" is not an outcome: failed, busy, no_answer, "
                              "voicemail, rejected, invalid_number or timeout",
                              key);
        else if (!json_is_string(rule) || !retry_rule_ok(json_string_value(rule)))
            problem_add_field(p, "retry",
                              "%s: must be \"never\", \"backoff\" or a duration from 1s "
                              "to 3650d such as \"10m\"",
                              key);
    }
    if (!problem_failed(p) && (*out = json_dumps(v, JSON_COMPACT)) == NULL)
        p->oom = 1;
}

/* An integer member in [MIN, MAX]; null leaves *OUT. */
static void check_int_range(const json_t *v, const char *field, long long min, long long max,
                            long long *out, struct problem *p)
{
    if (json_is_null(v))
        return;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        problem_add_field(p, field, "must be an integer from %lld to %lld", min, max);
        return;
    }
    *out = json_integer_value(v);
}

static void check_name(const json_t *v, struct campaign_input *out, struct problem *p)
{
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    int ok = n >= 1 && n <= CAMPAIGN_NAME_MAX && strlen(s) == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)s[i] >= 0x20 && s[i] != 0x7f;
    if (!ok) {
        problem_add_field(p, "name", "must be a string of 1 to %d bytes without control characters",
                          CAMPAIGN_NAME_MAX);
        return;
    }
    memcpy(out->name, s, n + 1);
}

static void check_cps(const json_t *v, double *out, struct problem *p)
{
    if (json_is_null(v))
        return;
    double d = json_is_number(v) ? json_number_value(v) : -1;
    if (!(d > 0 && d <= 100000)) {
        problem_add_field(p, "callsPerSecond", "must be a number above 0, at most 100000");
        return;
    }
    *out = d;
}

/* The calls array: at most CAMPAIGN_MAX_CALLS (else 413, named). */
static void check_calls(const json_t *v, const json_t **out, struct problem *p)
{
    if (!json_is_array(v)) {
        problem_add_field(p, "calls", "must be an array of calls, not %s", json_kind(v));
        return;
    }
    if (json_array_size(v) > CAMPAIGN_MAX_CALLS) {
        problem_add_field(p, "calls", "at most %d calls per request (has %zu)", CAMPAIGN_MAX_CALLS,
                          json_array_size(v));
        problem_set(p, 413, "at most %d calls per request", CAMPAIGN_MAX_CALLS);
        return;
    }
    *out = v;
}

/* The members shared with a call (scriptId, callingWindow, notBefore,
 * expiresAt, metadata, priority, eventsUrl) go through its checkers. */
static int campaign_call_member(const char *key, const json_t *v, size_t max_meta,
                                struct call_input *tmp, struct problem *p)
{
    if (strcmp(key, "scriptId") == 0)
        check_script_id(v, tmp, p);
    else if (strcmp(key, "callingWindow") == 0)
        check_window(v, 0, tmp, p);
    else if (strcmp(key, "notBefore") == 0)
        check_instant(v, key, &tmp->not_before, p);
    else if (strcmp(key, "expiresAt") == 0)
        check_instant(v, key, &tmp->expires_at, p);
    else if (strcmp(key, "metadata") == 0)
        check_metadata(v, max_meta, 0, tmp, p);
    else if (strcmp(key, "priority") == 0)
        tmp->has_priority = check_priority(v, &tmp->priority, p) == 0;
    else if (strcmp(key, "eventsUrl") == 0)
        check_events_url(v, &tmp->events_url, p);
    else
        return 0;
    return 1;
}

static void campaign_members(const json_t *root, size_t max_meta, struct call_input *tmp,
                             struct campaign_input *out, struct problem *p)
{
    const char *key;
    json_t *v;
    long long n;
    json_object_foreach((json_t *)root, key, v)
    {
        if (campaign_call_member(key, v, max_meta, tmp, p))
            continue;
        if (strcmp(key, "name") == 0) {
            check_name(v, out, p);
        } else if (strcmp(key, "calls") == 0) {
            check_calls(v, &out->calls, p);
        } else if (strcmp(key, "maxConcurrent") == 0) {
            check_int_range(v, key, 1, 1000000, &out->max_concurrent, p);
        } else if (strcmp(key, "callsPerSecond") == 0) {
            check_cps(v, &out->calls_per_second, p);
        } else if (strcmp(key, "maxAttempts") == 0) {
            n = 0;
            check_int_range(v, key, 1, CAMPAIGN_MAX_ATTEMPTS_MAX, &n, p);
            out->max_attempts = (int)n;
        } else if (strcmp(key, "retry") == 0) {
            check_retry(v, &out->retry_json, p);
        } else {
            problem_add_field(p, key, "unknown field");
        }
    }
}

/* Move what the call checkers found in TMP into OUT. */
static void campaign_take(struct call_input *tmp, struct campaign_input *out)
{
    memcpy(out->script_id, tmp->script_id, sizeof out->script_id);
    out->has_priority = tmp->has_priority;
    out->priority = tmp->priority;
    out->has_window = tmp->window_json != NULL;
    out->window = tmp->window;
    out->window_json = tmp->window_json;
    out->not_before = tmp->not_before;
    out->expires_at = tmp->expires_at;
    out->events_url = tmp->events_url;
    out->metadata = tmp->metadata;
    tmp->window_json = tmp->events_url = tmp->metadata = NULL;
}

int validate_campaign(const char *body, size_t len, size_t max_metadata_bytes, int64_t now_us,
                      struct campaign_input *out, struct problem *p)
{
    struct call_input tmp;
    memset(out, 0, sizeof *out);
    memset(&tmp, 0, sizeof tmp);
    json_t *root = parse_body(body, len, p);
    if (!root)
        return -1;
    out->root = root;
    campaign_members(root, max_metadata_bytes, &tmp, out, p);
    if (!json_object_get(root, "name"))
        problem_add_field(p, "name", "is required");
    if (!json_object_get(root, "scriptId"))
        problem_add_field(p, "scriptId", "is required");
    tmp.not_before.given &= tmp.not_before.set;
    tmp.expires_at.given &= tmp.expires_at.set;
    campaign_take(&tmp, out);
    call_input_free(&tmp);
    if (!problem_failed(p))
        validate_schedule(&out->not_before, &out->expires_at, 1, now_us, p);
    if (p->oom && p->status != 500)
        problem_set(p, 500, "out of memory");
    if (!problem_failed(p))
        return 0;
    campaign_input_free(out);
    return -1;
}

void campaign_input_free(struct campaign_input *in)
{
    json_decref(in->root);
    free(in->window_json);
    free(in->retry_json);
    free(in->events_url);
    free(in->metadata);
    memset(in, 0, sizeof *in);
}

int validate_campaign_calls(const char *body, size_t len, struct json_t **root,
                            const struct json_t **calls, struct problem *p)
{
    const char *key;
    json_t *v;
    *calls = NULL;
    if ((*root = parse_body(body, len, p)) == NULL)
        return -1;
    json_object_foreach(*root, key, v)
    {
        if (strcmp(key, "calls") == 0)
            check_calls(v, calls, p);
        else
            problem_add_field(p, key, "unknown field");
    }
    if (!problem_failed(p) && *calls == NULL)
        problem_add_field(p, "calls", "is required");
    return problem_failed(p) ? -1 : 0;
}

/* ------------------------------------------------------------ replay ---- */

/* The bulk filter: status, campaignId, lastError, createdBefore. */
static void check_filter(const json_t *f, struct retry_input *out, struct problem *p)
{
    const char *key;
    json_t *v;
    if (!json_is_object(f)) {
        problem_add_field(p, "filter", "must be an object, not %s", json_kind(f));
        return;
    }
    json_object_foreach((json_t *)f, key, v)
    {
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        if (strcmp(key, "status") == 0) {
            out->status = validate_status(s);
            if (out->status == NULL ||
                (strcmp(s, "FAILED") && strcmp(s, "EXPIRED") && strcmp(s, "SUPPRESSED"))) {
                out->status = NULL;
                problem_add_field(p, "filter.status", "must be FAILED, EXPIRED or SUPPRESSED");
            }
        } else if (strcmp(key, "campaignId") == 0) {
            if (!validate_uuid(s))
                problem_add_field(p, "filter.campaignId", "must be a campaign id (a UUID)");
            else
                snprintf(out->campaign_id, sizeof out->campaign_id, "%s", s);
            out->has_campaign = 1;
        } else if (strcmp(key, "lastError") == 0) {
            if (s == NULL || strlen(s) != json_string_length(v))
                problem_add_field(p, "filter.lastError", "must be a string");
            else if ((out->last_error = strdup(s)) == NULL)
                p->oom = 1;
        } else if (strcmp(key, "createdBefore") == 0) {
            check_instant(v, "filter.createdBefore", &out->created_before, p);
        } else {
            problem_add_field(p, key, "unknown field in filter");
        }
    }
}

int validate_retry(const char *body, size_t len, int bulk, int64_t now_us, struct retry_input *out,
                   struct problem *p)
{
    const char *key;
    json_t *v;
    long long n;
    memset(out, 0, sizeof *out);
    out->limit = CAMPAIGN_MAX_CALLS;
    if (!bulk && (body == NULL || len == 0))
        return 0; /* no body: the defaults */
    json_t *root = parse_body(body, len, p);
    if (!root)
        return -1;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "maxAttempts") == 0) {
            n = 0;
            check_int_range(v, key, 1, CAMPAIGN_MAX_ATTEMPTS_MAX, &n, p);
            out->max_attempts = (int)n;
        } else if (strcmp(key, "notBefore") == 0 && !bulk) {
            check_instant(v, key, &out->not_before, p);
        } else if (strcmp(key, "expiresAt") == 0 && !bulk) {
            check_instant(v, key, &out->expires_at, p);
        } else if (strcmp(key, "filter") == 0 && bulk) {
            check_filter(v, out, p);
        } else if (strcmp(key, "limit") == 0 && bulk) {
            n = out->limit;
            check_int_range(v, key, 1, CAMPAIGN_MAX_CALLS, &n, p);
            out->limit = (int)n;
        } else {
            problem_add_field(p, key, "unknown field");
        }
    }
    if (bulk && !json_object_get(root, "filter"))
        problem_add_field(p, "filter", "is required (use {} to retry every dead letter)");
    json_decref(root);
    if (!problem_failed(p))
        validate_schedule(&out->not_before, &out->expires_at, 1, now_us, p);
    if (p->oom && p->status != 500)
        problem_set(p, 500, "out of memory");
    if (!problem_failed(p))
        return 0;
    retry_input_free(out);
    return -1;
}

void retry_input_free(struct retry_input *in)
{
    free(in->last_error);
    in->last_error = NULL;
}
