/*
 * problem.h — RFC 7807 problem bodies (DESIGN.md section 4).
 *
 * Owns: the error accumulator every request handler fills in (struct
 * problem) and its rendering as application/problem+json:
 *
 *   {"type":…,"title":…,"status":…,"detail":…,
 *    "errors":[{"field":…,"message":…}]}
 *
 * "type", "title", "status" and "detail" are always present; "errors" is
 * present only when at least one field error was added (a 404 or a 503 has
 * no fields to blame).  "type" is a stable, non-dereferenced URI per kind of
 * problem, "https://callorch.dev/problems/<kind>" (see problem_set()); a
 * status without a kind of its own gets "about:blank" and its HTTP reason
 * phrase as title, as RFC 7807 section 4.2 says.
 *
 * Pure: no I/O.  Strings are copied; invalid UTF-8 (e.g. a percent-decoded
 * query parameter name) is replaced by '?' so the body is always valid JSON.
 */
#ifndef CO_PROBLEM_H
#define CO_PROBLEM_H

#include <stddef.h>

#if defined(__GNUC__)
#define PROBLEM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PROBLEM_PRINTF(a, b)
#endif

#define PROBLEM_CONTENT_TYPE "application/problem+json"

/* At most this many field errors are kept; the rest are only counted in
 * the detail ("60 invalid fields (first 50 listed)"), so a body of 10 000
 * unknown keys cannot make a response bigger than the request. */
#define PROBLEM_MAX_FIELDS 50

struct problem_field {
    char *field; /* JSON field or query parameter name */
    char *message;
};

struct problem {
    int status;        /* 0 = no problem recorded yet */
    const char *type;  /* static string set with the status; a caller */
    const char *title; /* may point them at its own static strings */
    char *detail;      /* malloc'd, or NULL: rendered from the fields */
    struct problem_field fields[PROBLEM_MAX_FIELDS];
    size_t nfields;
    size_t ndropped; /* field errors beyond PROBLEM_MAX_FIELDS */
    int oom;         /* an allocation failed; render gives a 500 */
};

/* Start empty (status 0).  A struct problem may also be zero-initialised. */
void problem_init(struct problem *p);

/* Free what the problem holds and make it empty again. */
void problem_reset(struct problem *p);

/*
 * Set STATUS, with the type and title of that status, and a printf-style
 * DETAIL (may be NULL to keep the current detail).  Replaces an earlier
 * status.  Returns 0, or -1 when out of memory (p->oom is set).
 */
int problem_set(struct problem *p, int status, const char *detail_fmt, ...) PROBLEM_PRINTF(3, 4);

/*
 * Add a field error: FIELD names a JSON member or query parameter ("body"
 * for the request body as a whole), the message is printf-style.  Sets the
 * status to 400 if none was set.  Returns 0, or -1 when out of memory.
 */
int problem_add_field(struct problem *p, const char *field, const char *fmt, ...)
    PROBLEM_PRINTF(3, 4);

/* 1 when a status or a field error was recorded, else 0. */
int problem_failed(const struct problem *p);

/* The field name of error I, or NULL (for tests and logs). */
const char *problem_field_name(const struct problem *p, size_t i);

/*
 * Render P as compact JSON.  Returns a malloc'd NUL-terminated string (free
 * with free()) and its length in *len (len may be NULL), or NULL when out of
 * memory.  A problem with p->oom set renders as a plain 500.
 */
char *problem_render(const struct problem *p, size_t *len);

/*
 * The body of a problem with only STATUS and DETAIL (NULL: none), for an
 * answer with no field errors to report: problem_init(), problem_set(),
 * problem_render() and problem_reset() in one.  NULL (and *len 0) when out
 * of memory.
 */
char *problem_body(int status, const char *detail, size_t *len);

/* The "type" URI and title used for STATUS (exported for tests). */
const char *problem_type_for(int status);
const char *problem_title_for(int status);

#endif
