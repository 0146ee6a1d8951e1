/*
 * err.h — the one way a module hands an error message back to its caller.
 *
 * Owns: co_seterr(), which formats into the caller's (err, errlen) buffer.
 * Modules return -1 and fill the buffer; the caller logs it once, where the
 * error is handled (STYLE.md).  ERR may be NULL or ERRLEN 0: nothing is
 * written, so a caller that does not care passes NULL.
 */
#ifndef CO_ERR_H
#define CO_ERR_H

#include <stddef.h>

void co_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
