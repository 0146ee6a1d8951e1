/*
 * listen.h — the HTTP listening sockets.
 *
 * Owns binding [http] listen in the master, before any child exists, so a
 * child never needs privileges and a reload that changes nothing keeps the
 * very same sockets (no connection is refused during a reload).
 */
#ifndef CO_LISTEN_H
#define CO_LISTEN_H

#include <stddef.h>

#include "util/config.h"

struct listen_set {
    int fds[CO_MAX_LISTEN];
    int n;
};

/* Bind and listen on every address of CFG.  Returns 0, or -1 with a message
 * naming the address in err (nothing stays open then). */
int listen_open(const struct co_config *cfg, struct listen_set *ls, char *err, size_t errlen);

/* Whether A and B list the same addresses in the same order. */
int listen_same(const struct co_config *a, const struct co_config *b);

void listen_close(struct listen_set *ls);

#endif
