/*
 * proctitle.c — rewrite argv[0] so ps shows each process's role.
 *
 * Linux exposes the original argv area as /proc/PID/cmdline.  To write a
 * title longer than the original argv we copy argv and environ to the heap,
 * then treat the contiguous area from argv[0] to the end of the last
 * environment string as one buffer (the nginx ngx_setproctitle approach).
 */
#include "util/proctitle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static char *title_start;
static size_t title_cap;

/* Extend END over the strings of VEC that follow it contiguously. */
static char *contiguous_end(char *end, char **vec)
{
    for (size_t i = 0; vec[i] != NULL; i++)
        if (vec[i] == end + 1)
            end = vec[i] + strlen(vec[i]);
    return end;
}

/* Replace each string of VEC with a heap copy; returns 0 or -1. */
static int copy_strings(char **vec)
{
    for (size_t i = 0; vec[i] != NULL; i++) {
        vec[i] = strdup(vec[i]);
        if (vec[i] == NULL)
            return -1;
    }
    return 0;
}

int co_proctitle_init(int argc, char **argv)
{
    if (argc < 1 || argv[0] == NULL)
        return -1;
    char *start = argv[0];
    char *end = contiguous_end(start + strlen(start), argv);
    end = contiguous_end(end, environ);

    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = calloc(n + 1, sizeof(char *));
    if (env == NULL)
        return -1;
    memcpy(env, environ, n * sizeof(char *));
    environ = env;
    if (copy_strings(environ) < 0 || copy_strings(argv) < 0)
        return -1;
    title_start = start;
    title_cap = (size_t)(end - start);
    return 0;
}

void co_proctitle_set(const char *fmt, ...)
{
    char title[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(title, sizeof(title), fmt, ap);
    va_end(ap);
    if (title_start == NULL || title_cap < 2)
        return;
    size_t len = strlen(title);
    if (len >= title_cap)
        len = title_cap - 1;
    memcpy(title_start, title, len);
    memset(title_start + len, '\0', title_cap - len);
}
