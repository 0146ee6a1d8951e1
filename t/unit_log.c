/*
 * unit_log.c — TAP tests of the logging API (src/util/log.c): the one
 * escaping function co_log_quote() (quotes, backslashes, newlines, control
 * bytes, DEL, the cut with its marker), co_log() writing one line per
 * call to a file target whatever text a caller hands it, and a file target
 * that is a symbolic link refused.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* mkdtemp under -std=c11 */
#endif
#include "tap.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/unit_log.XXXXXX";
static char path[4096];

/* co_log_quote(S) into a buffer of SIZE bytes must give WANT. */
static void quote_is(const char *s, size_t size, const char *want, const char *what)
{
    char buf[512];
    memset(buf, 'Z', sizeof buf);
    const char *got = co_log_quote(buf, size, s);
    ok(got == buf, "co_log_quote returns its buffer: %s", what);
    is_string(want, got, "co_log_quote: %s", what);
    ok(strlen(got) < size, "  fits in %zu bytes", size);
    ok(buf[size] == 'Z', "  writes nothing past them");
}

static void test_quote(void)
{
    quote_is("plain", 64, "plain", "plain text stands bare");
    quote_is("id:1", 64, "id:1", "an id stands bare");
    quote_is("a=b", 64, "\"a=b\"", "an equals sign is quoted");
    quote_is("a b", 64, "\"a b\"", "a space is quoted");
    quote_is("", 64, "\"\"", "empty string");
    quote_is(NULL, 64, "(null)", "NULL");
    quote_is("say \"hi\"", 64, "\"say \\\"hi\\\"\"", "double quotes");
    quote_is("a\\b", 64, "\"a\\\\b\"", "backslash");
    quote_is("a\nb\rc\td", 64, "\"a\\nb\\rc\\td\"", "newline, carriage return, tab");
    quote_is("\x01\x1b[31m\x7f", 64, "\"\\x01\\x1b[31m\\x7f\"", "other control bytes and DEL");
    quote_is("caf\xc3\xa9 \xe2\x82\xac", 64, "\"caf\xc3\xa9 \xe2\x82\xac\"", "UTF-8 as it is");
    quote_is("id\nts=2026 level=error msg=\"forged\"", 128,
             "\"id\\nts=2026 level=error msg=\\\"forged\\\"\"", "a forged line stays a value");

    /* cut: at most SIZE-1 characters, a whole escape or character, then "..." */
    quote_is("01234 6789", 13, "\"01234 6789\"", "exactly fits");
    quote_is("0123456789abc", 13, "\"0123456...\"", "too long to stand bare: quoted and cut");
    quote_is("01234 6789a", 13, "\"01234 6...\"", "one byte too long: cut with the marker");
    quote_is("abcd\nefgh", 10, "\"abcd...\"", "the cut keeps a whole escape");
    quote_is("abc\nefgh", 10, "\"abc...\"", "the cut never splits an escape");
    quote_is("ab\xe2\x82\xac"
             "cdefgh",
             10, "\"ab...\"", "the cut never splits a UTF-8 character");
    quote_is("ab\xc3\xa9"
             "cdefgh",
             10, "\"ab\xc3\xa9...\"", "a whole UTF-8 character stays");
    quote_is("abcd efgh", CO_LOG_QUOTE_MIN, "\"...\"", "the smallest buffer: only the marker");
    quote_is("abcdefgh", 3, "", "a buffer too small: empty");

    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *q = CO_LOG_Q(big);
    is_int(CO_LOG_QUOTE_MAX - 1, (long long)strlen(q), "CO_LOG_Q cuts at its buffer");
    ok(strcmp(q + strlen(q) - 4, "...\"") == 0, "  and ends with the marker");
}

/* The log file's text (malloc'd), or NULL. */
static char *slurp(void)
{
    FILE *fp = fopen(path, "r");
    static char buf[1 << 16];
    size_t n;
    if (fp == NULL)
        return NULL;
    n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strdup(buf);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* Truncate the log file, so that each check reads only its own lines. */
static void reset(void)
{
    if (truncate(path, 0) != 0)
        bail("truncate %s", path);
}

static void test_lines(void)
{
    char *text;

    snprintf(path, sizeof path, "%s/callorch.log", dir);
    if (co_log_open(path, CO_LOG_DEBUG) != 0)
        bail("cannot open %s", path);
    co_log_set_role("test");

    /* a quoted provider value with a forged line in it */
    reset();
    co_warn("bad callback", "call_id=%s status=%d",
            CO_LOG_Q("abc\nts=2026-01-01T00:00:00.000Z level=error role=master msg=\"forged\""),
            400);
    text = slurp();
    is_int(1, count_lines(text), "a quoted value with a newline: one line");
    like(text, " level=warn role=test ", "  the line carries level and role");
    like(text,
         "msg=\"bad callback\" call_id=\"abc\\nts=2026-01-01T00:00:00.000Z level=error "
         "role=master msg=\\\"forged\\\"\" status=400\n",
         "  the value is escaped, the fields after it intact");
    free(text);

    /* defence in depth: the same value left unquoted by a careless caller */
    reset();
    co_info("careless", "call_id=%s", "abc\nlevel=error\r\x1b[2J\x7f");
    text = slurp();
    is_int(1, count_lines(text), "an unquoted value with \"\\nlevel=error\": still one line");
    like(text, "call_id=abc\\nlevel=error\\r\\x1b[2J\\x7f\n", "  its control bytes escaped");
    free(text);

    /* the message itself */
    reset();
    co_error("two\nlines \"quoted\" back\\slash\ttab", NULL);
    text = slurp();
    is_int(1, count_lines(text), "a message with a newline: one line");
    like(text, "msg=\"two\\nlines \\\"quoted\\\" back\\\\slash\\ttab\"\n",
         "  the message is escaped like co_log_quote()");
    free(text);

    /* a line longer than the buffer is cut, still one line */
    reset();
    char big[5000];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = i % 7 == 0 ? '\n' : 'x';
    big[sizeof big - 1] = '\0';
    co_info(big, "tail=%s", big);
    co_info("after", "n=%d", 1);
    text = slurp();
    is_int(2, count_lines(text), "an over-long message and tail: one line each");
    like(text, "msg=\"after\" n=1\n", "  the next line is whole");
    free(text);

    /* many calls, each one line */
    reset();
    for (int i = 0; i < 50; i++)
        co_info("loop", "i=%d v=%s", i, i % 2 ? "a\nb" : CO_LOG_Q("c\nd"));
    text = slurp();
    is_int(50, count_lines(text), "50 calls, 50 lines");
    free(text);

    co_log_close();
    unlink(path);
}

/* A file target is never opened through a symbolic link (ELOOP). */
static void test_symlink(void)
{
    char target[4096], link[4096];
    snprintf(target, sizeof target, "%s/elsewhere", dir);
    snprintf(link, sizeof link, "%s/link.log", dir);
    FILE *fp = fopen(target, "w");
    if (fp == NULL || fputs("untouched\n", fp) < 0 || fclose(fp) != 0)
        bail("cannot write %s", target);
    if (symlink(target, link) != 0)
        bail("symlink %s", link);
    errno = 0;
    is_int(-1, co_log_open(link, CO_LOG_INFO), "a log path that is a symbolic link is refused");
    is_int(ELOOP, errno, "  with ELOOP");
    co_info("where does this go", NULL);
    snprintf(path, sizeof path, "%s", target);
    char *text = slurp();
    is_string("untouched\n", text, "  the file it points to is unchanged");
    free(text);
    co_log_close();
    unlink(link);
    unlink(target);
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        bail("mkdtemp");
    test_quote();
    test_lines();
    test_symlink();
    rmdir(dir);
    return done_testing();
}
