/*
 * redis.h — one non-blocking Redis connection on a libev loop (hiredis).
 *
 * Owns: the connection of one child process to [redis] host:port (name
 * lookup, connect, AUTH, SELECT, SCRIPT LOAD of the caller's scripts,
 * reconnect with backoff, command timeouts) and the requests queued or in
 * flight on it.  What the commands mean is the caller's business
 * (dispatch/slots.c); this module only sends them and hands the replies
 * back.
 *
 * Scripts are registered once, by name, when the handle is created; they are
 * loaded on every new connection and run by their index in that table with
 * EVALSHA.  A NOSCRIPT answer (SCRIPT FLUSH, a failover) is retried once as
 * EVAL with the full text, so callers never see it.
 *
 * Rules for callers:
 *  - redis_send() returns 0 when the command was accepted; then its callback
 *    is called exactly once, later, from the loop (never from inside
 *    redis_send()).  It returns -1 when the command was refused at once:
 *    Redis is down, too many commands are pending, out of memory, or the
 *    handle is being freed; the callback is not called and redis_error()
 *    says why.  While the very first connection is still being made
 *    (CONNECTING), commands wait for it.
 *  - The callback gets err == NULL and the server's answer in REPLY (never
 *    an error reply), or err != NULL and REPLY == NULL when Redis answered
 *    with an error, when no answer came in time (the connection is then
 *    dropped and re-made), when the connection was lost, or when the handle
 *    was freed.  REPLY is only valid during the callback.
 *  - Callbacks may send new commands; they must not call redis_free().
 */
#ifndef CO_NET_REDIS_H
#define CO_NET_REDIS_H

#include <stddef.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "net/conn.h"
#include "util/config.h"

struct redis;
struct redis_cmd;

struct redis_opts {
    const char *name;       /* shown as redis=… in logs; default "redis" */
    const char *client;     /* the module using the connection, named in
                               its errors ("<client> closed"); default
                               "redis" */
    double command_timeout; /* s from send to reply (also bounds connect,
                               handshake and name lookup); then the
                               connection is dropped; default 5 */
    double backoff_min;     /* s before the first reconnect; default 0.1 */
    double backoff_max;     /* s cap of the doubling; default 5 */
    int max_pending;        /* commands queued or in flight before new
                               ones are refused; default 10000 */
};

/* A Lua script the connection loads on connect.  Both strings must outlive
 * the handle (string literals). */
struct redis_script {
    const char *name; /* for logs */
    const char *body;
};

typedef void (*redis_reply_cb)(void *arg, const redisReply *reply, const char *err);

void redis_opts_init(struct redis_opts *opts);

/*
 * Create the handle and start connecting to [redis] host:port of CFG with
 * its password and db (copied; CFG may go away).  SCRIPTS (N of them) are
 * loaded on every connection.  Fails only for invalid options; an
 * unreachable Redis is not an error here (the handle keeps retrying).  A
 * host name is resolved asynchronously (getaddrinfo_a), so a slow DNS never
 * blocks the loop either.
 */
struct redis *redis_new(struct ev_loop *loop, const struct co_config *cfg,
                        const struct redis_opts *opts, const struct redis_script *scripts, int n,
                        char *err, size_t errlen);

/*
 * Disconnect.  Commands still queued or in flight get their callback with
 * err "<client> closed" first.  Not from inside a callback.
 */
void redis_free(struct redis *r);

/* A command of at most NARGS arguments, added with redis_cmd_add().  Every
 * command built goes to redis_send(), which frees it in every case.  NULL
 * when out of memory: redis_cmd_add() ignores it and redis_send() refuses
 * it, so a caller checks only redis_send()'s answer. */
struct redis_cmd *redis_cmd_new(int nargs);

/* EVALSHA of script SCRIPT (its index in the table given to redis_new())
 * with NKEYS keys, followed by NKEYS + NARGS arguments to add.  NULL as
 * above, and for an index outside the table (a caller bug). */
struct redis_cmd *redis_cmd_script(struct redis *r, int script, int nkeys, int nargs);

/* Append one printf-formatted argument.  An allocation failure (or one
 * argument too many) is remembered and reported by redis_send(). */
void redis_cmd_add(struct redis_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Send C (or queue it while the first connection is made); C belongs to the
 * handle from now on, even when refused.  See the rules above. */
int redis_send(struct redis *r, struct redis_cmd *c, redis_reply_cb cb, void *arg);

/* The caller refused a request before building it (invalid arguments):
 * record WHY for redis_error().  Returns -1. */
int redis_refuse(struct redis *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

enum conn_health redis_health(const struct redis *r);

/* Nothing queued and nothing in flight (for a graceful stop). */
int redis_idle(const struct redis *r);

/* Why the last command was refused, or the last connection error. */
const char *redis_error(const struct redis *r);

/* The run_id (INFO server) of the server the current connection reached,
 * read during its handshake; "" before that, or when INFO was refused.
 * A command built with it and sent on that connection runs on that very
 * server process (a restart or a fail-over ends the connection). */
const char *redis_run_id(const struct redis *r);

#endif
