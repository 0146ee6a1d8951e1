/*
 * problem.c — RFC 7807 problem bodies (DESIGN.md section 4).
 *
 * Owns: the table of problem kinds (status -> type URI and title), the
 * struct problem accumulator and its rendering with jansson.  Pure: no I/O.
 */
#include "api/problem.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBLEM_BASE "https://callorch.dev/problems/"

/* One row per status the API answers with; the kind in the URI is what a
 * client switches on, so these strings are part of the contract.  A NULL
 * type means "about:blank": nothing to say beyond the status itself. */
static const struct {
    int status;
    const char *type;
    const char *title;
} kinds[] = {
    { 400, PROBLEM_BASE "validation", "Invalid request" },
    { 401, PROBLEM_BASE "unauthorized", "Unauthorized" },
    { 404, PROBLEM_BASE "not-found", "Not Found" },
    { 405, PROBLEM_BASE "method-not-allowed", "Method Not Allowed" },
    { 408, NULL, "Request Timeout" },
    { 409, PROBLEM_BASE "conflict", "Conflict" },
    { 411, NULL, "Length Required" },
    { 413, PROBLEM_BASE "body-too-large", "Payload Too Large" },
    { 415, PROBLEM_BASE "unsupported-media-type", "Unsupported Media Type" },
    { 422, PROBLEM_BASE "idempotency-key-reused", "Idempotency-Key reused with a different body" },
    { 429, NULL, "Too Many Requests" },
    { 431, PROBLEM_BASE "headers-too-large", "Request Header Fields Too Large" },
    { 500, PROBLEM_BASE "internal", "Internal Server Error" },
    { 502, NULL, "Bad Gateway" },
    { 503, PROBLEM_BASE "unavailable", "Service Unavailable" },
    { 504, NULL, "Gateway Timeout" },
};

/* Index of STATUS in kinds[], or -1. */
static int kind_index(int status)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (kinds[i].status == status)
            return (int)i;
    return -1;
}

const char *problem_type_for(int status)
{
    int i = kind_index(status);
    return i >= 0 && kinds[i].type ? kinds[i].type : "about:blank";
}

const char *problem_title_for(int status)
{
    int i = kind_index(status);
    if (i >= 0)
        return kinds[i].title;
    return status >= 500 ? "Server Error" : "Client Error";
}

void problem_init(struct problem *p)
{
    memset(p, 0, sizeof *p);
}

void problem_reset(struct problem *p)
{
    free(p->detail);
    for (size_t i = 0; i < p->nfields; i++) {
        free(p->fields[i].field);
        free(p->fields[i].message);
    }
    problem_init(p);
}

/* Replace every byte >= 0x80 when S is not valid UTF-8, so that jansson
 * (which refuses invalid UTF-8) can always encode what we stored.  Query
 * parameter names are percent-decoded bytes and may be anything. */
static void sanitize_utf8(char *s)
{
    json_t *probe = json_string(s);
    if (probe) {
        json_decref(probe);
        return;
    }
    for (unsigned char *c = (unsigned char *)s; *c; c++)
        if (*c >= 0x80)
            *c = '?';
}

/* vasprintf without the GNU dependency; NULL when out of memory. */
static char *vformat(const char *fmt, va_list ap) PROBLEM_PRINTF(1, 0);
static char *vformat(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    if (s)
        sanitize_utf8(s);
    return s;
}

static char *copy_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) {
        memcpy(d, s, n);
        sanitize_utf8(d);
    }
    return d;
}

/* Set status, type and title together so they can never disagree. */
static void set_status(struct problem *p, int status)
{
    p->status = status;
    p->type = problem_type_for(status);
    p->title = problem_title_for(status);
}

int problem_set(struct problem *p, int status, const char *detail_fmt, ...)
{
    set_status(p, status);
    if (!detail_fmt)
        return 0;
    va_list ap;
    va_start(ap, detail_fmt);
    char *d = vformat(detail_fmt, ap);
    va_end(ap);
    if (!d) {
        p->oom = 1;
        return -1;
    }
    free(p->detail);
    p->detail = d;
    return 0;
}

int problem_add_field(struct problem *p, const char *field, const char *fmt, ...)
{
    if (p->status == 0)
        set_status(p, 400);
    if (p->nfields == PROBLEM_MAX_FIELDS) {
        p->ndropped++;
        return 0;
    }
    va_list ap;
    va_start(ap, fmt);
    char *m = vformat(fmt, ap);
    va_end(ap);
    char *f = copy_string(field);
    if (!m || !f) {
        free(m);
        free(f);
        p->oom = 1;
        return -1;
    }
    p->fields[p->nfields].field = f;
    p->fields[p->nfields].message = m;
    p->nfields++;
    return 0;
}

int problem_failed(const struct problem *p)
{
    return p->status != 0 || p->nfields > 0 || p->oom;
}

const char *problem_field_name(const struct problem *p, size_t i)
{
    return i < p->nfields ? p->fields[i].field : NULL;
}

/* The detail to show: the caller's, else a count of the field errors,
 * else the title (RFC 7807 allows omitting it; clients prefer one shape). */
static char *detail_text(const struct problem *p, const char *title)
{
    char buf[96];
    size_t total = p->nfields + p->ndropped;
    if (p->detail)
        return copy_string(p->detail);
    if (total == 0)
        return copy_string(title);
    if (p->ndropped)
        snprintf(buf, sizeof buf, "%zu invalid fields (first %zu listed)", total, p->nfields);
    else
        snprintf(buf, sizeof buf, "%zu invalid field%s", total, total == 1 ? "" : "s");
    return copy_string(buf);
}

/* The "errors" array, or NULL when out of memory. */
static json_t *render_fields(const struct problem *p)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < p->nfields; i++) {
        json_t *e =
            json_pack("{s:s,s:s}", "field", p->fields[i].field, "message", p->fields[i].message);
        if (json_array_append_new(arr, e) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* Build the JSON object for P, or NULL when out of memory. */
static json_t *render_object(const struct problem *p)
{
    int status = p->oom ? 500 : (p->status ? p->status : 400);
    /* The caller may have overridden type and title after problem_set(). */
    const char *type = !p->oom && p->type ? p->type : problem_type_for(status);
    const char *title = !p->oom && p->title ? p->title : problem_title_for(status);
    char *detail = p->oom ? copy_string("out of memory") : detail_text(p, title);
    if (!detail)
        return NULL;
    json_t *o = json_pack("{s:s,s:s,s:i,s:s}", "type", type, "title", title, "status", status,
                          "detail", detail);
    free(detail);
    if (o && !p->oom && p->nfields > 0 && json_object_set_new(o, "errors", render_fields(p)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *problem_render(const struct problem *p, size_t *len)
{
    json_t *o = render_object(p);
    if (!o)
        return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s && len)
        *len = strlen(s);
    return s;
}

char *problem_body(int status, const char *detail, size_t *len)
{
    struct problem p;
    problem_init(&p);
    problem_set(&p, status, "%s", detail ? detail : "");
    char *txt = problem_render(&p, len);
    problem_reset(&p);
    if (txt == NULL)
        *len = 0;
    return txt;
}
