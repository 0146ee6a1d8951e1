/*
 * control.h — the master's control socket and its protocol (DESIGN.md
 * section 7), both ends.
 *
 * Owns: the unix stream socket at [daemon] control_socket (created before
 * the privilege drop, mode 0600, refused when a live master answers on it,
 * removed at exit), serving it on the master's libev loop, and the wire
 * format that callorchctl speaks:
 *
 *   request   one line:  {"command":"status"}\n          (at most 4 KiB)
 *   answer    one line:  {"ok":true,...}\n  or  {"ok":false,"error":"..."}\n
 *
 * after which the master closes the connection.  Only root and the user
 * the master runs as (SO_PEERCRED) get an answer to a command: anyone
 * else gets {"ok":false,"denied":true,"error":"permission denied: ..."}.
 * An answer to "stop" is the
 * exception: the master keeps that connection open until it exits, so the
 * client learns when the stop is complete.  Commands: status, reload, stop,
 * pause, resume.  The master's state and actions come from the supervisor
 * through struct control_ops; this module never touches the child table.
 */
#ifndef CO_CONTROL_H
#define CO_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <ev.h>

/* Where the socket is when the config does not say (config.c's default). */
#define CONTROL_DEFAULT_SOCKET "/run/callorch/control.sock"

#define CONTROL_MAX_CLIENTS 8     /* served at once; more wait in the backlog */
#define CONTROL_MAX_REQUEST 4096  /* bytes, newline included */
#define CONTROL_IDLE_TIMEOUT 10.0 /* seconds without progress: closed */

/* One child, as "status" reports it. */
struct control_child {
    const char *kind; /* "http", "kafka", "sched" */
    int slot;
    pid_t pid; /* 0: not running (backoff or failed) */
    unsigned generation;
    double uptime; /* seconds; 0 when not running */
    unsigned restarts;
    int ready;
    const char *state; /* "starting", "ready", "exiting", "backoff", "failed" */
};

/* What "status" reports; the status callback fills it. */
struct control_status {
    double uptime; /* of the master, seconds */
    const char *config_file;
    const char *state; /* "running" or "stopping" */
    unsigned generation;
    int paused;
    int slots_in_use;
    int max_concurrent_calls;
    struct control_child *children; /* malloc'd by the callback, freed by control */
    int n_children;
};

/* The master's side: data and actions, all called on the master's loop. */
struct control_ops {
    /* Fill ST.  0, or -1 when out of memory. */
    int (*status)(void *arg, struct control_status *st);
    /* Reload like SIGHUP.  0 and the new generation, or -1 and why in err. */
    int (*reload)(void *arg, unsigned *generation, char *err, size_t errlen);
    /* Begin a graceful stop; called once the answer has gone out. */
    void (*stop)(void *arg);
    /* Pause (1) or resume (0) dispatch; returns the previous value, or -1. */
    int (*set_paused)(void *arg, int paused);
    /* Seconds a graceful stop may take (told to the client of "stop"). */
    double (*shutdown_timeout)(void *arg);
};

struct control;

/*
 * Create the socket at PATH, mode 0600, owned by UID:GID unless UID is
 * (uid_t)-1.  A stale socket file is removed first; a live master answering
 * on PATH, or a file that is not a socket, is an error.  NULL and a message
 * in err on failure.
 */
struct control *control_open(const char *path, uid_t uid, gid_t gid, char *err, size_t errlen);

/* Whether a client of uid PEER may give commands to a master of uid MASTER. */
bool control_peer_allowed(uid_t peer, uid_t master);

/* Serve the socket on LOOP with OPS(ARG). */
void control_start(struct control *ctl, struct ev_loop *loop, const struct control_ops *ops,
                   void *arg);

/* Stop serving (the loop is over); connections stay open until control_close. */
void control_stop(struct control *ctl);

/* In a freshly forked child: close the inherited descriptors, nothing else. */
void control_close_inherited(struct control *ctl);

/* Close the socket and its clients, remove the socket file, free CTL (NULL
 * is fine).  The connections of "stop" clients stay open: the process exit
 * closes them, which is what those clients wait for.  Call it last. */
void control_close(struct control *ctl);

/* ------------------------------------------------------------- client */

enum control_result {
    CONTROL_OK = 0,
    CONTROL_FAILED,      /* I/O error, timeout, malformed answer */
    CONTROL_NOT_RUNNING, /* no socket, or nobody listens on it */
    CONTROL_DENIED,      /* the socket's permissions, or the master, refuse us */
};

/* Connect to PATH; socket operations then time out after TIMEOUT seconds. */
enum control_result control_connect(const char *path, double timeout, int *fd, char *err,
                                    size_t errlen);

/* Send COMMAND and read the one-line answer into *ANSWER (malloc'd, no newline). */
enum control_result control_exchange(int fd, const char *command, char **answer, char *err,
                                     size_t errlen);

/* Wait up to TIMEOUT seconds for the master to close FD.  0 closed, -1 not. */
int control_wait_closed(int fd, double timeout);

#endif
