/*
 * validate.h — request validation for the call API (DESIGN.md section 4).
 *
 * Owns: the rules for a call's fields (to, scriptId, metadata, the
 * section 9 timezone, callingWindow, notBefore, expiresAt, and the section
 * 10 priority and eventsUrl), the create and PATCH bodies, the campaign
 * body and its retry rules, the replay bodies (one call and bulk), RFC 3339 instants, call ids, the list query string
 * and its keyset cursor, the Idempotency-Key header and the body hash it
 * is checked against, and the Bearer API-key check.  No global state and
 * no clock (callers pass "now"); the only I/O is the zone check, which
 * looks the zone up in the system tzdata (compliance/window.h).  jansson
 * parses, OpenSSL libcrypto hashes, encodes base64 and compares in
 * constant time.
 *
 * Conventions: validators return 0 (valid, *out filled) or -1 (invalid:
 * the reasons are in the struct problem, status 400, one entry per field,
 * all of them rather than the first; status 500 with p->oom when memory
 * ran out).  Pass P empty (problem_init()): a problem already recorded
 * makes the validator fail too.  Predicates (validate_uuid,
 * validate_idempotency_key, auth_bearer_ok) return 1 for yes and 0 for
 * no — never test them for < 0.
 */
#ifndef CO_VALIDATE_H
#define CO_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "api/problem.h"
#include "compliance/window.h"

#define CALL_TO_MAX 16 /* '+' and at most 15 digits (E.164) */
#define CALL_SCRIPT_ID_MAX 128
#define UUID_LEN 36 /* 8-4-4-4-12 */
#define IDEMPOTENCY_KEY_MAX 255
#define LIST_PAGE_SIZE_DEFAULT 20
#define LIST_PAGE_SIZE_MAX 100
#define CURSOR_BUF 80       /* enough for any cursor_encode() output + NUL */
#define REQUEST_HASH_HEX 65 /* 64 hex digits + NUL */
#define INSTANT_TEXT_MAX 64 /* "YYYY-MM-DDTHH:MM:SS.ffffffZ" + NUL, with room */

/*
 * A validated create or PATCH body.  has_* says the field was given.
 * metadata is the object re-serialised as compact JSON (key order kept),
 * ready to store and to forward to the provider.  "metadata": null means
 * "no metadata": on create it is the same as leaving it out (has_metadata
 * 0); on PATCH it clears the stored metadata (has_metadata 1, metadata
 * NULL), as in JSON Merge Patch (RFC 7396).
 */
/* An optional instant of a call (notBefore, expiresAt).  GIVEN: the member
 * was in the body; SET: it held an instant (GIVEN and not SET: null, which
 * on PATCH clears the stored one). */
struct call_instant {
    int given;
    int set;
    int64_t us; /* µs since the epoch, when SET */
};

struct call_input {
    int has_to;
    char to[CALL_TO_MAX + 1];
    int has_script_id;
    char script_id[CALL_SCRIPT_ID_MAX + 1];
    int has_metadata;
    char *metadata; /* malloc'd compact JSON object, or NULL */
    /* DESIGN.md section 9; null is handled as for metadata */
    int has_timezone;
    char timezone[WINDOW_ZONE_MAX + 1]; /* a zone of the system tzdata; "" = null */
    int has_window;
    struct window window; /* parsed callingWindow, when window_json */
    char *window_json;    /* malloc'd normal form (rules_window_to_json), or NULL */
    struct call_instant not_before;
    struct call_instant expires_at;
    /* DESIGN.md section 10: priority (create and PATCH), eventsUrl (create) */
    int has_priority;
    int priority;     /* 0..9 when has_priority */
    char *events_url; /* malloc'd http(s) URL, or NULL */
};

#define CALL_PRIORITY_DEFAULT 5
#define EVENTS_URL_MAX 2048

struct json_t; /* jansson's */

/*
 * Validate one call object as POST /api/v1/calls takes it (the same
 * members and rules), for the items of a campaign: REQUIRE_SCRIPT 0 lets
 * scriptId out (the campaign's applies).  Returns 0 or -1 as the others.
 */
int validate_call_object(const struct json_t *obj, size_t max_metadata_bytes, int require_script,
                         struct call_input *out, struct problem *p);

/* Free what a call_input holds (safe on a zeroed or already freed one). */
void call_input_free(struct call_input *in);

/*
 * Validate a POST /api/v1/calls body: a JSON object with exactly the
 * members to (required), scriptId (required), metadata (optional).
 * Malformed JSON, invalid UTF-8, duplicate keys and nesting deeper than
 * jansson's JSON_PARSER_MAX_DEPTH give one error on field "body" with
 * jansson's text, line and column.  On -1, *out holds nothing to free.
 */
int validate_create(const char *body, size_t len, size_t max_metadata_bytes, struct call_input *out,
                    struct problem *p);

/*
 * Validate a PATCH /api/v1/calls/{id} body: the same members and rules,
 * all optional, at least one given (else "body": "no field to change").
 */
int validate_patch(const char *body, size_t len, size_t max_metadata_bytes, struct call_input *out,
                   struct problem *p);

/*
 * The rules between a call's instants, at NOW_US (µs since the epoch):
 * expiresAt must be after notBefore and not already past.  NOT_BEFORE and
 * EXPIRES_AT are the call's values after the change (on PATCH the stored
 * one where the body leaves it); GIVEN_EXPIRES says the body set expiresAt
 * (only a new expiresAt is refused for being past: a stored one that has
 * passed is the expiry sweep's business).  The error names expiresAt,
 * unless only notBefore was given, which then is what moved past it.
 */
int validate_schedule(const struct call_instant *not_before, const struct call_instant *expires_at,
                      int given_expires, int64_t now_us, struct problem *p);

/* An RFC 3339 date-time ("2026-01-01T12:00:00Z", "...T12:00:00.5+02:00";
 * 't', 'z' allowed, fraction any length, kept to the microsecond, leap
 * second 60 accepted as the next second's start) into µs since the epoch.
 * 0, or -1 for anything else (no offset, a space for T, a day that month
 * does not have, year 0000). */
int validate_instant(const char *s, int64_t *us);

/* US as "YYYY-MM-DDTHH:MM:SS.ffffffZ" (what PostgreSQL reads back exactly). */
void instant_format(int64_t us, char out[INSTANT_TEXT_MAX]);

/* 1 when S is a canonical 8-4-4-4-12 hex UUID (either case), else 0. */
int validate_uuid(const char *s);

/* 1 when S is an E.164 number as `to` takes it: ^\+[1-9][0-9]{7,14}$. */
int validate_e164(const char *s);

/* The longest provider callId (DESIGN.md section 5). */
#define CALL_ID_MAX 256

/* 1 when S is a valid provider callId: 1 to CALL_ID_MAX printable ASCII
 * characters (the start answer, the status lookup and the webhook). */
int validate_call_id(const char *s);

/* The canonical static name when S is exactly one of the call statuses
 * (PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, SUPPRESSED,
 * EXPIRED), else NULL. */
const char *validate_status(const char *s);

/* --- campaigns (DESIGN.md section 10) --------------------------------- */

#define CAMPAIGN_MAX_CALLS 10000 /* calls per create or add request */
#define CAMPAIGN_NAME_MAX 200
#define CAMPAIGN_MAX_ATTEMPTS_MAX 100

/*
 * A validated POST /api/v1/campaigns body.  CALLS is the "calls" array
 * (a reference into ROOT, NULL when absent); the items are validated one
 * by one with validate_call_object() by the caller, which applies these
 * settings as their defaults.  JSON texts are malloc'd compact JSON.
 */
struct campaign_input {
    struct json_t *root; /* the parsed body (owned) */
    const struct json_t *calls;
    char name[CAMPAIGN_NAME_MAX + 1]; /* 1 to CAMPAIGN_NAME_MAX bytes of UTF-8 */
    char script_id[CALL_SCRIPT_ID_MAX + 1];
    long long max_concurrent; /* 0: none */
    double calls_per_second;  /* 0: none */
    int has_priority;
    int priority;
    int max_attempts; /* 0: [dispatch] max_attempts */
    int has_window;
    struct window window;
    char *window_json;
    struct call_instant not_before;
    struct call_instant expires_at;
    char *retry_json;
    char *events_url;
    char *metadata;
};

/*
 * Validate a POST /api/v1/campaigns body (all but the items).  Unknown
 * members, wrong types and bad values are 400s by field; more than
 * CAMPAIGN_MAX_CALLS calls is a 413 naming "calls".  NOW_US: expiresAt
 * may not be past.
 */
int validate_campaign(const char *body, size_t len, size_t max_metadata_bytes, int64_t now_us,
                      struct campaign_input *out, struct problem *p);
void campaign_input_free(struct campaign_input *in);

/*
 * POST /api/v1/campaigns/{id}/calls: {"calls":[…]} and nothing else, at
 * most CAMPAIGN_MAX_CALLS (413).  *ROOT is the parsed body (the caller
 * json_decref()s it), *CALLS the array in it.
 */
int validate_campaign_calls(const char *body, size_t len, struct json_t **root,
                            const struct json_t **calls, struct problem *p);

/* The retry body of POST /api/v1/calls/{id}/retry (all optional; an
 * empty body is {}) and of POST /api/v1/calls/retry. */
struct retry_input {
    int max_attempts; /* 0: not given */
    struct call_instant not_before;
    struct call_instant expires_at;
    /* bulk only */
    const char *status; /* NULL or FAILED, EXPIRED, SUPPRESSED (static) */
    int has_campaign;
    char campaign_id[UUID_LEN + 1];
    char *last_error; /* malloc'd, or NULL */
    struct call_instant created_before;
    int limit;
};

int validate_retry(const char *body, size_t len, int bulk, int64_t now_us, struct retry_input *out,
                   struct problem *p);
void retry_input_free(struct retry_input *in);

/* GET /api/v1/calls query.  page and a cursor cannot be combined. */
struct list_query {
    const char *status;           /* NULL: every status; else validate_status() */
    int page;                     /* 1..INT_MAX, default 1 */
    int page_size;                /* 1..LIST_PAGE_SIZE_MAX, default 20 */
    int has_page;                 /* page= was given */
    int has_cursor;               /* cursor= was given: keyset paging */
    int64_t cursor_created_us;    /* createdAt of the last row seen, µs since epoch */
    char cursor_id[UUID_LEN + 1]; /* id of the last row seen */
};

/*
 * Parse QUERY (the part after '?', without it; NULL or "" for none).
 * Names and values are percent-decoded ('+' is a space).  Known parameters:
 * status, page, pageSize, cursor; an unknown, repeated, empty-valued or
 * badly encoded parameter is an error on that parameter.
 */
int validate_list_query(const char *query, struct list_query *out, struct problem *p);

/*
 * Keyset cursor: unpadded base64url of "<created_at µs>:<uuid>".  Encode
 * returns 0, or -1 for a time outside [0, CURSOR_US_LIMIT), a bad uuid or
 * a short buffer.  Decode returns 0 only for exactly what cursor_encode()
 * produces, so a forged time out of that range is not a cursor (400).
 */
/* 10000-01-01T00:00:00Z in µs since the epoch: every createdAt the daemon
 * writes is far below, and PostgreSQL's timestamp arithmetic on a larger
 * (forged) value fails with "out of range" instead of finding a page. */
#define CURSOR_US_LIMIT 253402300800000000LL

int cursor_encode(int64_t created_us, const char *uuid, char *out, size_t outlen);
int cursor_decode(const char *cursor, int64_t *created_us, char uuid[UUID_LEN + 1]);

/*
 * SHA-256, as 64 lowercase hex digits, of the canonical form of a JSON body
 * (keys sorted, compact), so bodies that differ only in whitespace or key
 * order hash the same.  Returns 0, or -1 when BODY is not JSON.
 */
int request_hash(const char *body, size_t len, char out_hex[REQUEST_HASH_HEX]);

/* 1 when S is an acceptable Idempotency-Key: 1 to 255 printable ASCII
 * characters (0x20-0x7e), else 0. */
int validate_idempotency_key(const char *s);

/*
 * 1 when AUTHORIZATION ("Bearer <token>", scheme case-insensitive; the
 * header value, may be NULL when absent) carries one of the NKEYS KEYS, else
 * 0.  Every key is compared, in constant time, whatever matches; NKEYS 0
 * means client auth is off and always answers 1.
 */
int auth_bearer_ok(const char *authorization, char *const *keys, int nkeys);

#endif
