/*
 * redis.c — one hiredis async connection driven by libev (see redis.h).
 *
 * Owns: the connection and its state machine
 *
 *   WAIT --timer--> RESOLVING --address--> HANDSHAKE --last reply--> READY
 *     ^   (host names only,        (TCP connect, AUTH, SELECT, INFO    |
 *     |    getaddrinfo_a)           server, SCRIPT LOAD, pipelined)    |
 *     +---- failed / timed out --------+---- lost / command timeout ---+
 *
 * the server's run_id as the handshake read it (slots.c binds the epoch
 * marker to it), the commands in flight (in send order, for the command
 * timeout) and the
 * queue of commands made while the first connection is still being set up.
 * The health shown to callers and the reconnect backoff follow net/conn.h,
 * as in net/pg_pool.c.
 *
 * Scripts run as EVALSHA of a SHA-1 we compute ourselves, so commands can be
 * pipelined right behind SCRIPT LOAD.
 *
 * hiredis contract relied on (0.14): every command callback runs exactly
 * once, with reply == NULL when the context goes away; redisAsyncFree() from
 * inside a callback is deferred until that callback returns.  We free the
 * context only from our timers, from a callback with a real reply, and from
 * redis_free(); a NULL reply means hiredis is freeing it already.
 */
#include <auto-config.h>

#include "net/redis.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <openssl/evp.h>

#include "util/err.h"
#include "util/log.h"
#include "util/tunables.h"

/* ------------------------------------------------------------- structs --- */

enum cmd_kind { CK_AUTH, CK_SELECT, CK_INFO, CK_LOAD, CK_USER }; /* handshake ones first */

enum conn_phase { PH_WAIT, PH_RESOLVING, PH_HANDSHAKE, PH_READY };

struct redis_cmd {
    struct redis_cmd *prev, *next; /* in flight (send order) or queued */
    struct redis *r;
    enum cmd_kind kind;
    int script;  /* index in r->scripts, or -1 */
    int retried; /* the NOSCRIPT fallback was used */
    int counted; /* counts in r->pending */
    redis_reply_cb cb;
    void *arg;
    ev_tstamp sent_at;
    int argc, cap, oom;
    char **argv;
    size_t *argvlen;
};

/* A name lookup in flight.  It is never abandoned while glibc may still
 * write into it: a timed-out attempt leaves it running for the next one. */
struct lookup {
    struct gaicb cb;
    struct addrinfo hints;
    char service[8];
    char host[];
};

struct cmd_list {
    struct redis_cmd *head, *tail;
};

struct redis {
    struct ev_loop *loop;
    struct redis_opts opts;
    char *name;
    char *client;
    char *host;
    int port;
    char *password;
    int db;
    int numeric_host;
    const struct redis_script *scripts;
    int nscripts;
    char (*sha)[41]; /* of each script */

    enum conn_phase phase;
    redisAsyncContext *ac;
    struct lookup *lookup;
    ev_tstamp attempt_started;
    int hs_pending;     /* handshake replies still expected */
    char run_id[48];    /* INFO server's run_id of this connection's
                           server ("" until the handshake read it) */
    ev_timer retry;     /* backoff wait, or polling the name lookup */
    ev_timer cmd_timer; /* checks the oldest command in flight */
    struct conn_backoff backoff;
    struct cmd_list inflight; /* sent, in send order */
    struct cmd_list queue;    /* waiting for the first connection */
    int pending;              /* caller commands queued or in flight */

    struct conn_status status; /* failed: an attempt failed since READY */
    int closing;
    char addr[INET6_ADDRSTRLEN];
    char conn_error[256]; /* the latest connection failure */
    char fail_msg[320];   /* what commands dying with the connection get */
    char error[400];      /* what redis_error() returns */
};

static void conn_start(struct redis *r);
static void conn_gone(struct redis *r, const char *why);
static void update_state(struct redis *r);
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* ------------------------------------------------------------- helpers --- */

/* Messages on one line, without double quotes, for logs and errors. */
static void flatten(const char *in, char *out, size_t outlen)
{
    size_t o = 0;

    for (const char *p = in ? in : ""; *p != '\0' && o + 1 < outlen; p++)
        out[o++] = *p == '"' ? '\'' : (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
    if (outlen > 0)
        out[o] = '\0';
}

static int sha1_hex(const char *text, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    if (!EVP_Digest(text, strlen(text), md, &len, EVP_sha1(), NULL) || len != 20)
        return -1;
    for (unsigned i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* --------------------------------------------------------------- lists --- */

static void list_push(struct cmd_list *l, struct redis_cmd *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void list_unlink(struct cmd_list *l, struct redis_cmd *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
}

static struct redis_cmd *list_shift(struct cmd_list *l)
{
    struct redis_cmd *c = l->head;

    if (c != NULL)
        list_unlink(l, c);
    return c;
}

/* ------------------------------------------------------------ commands --- */

struct redis_cmd *redis_cmd_new(int nargs)
{
    struct redis_cmd *c;

    if (nargs < 1 || (c = calloc(1, sizeof(*c))) == NULL)
        return NULL;
    c->argv = calloc((size_t)nargs, sizeof(*c->argv));
    c->argvlen = calloc((size_t)nargs, sizeof(*c->argvlen));
    if (c->argv == NULL || c->argvlen == NULL) {
        free(c->argv);
        free(c->argvlen);
        free(c);
        return NULL;
    }
    c->kind = CK_USER;
    c->script = -1;
    c->cap = nargs;
    return c;
}

static void cmd_free(struct redis_cmd *c)
{
    if (c == NULL)
        return;
    if (c->counted)
        c->r->pending--;
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->argvlen);
    free(c);
}

void redis_cmd_add(struct redis_cmd *c, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int n;

    if (c == NULL)
        return;
    if (c->oom || c->argc >= c->cap) {
        c->oom = 1;
        return;
    }
    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        c->oom = 1;
        return;
    }
    c->argv[c->argc] = s;
    c->argvlen[c->argc++] = (size_t)n;
}

struct redis_cmd *redis_cmd_script(struct redis *r, int script, int nkeys, int nargs)
{
    struct redis_cmd *c;

    if (script < 0 || script >= r->nscripts || nkeys < 0 || nargs < 0)
        return NULL;
    if ((c = redis_cmd_new(3 + nkeys + nargs)) == NULL)
        return NULL;
    c->script = script;
    redis_cmd_add(c, "EVALSHA");
    redis_cmd_add(c, "%s", r->sha[script]);
    redis_cmd_add(c, "%d", nkeys);
    return c;
}

/* The caller's callback with an error, then the command is gone. */
static void cmd_fail(struct redis_cmd *c, const char *err)
{
    if (c->kind == CK_USER && c->cb != NULL)
        c->cb(c->arg, NULL, err);
    cmd_free(c);
}

static void queue_fail_all(struct redis *r, const char *msg)
{
    struct redis_cmd *c;

    while ((c = list_shift(&r->queue)) != NULL)
        cmd_fail(c, msg);
}

/* Hand C to hiredis and track it for the command timeout. */
static int cmd_send(struct redis *r, struct redis_cmd *c)
{
    if (redisAsyncCommandArgv(r->ac, on_reply, c, c->argc, (const char **)c->argv, c->argvlen) !=
        REDIS_OK)
        return -1;
    c->sent_at = ev_now(r->loop);
    list_push(&r->inflight, c);
    if (!ev_is_active(&r->cmd_timer)) {
        ev_timer_set(&r->cmd_timer, r->opts.command_timeout, 0.);
        ev_timer_start(r->loop, &r->cmd_timer);
    }
    return 0;
}

/* ------------------------------------------------------------- replies --- */

static void deliver(struct redis_cmd *c, const redisReply *reply)
{
    char err[256];

    /* INFO refused (renamed away): no run_id; the scripts ask for it */
    if (reply->type == REDIS_REPLY_ERROR && c->kind != CK_INFO) {
        flatten(reply->str, err, sizeof(err));
        cmd_fail(c, err);
        return;
    }
    if (c->cb != NULL)
        c->cb(c->arg, reply, NULL);
    cmd_free(c);
}

/* The script cache was flushed (SCRIPT FLUSH, failover to a replica that
 * never saw SCRIPT LOAD): send the same command once as EVAL. */
static int retry_as_eval(struct redis *r, struct redis_cmd *c)
{
    char *cmd = strdup("EVAL"), *body = strdup(r->scripts[c->script].body);

    if (cmd == NULL || body == NULL) {
        free(cmd);
        free(body);
        return -1;
    }
    free(c->argv[0]);
    free(c->argv[1]);
    c->argv[0] = cmd;
    c->argvlen[0] = strlen(cmd);
    c->argv[1] = body;
    c->argvlen[1] = strlen(body);
    c->retried = 1;
    return cmd_send(r, c);
}

static int is_noscript(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

/* -------------------------------------------------------- the connection -- */

/* Drop the connection on purpose (timeout, handshake error): our state goes
 * first, so the NULL replies hiredis hands out while freeing find it. */
static void conn_break(struct redis *r, const char *why)
{
    redisAsyncContext *ac = r->ac;

    conn_gone(r, why);
    if (ac != NULL)
        redisAsyncFree(ac);
}

static void handshake_reply(struct redis *r, struct redis_cmd *c, const redisReply *reply)
{
    static const char *const what[] = { "AUTH", "SELECT", "INFO", "SCRIPT LOAD" };
    char err[256], why[300];

    /* INFO refused (renamed away): no run_id; the scripts ask for it */
    if (reply->type == REDIS_REPLY_ERROR && c->kind != CK_INFO) {
        flatten(reply->str, err, sizeof(err));
        snprintf(why, sizeof(why), "%s failed: %s", what[c->kind], err);
        cmd_free(c);
        conn_break(r, why);
        return;
    }
    if (c->kind == CK_INFO) {
        const char *p = reply->type == REDIS_REPLY_STRING ? strstr(reply->str, "run_id:") : NULL;
        size_t n = p != NULL ? strspn(p + 7, "0123456789abcdef") : 0;
        if (n > 0 && n < sizeof(r->run_id)) {
            memcpy(r->run_id, p + 7, n);
            r->run_id[n] = '\0';
        }
    }
    if (c->kind == CK_LOAD && reply->type == REDIS_REPLY_STRING &&
        strcmp(reply->str, r->sha[c->script]) != 0)
        co_warn("Redis script hash differs from ours", "redis=%s script=%s ours=%s theirs=%s",
                r->name, r->scripts[c->script].name, r->sha[c->script], CO_LOG_Q(reply->str));
    cmd_free(c);
    if (--r->hs_pending > 0)
        return;
    r->phase = PH_READY;
    r->status.failed = false;
    conn_backoff_reset(&r->backoff);
    r->error[0] = r->conn_error[0] = '\0';
    update_state(r); /* logs "up", then sends what waited for it */
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_cmd *c = privdata;
    struct redis *r = c->r;
    const redisReply *rep = reply;
    char why[300];

    list_unlink(&r->inflight, c);
    if (rep == NULL) {
        if (r->ac == ac) {
            /* hiredis noticed the loss first (EOF, reset) and is freeing */
            snprintf(why, sizeof(why), "%s", ac->errstr[0] ? ac->errstr : "connection closed");
            conn_gone(r, why);
        }
        cmd_fail(c, r->fail_msg);
        return;
    }
    if (c->kind != CK_USER) {
        handshake_reply(r, c, rep);
    } else if (is_noscript(rep) && c->script >= 0 && !c->retried && r->ac == ac) {
        if (retry_as_eval(r, c) != 0)
            cmd_fail(c, "cannot resend the script to Redis");
    } else {
        deliver(c, rep);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis *r = ac->data;

    if (status != REDIS_OK && r->ac == ac)
        conn_gone(r, ac->errstr[0] ? ac->errstr : "connect failed");
    /* hiredis frees AC itself after a failed connect */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis *r = ac->data;

    if (r->ac == ac)
        conn_gone(r, status == REDIS_OK || !ac->errstr[0] ? "connection closed" : ac->errstr);
}

/* One handshake command: AUTH, SELECT, or SCRIPT LOAD of script I. */
static struct redis_cmd *handshake_cmd(struct redis *r, enum cmd_kind kind, int i)
{
    struct redis_cmd *c = redis_cmd_new(3);

    if (c == NULL)
        return NULL;
    c->kind = kind;
    c->r = r;
    if (kind == CK_AUTH) {
        redis_cmd_add(c, "AUTH");
        redis_cmd_add(c, "%s", r->password);
    } else if (kind == CK_SELECT) {
        redis_cmd_add(c, "SELECT");
        redis_cmd_add(c, "%d", r->db);
    } else if (kind == CK_INFO) {
        redis_cmd_add(c, "INFO");
        redis_cmd_add(c, "server");
    } else {
        c->script = i;
        redis_cmd_add(c, "SCRIPT");
        redis_cmd_add(c, "LOAD");
        redis_cmd_add(c, "%s", r->scripts[i].body);
    }
    return c;
}

/* Queue AUTH, SELECT, INFO server (the run_id) and SCRIPT LOAD right
 * behind the TCP connect. */
static int send_handshake(struct redis *r)
{
    struct redis_cmd *c;

    r->hs_pending = 0;
    r->run_id[0] = '\0';
    for (int i = -3; i < r->nscripts; i++) {
        if ((i == -3 && r->password[0] == '\0') || (i == -2 && r->db == 0))
            continue;
        c = handshake_cmd(r,
                          i == -3   ? CK_AUTH
                          : i == -2 ? CK_SELECT
                          : i == -1 ? CK_INFO
                                    : CK_LOAD,
                          i);
        if (c == NULL)
            return -1;
        if (c->oom || cmd_send(r, c) != 0) {
            cmd_free(c);
            return -1;
        }
        r->hs_pending++;
    }
    return 0;
}

/* Open the TCP connection to the numeric address IP. */
static void conn_open(struct redis *r, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, r->port);
    char why[300];

    snprintf(r->addr, sizeof(r->addr), "%s", ip);
    if (ac == NULL || ac->err) {
        snprintf(why, sizeof(why), "%s", ac != NULL ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        conn_gone(r, why);
        return;
    }
    ac->data = r;
    /* Dead peers of an idle connection; busy ones hit the command timeout. */
    redisEnableKeepAlive(&ac->c);
    if (redisLibevAttach(r->loop, ac) != REDIS_OK) {
        redisAsyncFree(ac);
        conn_gone(r, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->phase = PH_HANDSHAKE;
    if (send_handshake(r) != 0)
        conn_break(r, "cannot queue the handshake (out of memory)");
}

/* ------------------------------------------------------ name resolution -- */

static void lookup_free(struct lookup *l)
{
    if (l == NULL)
        return;
    if (l->cb.ar_result != NULL)
        freeaddrinfo(l->cb.ar_result);
    free(l);
}

static int lookup_start(struct redis *r)
{
    size_t n = strlen(r->host) + 1;
    struct lookup *l = calloc(1, sizeof(*l) + n);
    struct gaicb *list[1];

    if (l == NULL)
        return -1;
    memcpy(l->host, r->host, n);
    snprintf(l->service, sizeof(l->service), "%d", r->port);
    l->hints.ai_family = AF_UNSPEC;
    l->hints.ai_socktype = SOCK_STREAM;
    l->cb.ar_name = l->host;
    l->cb.ar_service = l->service;
    l->cb.ar_request = &l->hints;
    list[0] = &l->cb;
    /* No notification: the retry timer polls gai_error(); no signal, no
     * callback on glibc's thread. */
    if (getaddrinfo_a(GAI_NOWAIT, list, 1, NULL) != 0) {
        free(l);
        return -1;
    }
    r->lookup = l;
    return 0;
}

/* The lookup finished with status E: connect to its first address. */
static void lookup_done(struct redis *r, int e)
{
    struct lookup *l = r->lookup;
    char ip[INET6_ADDRSTRLEN], why[300];
    const struct addrinfo *ai = l->cb.ar_result;
    int rc = e;

    r->lookup = NULL;
    if (e == 0 && ai != NULL)
        rc = getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST);
    else if (e == 0)
        rc = EAI_NONAME;
    if (rc != 0) {
        snprintf(why, sizeof(why), "cannot resolve %s: %s", r->host, gai_strerror(rc));
        lookup_free(l);
        conn_gone(r, why);
        return;
    }
    lookup_free(l);
    conn_open(r, ip);
}

static void poll_lookup(struct redis *r)
{
    int e = gai_error(&r->lookup->cb);
    char why[300];

    if (e != EAI_INPROGRESS) {
        lookup_done(r, e);
    } else if (ev_now(r->loop) - r->attempt_started >= r->opts.command_timeout) {
        snprintf(why, sizeof(why), "resolving %s timed out after %g s", r->host,
                 r->opts.command_timeout);
        conn_gone(r, why); /* the lookup keeps running for the next attempt */
    } else {
        ev_timer_set(&r->retry, 0.01, 0.);
        ev_timer_start(r->loop, &r->retry);
    }
}

/* ------------------------------------------------------- state machine --- */

static void conn_start(struct redis *r)
{
    r->attempt_started = ev_now(r->loop);
    if (r->numeric_host) {
        conn_open(r, r->host);
        return;
    }
    if (r->lookup == NULL && lookup_start(r) != 0) {
        conn_gone(r, "cannot start the name lookup");
        return;
    }
    r->phase = PH_RESOLVING;
    poll_lookup(r);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct redis *r = w->data;

    if (r->phase == PH_RESOLVING)
        poll_lookup(r);
    else if (r->phase == PH_WAIT)
        conn_start(r);
}

/* Wait before the next attempt (conn_backoff_next()). */
static void schedule_reconnect(struct redis *r)
{
    r->phase = PH_WAIT;
    ev_timer_stop(r->loop, &r->retry);
    ev_timer_set(&r->retry, conn_backoff_next(&r->backoff), 0.);
    ev_timer_start(r->loop, &r->retry);
}

/* Derive the health; log and act on a change only (conn_status_update()). */
static void update_state(struct redis *r)
{
    struct redis_cmd *c;
    char msg[320];

    if (!conn_status_update(&r->status, r->phase == PH_READY))
        return;
    if (r->status.health == CONN_HEALTH_UP) {
        co_info("Redis up", "redis=%s addr=%s:%d db=%d", r->name, r->addr, r->port, r->db);
        while (r->ac != NULL && (c = list_shift(&r->queue)) != NULL)
            if (cmd_send(r, c) != 0)
                cmd_fail(c, "cannot send the command to Redis");
    } else if (r->status.health == CONN_HEALTH_DOWN) {
        co_warn("Redis down", "redis=%s addr=%s:%d error=%s", r->name, r->host, r->port,
                CO_LOG_Q(r->conn_error));
        snprintf(msg, sizeof(msg), "Redis unavailable: %s", r->conn_error);
        queue_fail_all(r, msg);
    }
}

/*
 * The connection attempt failed or the connection is gone, for WHY.  Never
 * frees the context: callers that own it free it after this, hiredis frees
 * it otherwise; either way the commands in flight then fail with fail_msg.
 */
static void conn_gone(struct redis *r, const char *why)
{
    char msg[256];
    int was_ready = r->phase == PH_READY;

    flatten(why, msg, sizeof(msg));
    r->ac = NULL;
    r->hs_pending = 0;
    ev_timer_stop(r->loop, &r->cmd_timer);
    snprintf(r->conn_error, sizeof(r->conn_error), "%s", msg);
    snprintf(r->fail_msg, sizeof(r->fail_msg), "%s Redis: %s",
             was_ready ? "connection lost to" : "cannot connect to", msg);
    co_seterr(r->error, sizeof(r->error), "%s", r->fail_msg);
    /* every retry fails the same way while Redis is away: debug only; the
     * UP/DOWN transitions are logged by update_state() */
    co_debug("Redis connection attempt failed or lost", "redis=%s error=%s", r->name,
             CO_LOG_Q(msg));
    r->status.failed = true;
    if (was_ready)
        conn_backoff_reset(&r->backoff); /* a first quick retry after a loss */
    if (r->closing)
        r->phase = PH_WAIT;
    else
        schedule_reconnect(r);
    update_state(r);
}

/* The oldest command in flight is older than the command timeout: the
 * server hangs or the network ate the connection.  hiredis has no timeout
 * of its own; dropping the connection fails everything in flight. */
static void on_cmd_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct redis *r = w->data;
    struct redis_cmd *head = r->inflight.head;
    double due;
    char why[128];

    if (head == NULL || r->ac == NULL)
        return;
    due = head->sent_at + r->opts.command_timeout;
    if (due > ev_now(loop) + 0.001) {
        ev_timer_set(w, due - ev_now(loop), 0.);
        ev_timer_start(loop, w);
        return;
    }
    snprintf(why, sizeof(why), "%s timed out after %g s",
             r->phase == PH_READY ? "Redis command" : "connect and handshake",
             r->opts.command_timeout);
    /* a handshake that keeps timing out is one "Redis down", not a line per
     * retry; a live connection going silent is worth its own line */
    if (r->phase == PH_READY)
        co_warn("Redis command timed out, dropping the connection", "redis=%s in_flight=%d",
                r->name, r->pending);
    conn_break(r, why);
}

/* -------------------------------------------------------------- public --- */

void redis_opts_init(struct redis_opts *opts)
{
    opts->name = "redis";
    opts->client = "redis";
    opts->command_timeout = 5;
    opts->backoff_min = 0.1;
    opts->backoff_max = co_tunables.redis_backoff_max;
    opts->max_pending = 10000;
}

static int check_opts(const struct redis_opts *o, const struct co_config *cfg, int nscripts,
                      char *err, size_t errlen)
{
    const char *bad = NULL;

    if (!(o->command_timeout > 0))
        bad = "command_timeout must be positive";
    else if (!(o->backoff_min > 0) || o->backoff_max < o->backoff_min)
        bad = "backoff_min must be positive and not above backoff_max";
    else if (o->max_pending < 1)
        bad = "max_pending must be positive";
    else if (nscripts < 0)
        bad = "the number of scripts must not be negative";
    else if (cfg->redis_host == NULL || cfg->redis_host[0] == '\0')
        bad = "[redis] host is empty";
    else if (cfg->redis_port < 1 || cfg->redis_port > 65535)
        bad = "[redis] port must be 1..65535";
    else if (cfg->redis_db < 0)
        bad = "[redis] db must not be negative";
    if (bad != NULL)
        co_seterr(err, errlen, "%s: %s", o->client != NULL ? o->client : "redis", bad);
    return bad != NULL ? -1 : 0;
}

static int is_numeric_host(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void redis_destroy(struct redis *r)
{
    free(r->name);
    free(r->client);
    free(r->host);
    free(r->password);
    free(r->sha);
    free(r);
}

/* Copy what we need out of CFG and OPTS and hash the scripts; 0 or -1 (out
 * of memory). */
static int copy_config(struct redis *r, const struct co_config *cfg, const struct redis_opts *opts,
                       const struct redis_script *scripts, int n)
{
    r->opts = *opts;
    r->name = strdup(opts->name != NULL ? opts->name : "redis");
    r->client = strdup(opts->client != NULL ? opts->client : "redis");
    r->host = strdup(cfg->redis_host);
    r->password = strdup(cfg->redis_password != NULL ? cfg->redis_password : "");
    r->opts.name = r->name;
    r->opts.client = r->client;
    r->port = cfg->redis_port;
    r->db = cfg->redis_db;
    r->numeric_host = r->host != NULL && is_numeric_host(r->host);
    r->scripts = scripts;
    r->nscripts = n;
    if (n > 0 && (r->sha = calloc((size_t)n, sizeof(*r->sha))) == NULL)
        return -1;
    for (int i = 0; i < n; i++)
        if (sha1_hex(scripts[i].body, r->sha[i]) != 0)
            return -1;
    return r->name && r->client && r->host && r->password ? 0 : -1;
}

struct redis *redis_new(struct ev_loop *loop, const struct co_config *cfg,
                        const struct redis_opts *opts, const struct redis_script *scripts, int n,
                        char *err, size_t errlen)
{
    struct redis_opts defaults;
    struct redis *r;

    if (opts == NULL) {
        redis_opts_init(&defaults);
        opts = &defaults;
    }
    if (check_opts(opts, cfg, n, err, errlen) != 0)
        return NULL;
    if ((r = calloc(1, sizeof(*r))) == NULL || copy_config(r, cfg, opts, scripts, n) != 0) {
        if (r != NULL)
            redis_destroy(r);
        co_seterr(err, errlen, "%s: out of memory", opts->client != NULL ? opts->client : "redis");
        return NULL;
    }
    r->loop = loop;
    r->status.health = CONN_HEALTH_CONNECTING;
    conn_backoff_init(&r->backoff, r->opts.backoff_min, r->opts.backoff_max);
    snprintf(r->addr, sizeof(r->addr), "%s", r->host);
    ev_timer_init(&r->retry, on_retry, 0., 0.);
    r->retry.data = r;
    ev_timer_init(&r->cmd_timer, on_cmd_timer, 0., 0.);
    r->cmd_timer.data = r;
    conn_start(r);
    return r;
}

void redis_free(struct redis *r)
{
    redisAsyncContext *ac;

    if (r == NULL)
        return;
    r->closing = 1;
    ac = r->ac;
    r->ac = NULL;
    snprintf(r->fail_msg, sizeof(r->fail_msg), "%s closed", r->client);
    if (ac != NULL)
        redisAsyncFree(ac); /* in-flight callbacks run now, with fail_msg */
    queue_fail_all(r, r->fail_msg);
    ev_timer_stop(r->loop, &r->retry);
    ev_timer_stop(r->loop, &r->cmd_timer);
    /* A lookup glibc is still working on cannot be freed under it; at exit
     * that one small block is left to the OS. */
    if (r->lookup != NULL && gai_cancel(&r->lookup->cb) != EAI_NOTCANCELED)
        lookup_free(r->lookup);
    redis_destroy(r);
}

/* Why a command cannot be accepted now, or NULL when it can. */
static const char *refusal(struct redis *r)
{
    if (r->closing)
        co_seterr(r->error, sizeof(r->error), "%s closed", r->client);
    else if (r->status.health == CONN_HEALTH_DOWN)
        co_seterr(r->error, sizeof(r->error), "Redis unavailable: %s", r->conn_error);
    else if (r->pending >= r->opts.max_pending)
        co_seterr(r->error, sizeof(r->error), "Redis queue full (%d requests pending)", r->pending);
    else
        return NULL;
    return r->error;
}

int redis_send(struct redis *r, struct redis_cmd *c, redis_reply_cb cb, void *arg)
{
    if (c == NULL || c->oom) {
        cmd_free(c);
        return redis_refuse(r, "out of memory");
    }
    if (refusal(r) != NULL) {
        cmd_free(c);
        return -1;
    }
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    r->pending++;
    c->counted = 1;
    if (r->phase != PH_READY) {
        list_push(&r->queue, c);
    } else if (cmd_send(r, c) != 0) {
        co_seterr(r->error, sizeof(r->error), "cannot send the command to Redis: %s",
                  r->ac->errstr);
        cmd_free(c);
        return -1;
    }
    return 0;
}

int redis_refuse(struct redis *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
    return -1;
}

enum conn_health redis_health(const struct redis *r)
{
    return r->status.health;
}

int redis_idle(const struct redis *r)
{
    return r->pending == 0;
}

const char *redis_run_id(const struct redis *r)
{
    return r->run_id;
}

const char *redis_error(const struct redis *r)
{
    return r->error[0] != '\0' ? r->error : r->conn_error;
}
