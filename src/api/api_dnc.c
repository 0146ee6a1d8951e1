/*
 * api_dnc.c — the do-not-call list (DESIGN.md section 9): PUT, GET and
 * DELETE /api/v1/dnc/{e164}, GET /api/v1/dnc (keyset paging by number) and
 * POST /api/v1/dnc/import (text/csv).
 *
 * Owns: the rules of the requests (the path number, the PUT body, the
 * list's query, the CSV lines) and turning each into one store statement
 * (store/dnc.h) and its result into the answer.
 *
 * A path number that is not E.164 answers 400 naming "number" (a number is
 * the client's own value, not an opaque id: saying what is wrong with it
 * helps more than a 404).  '+' may be sent as is or as %2B.
 *
 * The CSV: one "number[,reason]" per line (LF or CRLF); blank lines are
 * skipped; a first line "number" or "number,reason" is a header (after a
 * UTF-8 byte order mark, if any).  The
 * reason is everything after the first comma, trimmed, so it may hold
 * commas.  Quoted fields are refused line by line ('"' anywhere in a line
 * makes it invalid with a message saying so): no unquoting is guessed.
 * Every valid line goes to the database in ONE statement; at most
 * DNC_INVALID_LISTED invalid lines are listed in the answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "api/api.h"
#include "api/validate.h"
#include "store/dnc.h"
#include "util/strbuf.h"

#define DNC_NUMBER_BUF (CALL_TO_MAX + 1)
#define DNC_REASON_MAX 500 /* characters; sql/007_dnc.sql checks it too */
#define DNC_SOURCE_API "api"
#define DNC_SOURCE_IMPORT "import"
#define DNC_PUT_RETRIES 3

#define E164_MESSAGE "must be an E.164 number: '+' and 8 to 15 digits, the first not 0"

struct dnc_req {
    struct api *api;
    struct http_request *req;
    char number[DNC_NUMBER_BUF];
    char *reason;
    int retries;
};

static void answer_problem(struct http_request *req, struct problem *p)
{
    api_problem(req, p);
    problem_reset(p);
}

static void answer_simple(struct http_request *req, int status, const char *field, const char *msg)
{
    struct problem p;
    problem_init(&p);
    if (field != NULL)
        problem_add_field(&p, field, "%s", msg);
    else
        problem_set(&p, status, "%s", msg);
    p.status = status;
    answer_problem(req, &p);
}

static void refused(struct dnc_req *r)
{
    api_unavailable(r->req, API_DB_UNREACHABLE);
    free(r->reason);
    free(r);
}

/* The path segment RAW as an E.164 number in OUT ('+' or %2B first);
 * answers 400 itself and returns -1 when it is none. */
static int path_number(struct http_request *req, const char *raw, char out[DNC_NUMBER_BUF])
{
    const char *digits = raw[0] == '+' ? raw + 1 : strncasecmp(raw, "%2B", 3) == 0 ? raw + 3 : NULL;
    if (digits != NULL && strlen(digits) < DNC_NUMBER_BUF - 1) {
        snprintf(out, DNC_NUMBER_BUF, "+%s", digits);
        if (validate_e164(out))
            return 0;
    }
    answer_simple(req, 400, "number", E164_MESSAGE " (e.g. /api/v1/dnc/+15551234567)");
    return -1;
}

static struct dnc_req *dnc_req_new(struct api *api, struct http_request *req, const char *number)
{
    struct dnc_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        api_internal_error(req, "dnc", "out of memory");
        return NULL;
    }
    r->api = api;
    r->req = req;
    if (number != NULL)
        snprintf(r->number, sizeof(r->number), "%s", number);
    return r;
}

static void not_listed(struct http_request *req, const char *number)
{
    struct problem p;
    problem_init(&p);
    problem_set(&p, 404, "%s is not on the do-not-call list", number);
    answer_problem(req, &p);
}

/* Characters of UTF-8 text S (jansson's strings are valid UTF-8). */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

void api_to_listed(struct http_request *req)
{
    struct problem p;
    problem_init(&p);
    problem_set(&p, 422, "the number is on the do-not-call list; no call to it is taken");
    problem_add_field(&p, "to",
                      "is on the do-not-call list (DELETE /api/v1/dnc/{number} "
                      "removes it)");
    p.status = 422;
    answer_problem(req, &p);
}

/* ------------------------------------------------------------------ put */

static void put_done(void *ctx, const struct store_err *e, enum store_dnc_put_result result,
                     const struct store_dnc_doc *doc);

static int put_submit(struct dnc_req *r)
{
    return store_dnc_put(r->api->pg, r->number, r->reason, DNC_SOURCE_API, put_done, r);
}

static void put_done(void *ctx, const struct store_err *e, enum store_dnc_put_result result,
                     const struct store_dnc_doc *doc)
{
    struct dnc_req *r = ctx;
    if (e != NULL) {
        api_store_failed(r->req, e, "dnc put");
    } else if (result == STORE_DNC_RACED) {
        /* a concurrent PUT and DELETE raced ours: look again */
        if (++r->retries <= DNC_PUT_RETRIES && !r->api->closing) {
            if (put_submit(r) < 0)
                refused(r);
            return;
        }
        answer_simple(r->req, 409, NULL, "the number is being changed concurrently; retry");
    } else {
        api_json(r->req, result == STORE_DNC_ADDED ? 201 : 200, doc->text, doc->len, NULL);
    }
    free(r->reason);
    free(r);
}

/* The PUT body: empty, or {"reason": string | null}.  0, or -1 after
 * answering.  *REASON is malloc'd or NULL. */
static int put_body(struct http_request *req, char **reason)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    struct problem p;
    json_error_t jerr;

    *reason = NULL;
    if (body == NULL || len == 0)
        return 0;
    if (!api_content_type_is(http_request_header(req, "Content-Type"), "application/json")) {
        answer_simple(req, 415, NULL, "Content-Type must be application/json");
        return -1;
    }
    problem_init(&p);
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        problem_set(&p, 400, "malformed JSON: %s at line %d, column %d", jerr.text, jerr.line,
                    jerr.column);
        problem_add_field(&p, "body", "malformed JSON: %s", jerr.text);
    } else if (!json_is_object(root)) {
        problem_add_field(&p, "body", "must be a JSON object");
    } else {
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v)
        {
            if (strcmp(key, "reason") != 0) {
                problem_add_field(&p, key, "unknown field");
            } else if (json_is_null(v)) {
                continue;
            } else if (!json_is_string(v)) {
                problem_add_field(&p, "reason", "must be a string or null");
            } else if (strlen(json_string_value(v)) != json_string_length(v)) {
                problem_add_field(&p, "reason", "must not contain NUL characters");
            } else if (utf8_chars(json_string_value(v)) > DNC_REASON_MAX) {
                problem_add_field(&p, "reason", "must be at most %d characters", DNC_REASON_MAX);
            } else if ((*reason = strdup(json_string_value(v))) == NULL) {
                problem_set(&p, 500, "out of memory");
            }
        }
    }
    json_decref(root);
    if (!problem_failed(&p))
        return 0;
    free(*reason);
    *reason = NULL;
    answer_problem(req, &p);
    return -1;
}

void api_dnc_put(struct api *api, struct http_request *req, const char *raw)
{
    char number[DNC_NUMBER_BUF];
    char *reason;
    if (path_number(req, raw, number) < 0 || put_body(req, &reason) < 0)
        return;
    struct dnc_req *r = dnc_req_new(api, req, number);
    if (r == NULL) {
        free(reason);
        return;
    }
    r->reason = reason;
    if (put_submit(r) < 0)
        refused(r);
}

/* ------------------------------------------------------------------ get */

static void got(void *ctx, const struct store_err *e, const struct store_dnc_doc *doc)
{
    struct dnc_req *r = ctx;
    if (e != NULL)
        api_store_failed(r->req, e, "dnc get");
    else if (doc == NULL)
        not_listed(r->req, r->number);
    else
        api_json(r->req, 200, doc->text, doc->len, NULL);
    free(r);
}

void api_dnc_get(struct api *api, struct http_request *req, const char *raw)
{
    char number[DNC_NUMBER_BUF];
    if (path_number(req, raw, number) < 0)
        return;
    struct dnc_req *r = dnc_req_new(api, req, number);
    if (r != NULL && store_dnc_get(api->pg, number, got, r) < 0)
        refused(r);
}

/* --------------------------------------------------------------- delete */

static void deleted(void *ctx, const struct store_err *e, int found)
{
    struct dnc_req *r = ctx;
    if (e != NULL)
        api_store_failed(r->req, e, "dnc delete");
    else if (!found)
        not_listed(r->req, r->number);
    else
        http_respond(r->req, 204, NULL, NULL, NULL, 0);
    free(r);
}

void api_dnc_delete(struct api *api, struct http_request *req, const char *raw)
{
    char number[DNC_NUMBER_BUF];
    if (path_number(req, raw, number) < 0)
        return;
    struct dnc_req *r = dnc_req_new(api, req, number);
    if (r != NULL && store_dnc_delete(api->pg, number, deleted, r) < 0)
        refused(r);
}

/* ----------------------------------------------------------------- list */

/* The cursor is the last number of a page without its '+' (so it needs no
 * escaping in a query string); a page starts after it. */
struct dnc_list_query {
    int page_size;
    int has_cursor;
    char after[DNC_NUMBER_BUF];
};

static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return n > 0;
}

/* One name=value pair, as validate_list_query() words its errors. */
static void list_param(const char *name, size_t nlen, const char *val, size_t vlen, int seen[2],
                       struct dnc_list_query *q, struct problem *p)
{
    int which = nlen == 6 && memcmp(name, "cursor", 6) == 0     ? 0
                : nlen == 8 && memcmp(name, "pageSize", 8) == 0 ? 1
                                                                : -1;
    const char *field = which ? "pageSize" : "cursor";
    if (which < 0) {
        char unknown[65];
        snprintf(unknown, sizeof(unknown), "%.*s", (int)(nlen > 64 ? 64 : nlen), name);
        problem_add_field(p, unknown, "unknown query parameter");
        return;
    }
    if (seen[which]++) {
        if (seen[which] == 2)
            problem_add_field(p, field, "repeated parameter");
        return;
    }
    if (vlen == 0) {
        problem_add_field(p, field, "must not be empty");
        return;
    }
    if (which == 1) {
        int v = 0;
        if (all_digits(val, vlen) && vlen <= 3)
            v = atoi(val);
        if (v < 1 || v > LIST_PAGE_SIZE_MAX)
            problem_add_field(p, "pageSize", "must be an integer from 1 to %d", LIST_PAGE_SIZE_MAX);
        else
            q->page_size = v;
        return;
    }
    if (all_digits(val, vlen) && vlen < DNC_NUMBER_BUF - 1) {
        snprintf(q->after, sizeof(q->after), "+%.*s", (int)vlen, val);
        if (validate_e164(q->after)) {
            q->has_cursor = 1;
            return;
        }
    }
    problem_add_field(p, "cursor", "is not a cursor of this list (use nextCursor as given)");
}

static int list_query(const char *query, struct dnc_list_query *q, struct problem *p)
{
    int seen[2] = { 0, 0 };
    memset(q, 0, sizeof(*q));
    q->page_size = LIST_PAGE_SIZE_DEFAULT;
    for (const char *s = query ? query : ""; *s != '\0';) {
        const char *amp = strchr(s, '&');
        size_t n = amp ? (size_t)(amp - s) : strlen(s);
        const char *eq = memchr(s, '=', n);
        if (n > 0) {
            size_t nlen = eq ? (size_t)(eq - s) : n;
            list_param(s, nlen, eq ? eq + 1 : s + n, eq ? n - nlen - 1 : 0, seen, q, p);
        }
        s += n + (amp != NULL);
    }
    return problem_failed(p) ? -1 : 0;
}

struct dnc_list_req {
    struct http_request *req;
};

static void listed_page(void *ctx, const struct store_err *e, const struct store_dnc_page *pg)
{
    struct dnc_list_req *l = ctx;
    struct strbuf b = { 0 };
    if (e != NULL) {
        api_store_failed(l->req, e, "dnc list");
        free(l);
        return;
    }
    strbuf_adds(&b, "{\"data\":[");
    for (int i = 0; i < pg->n; i++) {
        if (i > 0)
            strbuf_addc(&b, ',');
        strbuf_add(&b, pg->docs[i].text, pg->docs[i].len);
    }
    strbuf_adds(&b, "],\"nextCursor\":");
    if (pg->more && pg->last != NULL && pg->last[0] == '+')
        strbuf_addf(&b, "\"%s\"}", pg->last + 1);
    else
        strbuf_adds(&b, "null}");
    if (b.failed)
        api_internal_error(l->req, "dnc list", "out of memory");
    else
        api_json(l->req, 200, b.p, b.len, NULL);
    strbuf_free(&b);
    free(l);
}

void api_dnc_list(struct api *api, struct http_request *req)
{
    struct dnc_list_query q;
    struct problem p;
    problem_init(&p);
    if (list_query(http_request_query(req), &q, &p) < 0) {
        answer_problem(req, &p);
        return;
    }
    problem_reset(&p);
    struct dnc_list_req *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        api_internal_error(req, "dnc list", "out of memory");
        return;
    }
    l->req = req;
    if (store_dnc_list(api->pg, q.has_cursor ? q.after : NULL, q.page_size, listed_page, l) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        free(l);
    }
}

/* --------------------------------------------------------------- import */

/* At most this many invalid lines are listed; the answer says how many
 * more there were ("invalidNotListed"), so that a file of garbage cannot
 * make an answer many times its own size. */
#define DNC_INVALID_LISTED 1000

struct import_req {
    struct http_request *req;
    long long valid;
    struct strbuf invalid; /* the "invalid" array's members, comma-separated */
    long long ninvalid;
};

/* Valid UTF-8 without control characters (tab allowed). */
static int text_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80             ? 1
                   : (c & 0xe0) == 0xc0 ? 2
                   : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 ? 4
                                        : 0;
        if (k == 0 || i + k > n || (c < 0x20 && c != '\t') || c == 0x7f || c == 0xc0 || c == 0xc1 ||
            c > 0xf4)
            return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

static char *trim(char *s, char *end)
{
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *end = '\0';
    return s;
}

static void add_invalid(struct import_req *ir, long line, const char *msg)
{
    if (ir->ninvalid++ >= DNC_INVALID_LISTED)
        return;
    strbuf_addf(&ir->invalid, "%s{\"line\":%ld,\"message\":\"%s\"}", ir->ninvalid > 1 ? "," : "",
                line, msg);
}

/* Parse the CSV in BUF (NUL-terminated copy of the body, cut in place)
 * into NUMBERS/REASONS; invalid lines go to IR.  Returns the count, or -1
 * when memory ran out. */
static long parse_csv(char *buf, size_t len, struct import_req *ir, const char ***numbers,
                      const char ***reasons)
{
    size_t cap = 0;
    long n = 0, line = 0;
    int first = 1;
    char *end = buf + len;
    char *start = buf;
    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
        start += 3; /* the byte order mark spreadsheets write */
    for (char *s = start; s < end;) {
        char *nl = memchr(s, '\n', (size_t)(end - s));
        char *eol = nl ? nl : end;
        line++;
        if (eol > s && eol[-1] == '\r')
            eol--;
        char *next = nl ? nl + 1 : end;
        char *comma = memchr(s, ',', (size_t)(eol - s));
        int quoted = memchr(s, '"', (size_t)(eol - s)) != NULL;
        int has_nul = memchr(s, '\0', (size_t)(eol - s)) != NULL;
        char *num = trim(s, comma ? comma : eol);
        char *why = comma ? trim(comma + 1, eol) : NULL;
        s = next;
        if (!has_nul && num[0] == '\0' && (why == NULL || why[0] == '\0') && comma == NULL)
            continue; /* blank line */
        if (first) {
            first = 0;
            if (strcasecmp(num, "number") == 0 && (why == NULL || strcasecmp(why, "reason") == 0))
                continue; /* the header */
        }
        if (quoted) {
            add_invalid(ir, line,
                        "quoted fields are not supported: write number,reason "
                        "without quotes (the reason may contain commas)");
            continue;
        }
        if (has_nul || !validate_e164(num)) {
            add_invalid(ir, line, "number " E164_MESSAGE);
            continue;
        }
        if (why != NULL && !text_ok((const unsigned char *)why, strlen(why))) {
            add_invalid(ir, line, "reason must be UTF-8 text without control characters");
            continue;
        }
        if (why != NULL && utf8_chars(why) > DNC_REASON_MAX) {
            add_invalid(ir, line, "reason is longer than 500 characters");
            continue;
        }
        if ((size_t)n == cap) {
            size_t ncap = cap ? cap * 2 : 1024;
            const char **a = realloc(*numbers, ncap * sizeof(*a));
            if (a != NULL)
                *numbers = a;
            const char **b = a ? realloc(*reasons, ncap * sizeof(*b)) : NULL;
            if (b == NULL)
                return -1;
            *reasons = b;
            cap = ncap;
        }
        (*numbers)[n] = num;
        (*reasons)[n] = why != NULL && why[0] != '\0' ? why : NULL;
        n++;
    }
    return n;
}

static void import_answer(struct import_req *ir, long long added)
{
    struct strbuf b = { 0 };
    strbuf_addf(&b, "{\"added\":%lld,\"existing\":%lld,\"invalid\":[", added, ir->valid - added);
    if (ir->invalid.len > 0)
        strbuf_add(&b, ir->invalid.p, ir->invalid.len);
    strbuf_addc(&b, ']');
    if (ir->ninvalid > DNC_INVALID_LISTED)
        strbuf_addf(&b, ",\"invalidNotListed\":%lld", ir->ninvalid - DNC_INVALID_LISTED);
    strbuf_addc(&b, '}');
    if (b.failed || ir->invalid.failed)
        api_internal_error(ir->req, "dnc import", "out of memory");
    else
        api_json(ir->req, 200, b.p, b.len, NULL);
    strbuf_free(&b);
}

static void import_free(struct import_req *ir)
{
    strbuf_free(&ir->invalid);
    free(ir);
}

static void imported(void *ctx, const struct store_err *e, long long added)
{
    struct import_req *ir = ctx;
    if (e != NULL)
        api_store_failed(ir->req, e, "dnc import");
    else
        import_answer(ir, added);
    import_free(ir);
}

void api_dnc_import(struct api *api, struct http_request *req)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    const char **numbers = NULL, **reasons = NULL;
    struct import_req *ir;
    char *buf;

    if (!api_content_type_is(http_request_header(req, "Content-Type"), "text/csv")) {
        answer_simple(req, 415, NULL, "Content-Type must be text/csv");
        return;
    }
    if ((ir = calloc(1, sizeof(*ir))) == NULL || (buf = malloc(len + 1)) == NULL) {
        free(ir);
        api_internal_error(req, "dnc import", "out of memory");
        return;
    }
    ir->req = req;
    if (len > 0)
        memcpy(buf, body, len);
    buf[len] = '\0';
    long n = parse_csv(buf, len, ir, &numbers, &reasons);
    if (n < 0) {
        api_internal_error(req, "dnc import", "out of memory");
        import_free(ir);
    } else if (n == 0) {
        import_answer(ir, 0);
        import_free(ir);
    } else {
        ir->valid = n;
        if (store_dnc_import(api->pg, numbers, reasons, (int)n, DNC_SOURCE_IMPORT, imported, ir) <
            0) {
            api_unavailable(req, API_DB_UNREACHABLE);
            import_free(ir);
        }
    }
    free(numbers);
    free(reasons);
    free(buf);
}
