/*
 * tap.h — a small TAP producer for the C unit tests (after Knot's
 * tests/tap/basic.h).  Header-only: plan(), ok(), is_int(), is_string(),
 * diag(), bail(), done_testing().  Exit status is non-zero when a test failed.
 */
#ifndef CO_TAP_H
#define CO_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_count;
static int tap_failed;
static int tap_planned = -1;

static inline void plan(int n)
{
    tap_planned = n;
    printf("1..%d\n", n);
    fflush(stdout);
}

static inline void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("# ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static inline int tap_vok(int cond, const char *fmt, va_list ap)
{
    tap_count++;
    if (!cond)
        tap_failed++;
    printf("%sok %d - ", cond ? "" : "not ", tap_count);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    return cond;
}

static inline int ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = tap_vok(cond, fmt, ap);
    va_end(ap);
    return r;
}

static inline int is_int(long long want, long long got, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int is_int(long long want, long long got, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = tap_vok(want == got, fmt, ap);
    va_end(ap);
    if (!r)
        diag("  wanted: %lld\n#      got: %lld", want, got);
    return r;
}

static inline int is_string(const char *want, const char *got, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int is_string(const char *want, const char *got, const char *fmt, ...)
{
    va_list ap;
    int same =
        (want == NULL && got == NULL) || (want != NULL && got != NULL && strcmp(want, got) == 0);
    va_start(ap, fmt);
    int r = tap_vok(same, fmt, ap);
    va_end(ap);
    if (!r)
        diag("  wanted: \"%s\"\n#      got: \"%s\"", want ? want : "(null)", got ? got : "(null)");
    return r;
}

/* ok() when NEEDLE occurs in HAYSTACK (for error messages). */
static inline int like(const char *haystack, const char *needle, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int like(const char *haystack, const char *needle, const char *fmt, ...)
{
    va_list ap;
    int found = haystack != NULL && strstr(haystack, needle) != NULL;
    va_start(ap, fmt);
    int r = tap_vok(found, fmt, ap);
    va_end(ap);
    if (!r)
        diag("  '%s'\n#   does not contain '%s'", haystack ? haystack : "(null)", needle);
    return r;
}

static inline void bail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void bail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("Bail out! ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    exit(255);
}

/* Print the plan if none was given, and return the exit status. */
static inline int done_testing(void)
{
    if (tap_planned < 0)
        printf("1..%d\n", tap_count);
    else if (tap_planned != tap_count)
        diag("planned %d tests but ran %d", tap_planned, tap_count);
    fflush(stdout);
    return tap_failed > 0 || (tap_planned >= 0 && tap_planned != tap_count);
}

#endif
