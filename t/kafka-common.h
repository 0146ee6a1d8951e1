/*
 * kafka-common.h — what t/kafka-broker.c and t/kafka-check.c share.
 * Define KAFKA_PROG (the program's name, for messages) before including.
 */
#ifndef CALLORCH_T_KAFKA_COMMON_H
#define CALLORCH_T_KAFKA_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef KAFKA_PROG
#error "define KAFKA_PROG before including kafka-common.h"
#endif

/* Parse a positive int option of at most MAX or exit with a usage error. */
static int parse_count(const char *s, const char *what, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > max) {
        fprintf(stderr, KAFKA_PROG ": bad %s: '%s'\n", what, s);
        exit(2);
    }
    return (int)v;
}

#endif
