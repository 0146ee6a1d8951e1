/*
 * strbuf.c — the one growable byte buffer (see strbuf.h).
 */
#include "util/strbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int strbuf_reserve(struct strbuf *b, size_t more)
{
    if (b->failed)
        return -1;
    if (more > SIZE_MAX - b->len - 1 || (b->max != 0 && b->len + more > b->max)) {
        b->failed = true;
        return -1;
    }
    size_t need = b->len + more + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            b->failed = true;
            return -1;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->failed = true;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int strbuf_add(struct strbuf *b, const void *data, size_t len)
{
    if (strbuf_reserve(b, len) < 0)
        return -1;
    if (len > 0)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

int strbuf_adds(struct strbuf *b, const char *s)
{
    return strbuf_add(b, s, strlen(s));
}

int strbuf_addc(struct strbuf *b, char ch)
{
    return strbuf_add(b, &ch, 1);
}

int strbuf_addf(struct strbuf *b, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return -1;
    }
    if (strbuf_reserve(b, (size_t)n) < 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void strbuf_reset(struct strbuf *b)
{
    b->len = 0;
    b->failed = false;
    if (b->p != NULL)
        b->p[0] = '\0';
}

char *strbuf_take(struct strbuf *b)
{
    char *p = b->failed || b->len == 0 ? NULL : b->p;
    if (p == NULL)
        free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->failed = false;
    return p;
}

void strbuf_free(struct strbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}
