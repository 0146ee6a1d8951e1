/*
 * child.h — what the master hands every child, and the runtime they share.
 *
 * Owns the life of a child process after fork(): a fresh libev loop, the
 * signal watchers (TERM = graceful stop, INT = fast stop, USR1 = reopen
 * logs), the parent-death signal, the process title, and the "ready"
 * message to the master.  Each kind (http, kafka, sched) plugs in a small
 * set of callbacks; the master never sees their internals.  The kinds: http,
 * kafka, sched (one per daemon) and events (one per daemon: client events).
 */
#ifndef CO_CHILD_H
#define CO_CHILD_H

#include <ev.h>
#include <sys/types.h>

#include "util/config.h"

enum child_kind { CHILD_HTTP = 0, CHILD_KAFKA, CHILD_SCHED, CHILD_EVENTS, CHILD_KIND_MAX };

/* Exit status meaning "fatal setup error: respawning will not help". */
#define CHILD_EXIT_FATAL 2

struct child_ctx {
    enum child_kind kind;
    int slot;              /* 0-based index within its kind */
    unsigned generation;   /* bumped by every reload */
    const int *listen_fds; /* http children only: the sockets of its slot */
    int n_listen;
    int ready_fd; /* write end of the master's ready pipe */
    const struct co_config *cfg;
    struct ev_loop *loop;
};

/* The callbacks one kind of child provides. */
struct child_ops {
    /* Set up on ctx->loop.  Return 0, or CHILD_EXIT_FATAL / 1 to exit. */
    int (*start)(struct child_ctx *ctx, void **state);
    /* SIGTERM: stop taking new work, finish what is in flight, then call
     * child_done().  May be called once. */
    void (*stop)(void *state, struct child_ctx *ctx);
    /* Release everything; called after the loop returned. */
    void (*cleanup)(void *state);
};

const char *child_kind_name(enum child_kind kind);

/* Run a child of CTX->kind to completion in the current (forked) process;
 * returns the exit status for _exit(). */
int child_run(struct child_ctx *ctx, const struct child_ops *ops);

/* Tell the master this child is serving (counts towards READY=1). */
void child_notify_ready(const struct child_ctx *ctx);

/* Called by a kind when a graceful stop has finished: leaves the loop. */
void child_done(struct child_ctx *ctx);

extern const struct child_ops child_http_ops;
extern const struct child_ops child_kafka_ops;
extern const struct child_ops child_sched_ops;
extern const struct child_ops child_events_ops;

#endif
