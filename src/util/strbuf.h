/*
 * strbuf.h — the one growable byte buffer.
 *
 * Owns: appending bytes, strings, characters and printf-formatted text to a
 * heap buffer that doubles as it grows, with an optional hard size limit.
 * The buffer is always NUL-terminated after the first successful append
 * (the NUL is not counted in len), so its text can be handed to anything
 * that wants a C string.  An allocation failure or a limit overrun sets
 * `failed` and makes every later append a no-op: callers build a whole
 * answer and check once at the end instead of after every append.
 *
 * A zeroed struct is an empty buffer; strbuf_free() releases it.
 */
#ifndef CO_STRBUF_H
#define CO_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

struct strbuf {
    char *p;     /* NULL until the first append */
    size_t len;  /* bytes held, without the trailing NUL */
    size_t cap;  /* bytes allocated */
    size_t max;  /* 0 = no limit; else len never exceeds it */
    bool failed; /* out of memory or over max: appends stopped */
};

/* Make room for MORE bytes after len (plus the NUL).  0, or -1 and failed. */
int strbuf_reserve(struct strbuf *b, size_t more);

/* Append LEN bytes.  0, or -1 (and failed set). */
int strbuf_add(struct strbuf *b, const void *data, size_t len);
int strbuf_adds(struct strbuf *b, const char *s);
int strbuf_addc(struct strbuf *b, char ch);
int strbuf_addf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Forget the content, keep the memory (and clear failed). */
void strbuf_reset(struct strbuf *b);

/* Hand the text over (the caller frees it; NULL when empty or failed) and
 * leave B empty. */
char *strbuf_take(struct strbuf *b);

void strbuf_free(struct strbuf *b);

#endif
