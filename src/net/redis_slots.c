/*
 * redis_slots.c — slots, phone locks and the leader lease in Redis, over one
 * hiredis async connection driven by libev (key layout: redis_slots.h).
 *
 * Owns: the connection and its state machine
 *
 *   WAIT --timer--> RESOLVING --address--> HANDSHAKE --last reply--> READY
 *     ^   (host names only,        (TCP connect, AUTH, SELECT,         |
 *     |    getaddrinfo_a)           SCRIPT LOAD, pipelined)            |
 *     +---- failed / timed out --------+---- lost / command timeout ---+
 *
 * the Lua scripts (one per state change, so each is atomic in Redis), the
 * requests in flight (in send order, for the command timeout) and the queue
 * of requests made while the first connection is still being set up.
 *
 * Every request is EVALSHA of a script whose SHA-1 we compute ourselves, so
 * requests can be pipelined right behind SCRIPT LOAD; a NOSCRIPT answer
 * (SCRIPT FLUSH, a failover) is retried once as EVAL with the full text.
 *
 * hiredis contract relied on (0.14): every command callback runs exactly
 * once, with reply == NULL when the context goes away; redisAsyncFree() from
 * inside a callback is deferred until that callback returns.  We free the
 * context only from our timers, from a callback with a real reply, and from
 * redis_slots_free(); a NULL reply means hiredis is freeing it already.
 */
#include <auto-config.h>

#include "net/redis_slots.h"

#include <arpa/inet.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "util/log.h"
#include "util/tunables.h"

/* ------------------------------------------------------------- scripts --- */

/* Redis's own clock in ms.  replicate_commands() lets a script write after
 * TIME on Redis < 5; Redis >= 5 replicates scripts by effects anyway. */
#define LUA_NOW                                                                \
    "if redis.replicate_commands then redis.replicate_commands() end\n"        \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* KEYS: slots, phone, epoch.  ARGV: member, max, lease_ms.
 * Returns {code, in_use}; code as enum slot_result. */
static const char LUA_ACQUIRE[] =
    LUA_NOW
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "if redis.call('EXISTS', KEYS[3]) == 0 then\n"
    "  return {-2, redis.call('ZCARD', KEYS[1])}\n"
    "end\n"
    "local held = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "local owner = redis.call('GET', KEYS[2])\n"
    "local expiry = now + tonumber(ARGV[3])\n"
    "if not held then\n"
    "  local n = redis.call('ZCARD', KEYS[1])\n"
    "  if n >= tonumber(ARGV[2]) then return {0, n} end\n"
    "elseif tonumber(held) > expiry then\n"
    "  expiry = tonumber(held)\n"
    "end\n"
    "if owner and owner ~= ARGV[1] then\n"
    "  if held then redis.call('ZREM', KEYS[1], ARGV[1]) end\n"
    "  return {-1, redis.call('ZCARD', KEYS[1])}\n"
    "end\n"
    "redis.call('ZADD', KEYS[1], expiry, ARGV[1])\n"
    "redis.call('SET', KEYS[2], ARGV[1], 'PX', expiry - now)\n"
    "return {1, redis.call('ZCARD', KEYS[1])}\n";

/* KEYS: slots, phone.  ARGV: member.  Returns how many of the two went. */
static const char LUA_RELEASE[] =
    "local n = redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "if redis.call('GET', KEYS[2]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[2])\n"
    "  n = n + 1\n"
    "end\n"
    "return n\n";

/* KEYS: slots, phone.  ARGV: member, lease_ms.  Returns 1 renewed, 0 lost. */
static const char LUA_EXTEND[] =
    LUA_NOW
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end\n"
    "local owner = redis.call('GET', KEYS[2])\n"
    "if owner and owner ~= ARGV[1] then return 0 end\n"
    "redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])\n"
    "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])\n"
    "return 1\n";

/* KEYS: slots.  Returns the slots in use. */
static const char LUA_COUNT[] =
    LUA_NOW
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "return redis.call('ZCARD', KEYS[1])\n";

/* KEYS: slots, epoch, phone_1 … phone_n.  ARGV: member_i, lease_ms_i pairs.
 * Returns 1 rebuilt, 0 when the marker exists (nothing changed). */
static const char LUA_REBUILD[] =
    "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n"
    LUA_NOW
    "redis.call('DEL', KEYS[1])\n"
    "for i = 3, #KEYS do\n"
    "  local m = ARGV[2 * (i - 3) + 1]\n"
    "  local lease = tonumber(ARGV[2 * (i - 3) + 2])\n"
    "  redis.call('ZADD', KEYS[1], now + lease, m)\n"
    "  redis.call('SET', KEYS[i], m, 'PX', lease)\n"
    "end\n"
    "redis.call('SET', KEYS[2], now)\n"
    "return 1\n";

/* KEYS: leader, token.  ARGV: owner, ttl_ms.  Returns {is_leader, token}. */
static const char LUA_LEADER[] =
    LUA_NOW
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}\n"
    "end\n"
    "if cur then return {0, 0} end\n"
    "if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], now) end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "return {1, redis.call('INCR', KEYS[2])}\n";

/* KEYS: leader.  ARGV: owner.  Returns 1 released, 0 not ours. */
static const char LUA_LEADER_RELEASE[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('DEL', KEYS[1])\n"
    "end\n"
    "return 0\n";

enum script_id { S_ACQUIRE, S_RELEASE, S_EXTEND, S_COUNT, S_REBUILD, S_LEADER, S_LEADER_REL, S_N };

static const char *const SCRIPTS[S_N] = {
    LUA_ACQUIRE, LUA_RELEASE, LUA_EXTEND, LUA_COUNT, LUA_REBUILD, LUA_LEADER, LUA_LEADER_RELEASE,
};

/* ------------------------------------------------------------- structs --- */

enum req_kind {
    RK_AUTH, RK_SELECT, RK_LOAD,           /* handshake, internal */
    RK_ACQUIRE, RK_RELEASE, RK_EXTEND, RK_COUNT, RK_NEEDS, RK_REBUILD, RK_LEADER,
    RK_LEADER_REL
};

enum conn_phase { PH_WAIT, PH_RESOLVING, PH_HANDSHAKE, PH_READY };

struct rs_req {
    struct rs_req *prev, *next;  /* in flight (send order) or queued */
    struct redis_slots *rs;
    enum req_kind kind;
    int script;                  /* enum script_id, or -1 for a plain command */
    int retried;                 /* the NOSCRIPT fallback was used */
    int counted;                 /* counts in rs->pending */
    union {
        slot_acquire_cb acquire;
        slot_done_cb done;
        slot_leader_cb leader;
    } cb;
    void *arg;
    ev_tstamp sent_at;
    int argc, cap, oom;
    char **argv;
    size_t *argvlen;
};

/* A name lookup in flight.  It is never abandoned while glibc may still
 * write into it: a timed-out attempt leaves it running for the next one. */
struct rs_lookup {
    struct gaicb cb;
    struct addrinfo hints;
    char service[8];
    char host[];
};

struct req_list {
    struct rs_req *head, *tail;
};

struct redis_slots {
    struct ev_loop *loop;
    struct redis_slots_opts opts;
    char *name;
    char *host;
    int port;
    char *password;
    int db;
    char *prefix;
    int numeric_host;
    char sha[S_N][41];

    enum conn_phase phase;
    redisAsyncContext *ac;
    struct rs_lookup *lookup;
    ev_tstamp attempt_started;
    int hs_pending;              /* handshake replies still expected */
    ev_timer retry;              /* backoff wait, or polling the name lookup */
    ev_timer cmd_timer;          /* checks the oldest request in flight */
    double backoff;
    struct req_list inflight;    /* sent, in send order */
    struct req_list queue;       /* waiting for the first connection */
    int pending;                 /* caller requests queued or in flight */

    enum redis_slots_state state;
    int failed;                  /* an attempt failed since the last READY */
    int closing;
    uint32_t rnd;
    char addr[INET6_ADDRSTRLEN];
    char conn_error[256];        /* the latest connection failure */
    char fail_msg[320];          /* what requests dying with the connection get */
    char error[400];             /* what redis_slots_error() returns */
};

static void conn_start(struct redis_slots *rs);
static void conn_gone(struct redis_slots *rs, const char *why);
static void update_state(struct redis_slots *rs);
static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* ------------------------------------------------------------- helpers --- */

static void set_error(struct redis_slots *rs, const char *fmt, ...) CO_PRINTF(2, 3);

static void set_error(struct redis_slots *rs, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(rs->error, sizeof(rs->error), fmt, ap);
    va_end(ap);
}

/* Messages on one line, without double quotes, for logs and errors. */
static void flatten(const char *in, char *out, size_t outlen)
{
    size_t o = 0;

    for (const char *p = in ? in : ""; *p != '\0' && o + 1 < outlen; p++)
        out[o++] = *p == '"' ? '\'' : (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
    if (outlen > 0)
        out[o] = '\0';
}

/* Uniform in [0, 1): jitter for the reconnect backoff (xorshift32). */
static double rs_random(struct redis_slots *rs)
{
    uint32_t x = rs->rnd;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rs->rnd = x;
    return (double)x / 4294967296.0;
}

/* Seconds as whole ms for PX and scores; at least 1.  0 when not finite or
 * beyond a year (a caller bug we refuse rather than store). */
static long long to_ms(double s)
{
    if (!isfinite(s) || s > 365.0 * 86400)
        return 0;
    return s * 1000 < 1 ? 1 : (long long)ceil(s * 1000);
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

static void list_push(struct req_list *l, struct rs_req *req)
{
    req->next = NULL;
    req->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = req;
    else
        l->head = req;
    l->tail = req;
}

static void list_unlink(struct req_list *l, struct rs_req *req)
{
    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        l->head = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    else
        l->tail = req->prev;
    req->prev = req->next = NULL;
}

static struct rs_req *list_shift(struct req_list *l)
{
    struct rs_req *req = l->head;

    if (req != NULL)
        list_unlink(l, req);
    return req;
}

/* ------------------------------------------------------------ requests --- */

static int is_user_kind(enum req_kind k)
{
    return k >= RK_ACQUIRE;
}

static struct rs_req *req_new(struct redis_slots *rs, enum req_kind kind, int nargs)
{
    struct rs_req *req = calloc(1, sizeof(*req));

    if (req == NULL)
        return NULL;
    req->argv = calloc((size_t)nargs, sizeof(*req->argv));
    req->argvlen = calloc((size_t)nargs, sizeof(*req->argvlen));
    if (req->argv == NULL || req->argvlen == NULL) {
        free(req->argv);
        free(req->argvlen);
        free(req);
        return NULL;
    }
    req->rs = rs;
    req->kind = kind;
    req->script = -1;
    req->cap = nargs;
    return req;
}

static void req_free(struct rs_req *req)
{
    if (req == NULL)
        return;
    if (req->counted)
        req->rs->pending--;
    for (int i = 0; i < req->argc; i++)
        free(req->argv[i]);
    free(req->argv);
    free(req->argvlen);
    free(req);
}

/* Append one printf-formatted argument; an allocation failure is remembered
 * in req->oom and reported once, when the request is submitted. */
static void req_add(struct rs_req *req, const char *fmt, ...) CO_PRINTF(2, 3);

static void req_add(struct rs_req *req, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int n;

    if (req->oom || req->argc >= req->cap) {
        req->oom = 1;
        return;
    }
    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        req->oom = 1;
        return;
    }
    req->argv[req->argc] = s;
    req->argvlen[req->argc++] = (size_t)n;
}

/* A request running script ID with NKEYS keys and NARGS arguments to come. */
static struct rs_req *req_script(struct redis_slots *rs, enum req_kind kind, int id, int nkeys,
                                 int nargs)
{
    struct rs_req *req = req_new(rs, kind, 3 + nkeys + nargs);

    if (req == NULL)
        return NULL;
    req->script = id;
    req_add(req, "EVALSHA");
    req_add(req, "%s", rs->sha[id]);
    req_add(req, "%d", nkeys);
    return req;
}

/* The caller's callback with an error, then the request is gone. */
static void req_fail(struct rs_req *req, const char *err)
{
    switch (req->kind) {
    case RK_ACQUIRE:
        if (req->cb.acquire != NULL)
            req->cb.acquire(req->arg, SLOT_ERROR, 0, err);
        break;
    case RK_LEADER:
        if (req->cb.leader != NULL)
            req->cb.leader(req->arg, 0, 0, err);
        break;
    case RK_AUTH: case RK_SELECT: case RK_LOAD:
        break;
    default:
        if (req->cb.done != NULL)
            req->cb.done(req->arg, 0, err);
        break;
    }
    req_free(req);
}

static void queue_fail_all(struct redis_slots *rs, const char *msg)
{
    struct rs_req *req;

    while ((req = list_shift(&rs->queue)) != NULL)
        req_fail(req, msg);
}

/* Hand REQ to hiredis and track it for the command timeout. */
static int req_send(struct redis_slots *rs, struct rs_req *req)
{
    if (redisAsyncCommandArgv(rs->ac, on_reply, req, req->argc, (const char **)req->argv,
                              req->argvlen) != REDIS_OK)
        return -1;
    req->sent_at = ev_now(rs->loop);
    list_push(&rs->inflight, req);
    if (!ev_is_active(&rs->cmd_timer)) {
        ev_timer_set(&rs->cmd_timer, rs->opts.command_timeout, 0.);
        ev_timer_start(rs->loop, &rs->cmd_timer);
    }
    return 0;
}

/* ------------------------------------------------------------- replies --- */

static int reply_int(const redisReply *r, long long *v)
{
    if (r->type != REDIS_REPLY_INTEGER)
        return -1;
    *v = r->integer;
    return 0;
}

/* {a, b} of two integers, as the acquire and leader scripts answer. */
static int reply_pair(const redisReply *r, long long *a, long long *b)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        return -1;
    if (reply_int(r->element[0], a) != 0 || reply_int(r->element[1], b) != 0)
        return -1;
    return 0;
}

static void deliver_acquire(struct rs_req *req, const redisReply *r)
{
    long long code, n;

    if (reply_pair(r, &code, &n) != 0 || code < SLOT_NEEDS_REBUILD || code > SLOT_OK) {
        req_fail(req, "unexpected reply from Redis to the acquire script");
        return;
    }
    if (req->cb.acquire != NULL)
        req->cb.acquire(req->arg, (enum slot_result)code, (int)n, NULL);
    req_free(req);
}

static void deliver_leader(struct rs_req *req, const redisReply *r)
{
    long long is_leader, token;

    if (reply_pair(r, &is_leader, &token) != 0) {
        req_fail(req, "unexpected reply from Redis to the leader script");
        return;
    }
    if (req->cb.leader != NULL)
        req->cb.leader(req->arg, is_leader != 0, token, NULL);
    req_free(req);
}

/* The integer answers: release, extend, count, needs_rebuild, rebuild,
 * leader release. */
static void deliver_int(struct rs_req *req, const redisReply *r)
{
    long long v;
    int value;

    if (reply_int(r, &v) != 0) {
        req_fail(req, "unexpected reply from Redis");
        return;
    }
    switch (req->kind) {
    case RK_RELEASE: value = v > 0; break;
    case RK_NEEDS: value = v == 0; break; /* EXISTS epoch */
    default: value = (int)v; break;
    }
    if (req->cb.done != NULL)
        req->cb.done(req->arg, value, NULL);
    req_free(req);
}

static void deliver(struct rs_req *req, const redisReply *r)
{
    char err[256];

    if (r->type == REDIS_REPLY_ERROR) {
        flatten(r->str, err, sizeof(err));
        req_fail(req, err);
    } else if (req->kind == RK_ACQUIRE) {
        deliver_acquire(req, r);
    } else if (req->kind == RK_LEADER) {
        deliver_leader(req, r);
    } else {
        deliver_int(req, r);
    }
}

/* The script cache was flushed (SCRIPT FLUSH, failover to a replica that
 * never saw SCRIPT LOAD): send the same request once as EVAL. */
static int retry_as_eval(struct redis_slots *rs, struct rs_req *req)
{
    char *cmd = strdup("EVAL"), *body = strdup(SCRIPTS[req->script]);

    if (cmd == NULL || body == NULL) {
        free(cmd);
        free(body);
        return -1;
    }
    free(req->argv[0]);
    free(req->argv[1]);
    req->argv[0] = cmd;
    req->argvlen[0] = strlen(cmd);
    req->argv[1] = body;
    req->argvlen[1] = strlen(body);
    req->retried = 1;
    return req_send(rs, req);
}

static int is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* -------------------------------------------------------- the connection -- */

/* Drop the connection on purpose (timeout, handshake error): our state goes
 * first, so the NULL replies hiredis hands out while freeing find it. */
static void conn_break(struct redis_slots *rs, const char *why)
{
    redisAsyncContext *ac = rs->ac;

    conn_gone(rs, why);
    if (ac != NULL)
        redisAsyncFree(ac);
}

static void handshake_reply(struct redis_slots *rs, struct rs_req *req, const redisReply *r)
{
    static const char *const what[] = {"AUTH", "SELECT", "SCRIPT LOAD"};
    char err[256], why[300];

    if (r->type == REDIS_REPLY_ERROR) {
        flatten(r->str, err, sizeof(err));
        snprintf(why, sizeof(why), "%s failed: %s", what[req->kind], err);
        req_free(req);
        conn_break(rs, why);
        return;
    }
    if (req->kind == RK_LOAD && r->type == REDIS_REPLY_STRING &&
        strcmp(r->str, rs->sha[req->script]) != 0)
        co_warn("Redis script hash differs from ours", "redis=%s ours=%s theirs=%s",
                rs->name, rs->sha[req->script], r->str);
    req_free(req);
    if (--rs->hs_pending > 0)
        return;
    rs->phase = PH_READY;
    rs->failed = 0;
    rs->backoff = 0;
    rs->error[0] = rs->conn_error[0] = '\0';
    update_state(rs); /* logs "up", then sends what waited for it */
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rs_req *req = privdata;
    struct redis_slots *rs = req->rs;
    const redisReply *reply = r;
    char why[300];

    list_unlink(&rs->inflight, req);
    if (reply == NULL) {
        if (rs->ac == ac) {
            /* hiredis noticed the loss first (EOF, reset) and is freeing */
            snprintf(why, sizeof(why), "%s", ac->errstr[0] ? ac->errstr : "connection closed");
            conn_gone(rs, why);
        }
        req_fail(req, rs->fail_msg);
        return;
    }
    if (!is_user_kind(req->kind)) {
        handshake_reply(rs, req, reply);
    } else if (is_noscript(reply) && !req->retried && rs->ac == ac) {
        if (retry_as_eval(rs, req) != 0)
            req_fail(req, "cannot resend the script to Redis");
    } else {
        deliver(req, reply);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_slots *rs = ac->data;

    if (status != REDIS_OK && rs->ac == ac)
        conn_gone(rs, ac->errstr[0] ? ac->errstr : "connect failed");
    /* hiredis frees AC itself after a failed connect */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_slots *rs = ac->data;

    if (rs->ac == ac)
        conn_gone(rs, status == REDIS_OK || !ac->errstr[0] ? "connection closed" : ac->errstr);
}

/* Queue AUTH, SELECT and SCRIPT LOAD right behind the TCP connect. */
static int send_handshake(struct redis_slots *rs)
{
    struct rs_req *req;

    rs->hs_pending = 0;
    for (int i = -2; i < S_N; i++) {
        if ((i == -2 && rs->password[0] == '\0') || (i == -1 && rs->db == 0))
            continue;
        req = req_new(rs, i == -2 ? RK_AUTH : i == -1 ? RK_SELECT : RK_LOAD, 3);
        if (req == NULL)
            return -1;
        if (i == -2) {
            req_add(req, "AUTH");
            req_add(req, "%s", rs->password);
        } else if (i == -1) {
            req_add(req, "SELECT");
            req_add(req, "%d", rs->db);
        } else {
            req->script = i;
            req_add(req, "SCRIPT");
            req_add(req, "LOAD");
            req_add(req, "%s", SCRIPTS[i]);
        }
        if (req->oom || req_send(rs, req) != 0) {
            req_free(req);
            return -1;
        }
        rs->hs_pending++;
    }
    return 0;
}

/* Open the TCP connection to the numeric address IP. */
static void conn_open(struct redis_slots *rs, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, rs->port);
    char why[300];

    snprintf(rs->addr, sizeof(rs->addr), "%s", ip);
    if (ac == NULL || ac->err) {
        snprintf(why, sizeof(why), "%s", ac != NULL ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        conn_gone(rs, why);
        return;
    }
    ac->data = rs;
    /* Dead peers of an idle connection; busy ones hit the command timeout. */
    redisEnableKeepAlive(&ac->c);
    if (redisLibevAttach(rs->loop, ac) != REDIS_OK) {
        redisAsyncFree(ac);
        conn_gone(rs, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    rs->ac = ac;
    rs->phase = PH_HANDSHAKE;
    if (send_handshake(rs) != 0)
        conn_break(rs, "cannot queue the handshake (out of memory)");
}

/* ------------------------------------------------------ name resolution -- */

static void lookup_free(struct rs_lookup *l)
{
    if (l == NULL)
        return;
    if (l->cb.ar_result != NULL)
        freeaddrinfo(l->cb.ar_result);
    free(l);
}

static int lookup_start(struct redis_slots *rs)
{
    size_t n = strlen(rs->host) + 1;
    struct rs_lookup *l = calloc(1, sizeof(*l) + n);
    struct gaicb *list[1];

    if (l == NULL)
        return -1;
    memcpy(l->host, rs->host, n);
    snprintf(l->service, sizeof(l->service), "%d", rs->port);
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
    rs->lookup = l;
    return 0;
}

/* The lookup finished with status E: connect to its first address. */
static void lookup_done(struct redis_slots *rs, int e)
{
    struct rs_lookup *l = rs->lookup;
    char ip[INET6_ADDRSTRLEN], why[300];
    const struct addrinfo *ai = l->cb.ar_result;
    int r = e;

    rs->lookup = NULL;
    if (e == 0 && ai != NULL)
        r = getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST);
    else if (e == 0)
        r = EAI_NONAME;
    if (r != 0) {
        snprintf(why, sizeof(why), "cannot resolve %s: %s", rs->host, gai_strerror(r));
        lookup_free(l);
        conn_gone(rs, why);
        return;
    }
    lookup_free(l);
    conn_open(rs, ip);
}

static void poll_lookup(struct redis_slots *rs)
{
    int e = gai_error(&rs->lookup->cb);
    char why[300];

    if (e != EAI_INPROGRESS) {
        lookup_done(rs, e);
    } else if (ev_now(rs->loop) - rs->attempt_started >= rs->opts.command_timeout) {
        snprintf(why, sizeof(why), "resolving %s timed out after %g s", rs->host,
                 rs->opts.command_timeout);
        conn_gone(rs, why); /* the lookup keeps running for the next attempt */
    } else {
        ev_timer_set(&rs->retry, 0.01, 0.);
        ev_timer_start(rs->loop, &rs->retry);
    }
}

/* ------------------------------------------------------- state machine --- */

static void conn_start(struct redis_slots *rs)
{
    rs->attempt_started = ev_now(rs->loop);
    if (rs->numeric_host) {
        conn_open(rs, rs->host);
        return;
    }
    if (rs->lookup == NULL && lookup_start(rs) != 0) {
        conn_gone(rs, "cannot start the name lookup");
        return;
    }
    rs->phase = PH_RESOLVING;
    poll_lookup(rs);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct redis_slots *rs = w->data;

    if (rs->phase == PH_RESOLVING)
        poll_lookup(rs);
    else if (rs->phase == PH_WAIT)
        conn_start(rs);
}

/* Wait before the next attempt: backoff_min doubling to backoff_max, with
 * jitter in [50 %, 100 %] so that many children do not reconnect in step. */
static void schedule_reconnect(struct redis_slots *rs)
{
    double b = rs->backoff > 0 ? rs->backoff * 2 : rs->opts.backoff_min;

    if (b > rs->opts.backoff_max)
        b = rs->opts.backoff_max;
    rs->backoff = b;
    rs->phase = PH_WAIT;
    ev_timer_stop(rs->loop, &rs->retry);
    ev_timer_set(&rs->retry, b * (0.5 + 0.5 * rs_random(rs)), 0.);
    ev_timer_start(rs->loop, &rs->retry);
}

/* Derive the public state; log and act on a change only, so a Redis that
 * stays away is reported once, not on every retry. */
static void update_state(struct redis_slots *rs)
{
    enum redis_slots_state now = rs->phase == PH_READY ? REDIS_SLOTS_UP
                                 : rs->failed          ? REDIS_SLOTS_DOWN
                                                       : REDIS_SLOTS_CONNECTING;
    struct rs_req *req;
    char msg[320];

    if (now == rs->state)
        return;
    rs->state = now;
    if (now == REDIS_SLOTS_UP) {
        co_info("Redis up", "redis=%s addr=%s:%d db=%d", rs->name, rs->addr, rs->port, rs->db);
        while (rs->ac != NULL && (req = list_shift(&rs->queue)) != NULL)
            if (req_send(rs, req) != 0)
                req_fail(req, "cannot send the command to Redis");
    } else if (now == REDIS_SLOTS_DOWN) {
        co_warn("Redis down", "redis=%s addr=%s:%d error=\"%s\"", rs->name, rs->host, rs->port,
                rs->conn_error);
        snprintf(msg, sizeof(msg), "Redis unavailable: %s", rs->conn_error);
        queue_fail_all(rs, msg);
    }
}

/*
 * The connection attempt failed or the connection is gone, for WHY.  Never
 * frees the context: callers that own it free it after this, hiredis frees
 * it otherwise; either way the requests in flight then fail with fail_msg.
 */
static void conn_gone(struct redis_slots *rs, const char *why)
{
    char msg[256];
    int was_ready = rs->phase == PH_READY;

    flatten(why, msg, sizeof(msg));
    rs->ac = NULL;
    rs->hs_pending = 0;
    ev_timer_stop(rs->loop, &rs->cmd_timer);
    snprintf(rs->conn_error, sizeof(rs->conn_error), "%s", msg);
    snprintf(rs->fail_msg, sizeof(rs->fail_msg), "%s Redis: %s",
             was_ready ? "connection lost to" : "cannot connect to", msg);
    set_error(rs, "%s", rs->fail_msg);
    /* every retry fails the same way while Redis is away: debug only; the
     * UP/DOWN transitions are logged by update_state() */
    co_debug("Redis connection attempt failed or lost", "redis=%s error=\"%s\"", rs->name, msg);
    rs->failed = 1;
    if (was_ready)
        rs->backoff = 0; /* a first quick retry after a loss */
    if (rs->closing)
        rs->phase = PH_WAIT;
    else
        schedule_reconnect(rs);
    update_state(rs);
}

/* The oldest request in flight is older than the command timeout: the
 * server hangs or the network ate the connection.  hiredis has no timeout
 * of its own; dropping the connection fails everything in flight. */
static void on_cmd_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct redis_slots *rs = w->data;
    struct rs_req *head = rs->inflight.head;
    double due;
    char why[128];

    if (head == NULL || rs->ac == NULL)
        return;
    due = head->sent_at + rs->opts.command_timeout;
    if (due > ev_now(loop) + 0.001) {
        ev_timer_set(w, due - ev_now(loop), 0.);
        ev_timer_start(loop, w);
        return;
    }
    snprintf(why, sizeof(why), "%s timed out after %g s",
             rs->phase == PH_READY ? "Redis command" : "connect and handshake",
             rs->opts.command_timeout);
    /* a handshake that keeps timing out is one "Redis down", not a line per
     * retry; a live connection going silent is worth its own line */
    if (rs->phase == PH_READY)
        co_warn("Redis command timed out, dropping the connection", "redis=%s in_flight=%d",
                rs->name, rs->pending);
    conn_break(rs, why);
}

/* -------------------------------------------------------------- public --- */

void redis_slots_opts_init(struct redis_slots_opts *opts)
{
    opts->name = "redis";
    opts->command_timeout = 5;
    opts->backoff_min = 0.1;
    opts->backoff_max = co_tunables.redis_backoff_max;
    opts->max_pending = 10000;
}

static int check_opts(const struct redis_slots_opts *o, const struct co_config *cfg, char *err,
                      size_t errlen)
{
    const char *bad = NULL;

    if (!(o->command_timeout > 0))
        bad = "command_timeout must be positive";
    else if (!(o->backoff_min > 0) || o->backoff_max < o->backoff_min)
        bad = "backoff_min must be positive and not above backoff_max";
    else if (o->max_pending < 1)
        bad = "max_pending must be positive";
    else if (cfg->redis_host == NULL || cfg->redis_host[0] == '\0')
        bad = "[redis] host is empty";
    else if (cfg->redis_port < 1 || cfg->redis_port > 65535)
        bad = "[redis] port must be 1..65535";
    else if (cfg->redis_db < 0)
        bad = "[redis] db must not be negative";
    if (bad != NULL)
        snprintf(err, errlen, "redis_slots: %s", bad);
    return bad != NULL ? -1 : 0;
}

static int is_numeric_host(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void rs_destroy(struct redis_slots *rs)
{
    free(rs->name);
    free(rs->host);
    free(rs->password);
    free(rs->prefix);
    free(rs);
}

/* Copy what we need out of CFG and OPTS; 0 or -1 (out of memory). */
static int rs_copy_config(struct redis_slots *rs, const struct co_config *cfg,
                          const struct redis_slots_opts *opts)
{
    rs->opts = *opts;
    rs->name = strdup(opts->name != NULL ? opts->name : "redis");
    rs->host = strdup(cfg->redis_host);
    rs->password = strdup(cfg->redis_password != NULL ? cfg->redis_password : "");
    rs->prefix = strdup(cfg->redis_key_prefix != NULL ? cfg->redis_key_prefix : "");
    rs->opts.name = rs->name;
    rs->port = cfg->redis_port;
    rs->db = cfg->redis_db;
    rs->numeric_host = rs->host != NULL && is_numeric_host(rs->host);
    for (int i = 0; i < S_N; i++)
        if (sha1_hex(SCRIPTS[i], rs->sha[i]) != 0)
            return -1;
    return rs->name && rs->host && rs->password && rs->prefix ? 0 : -1;
}

struct redis_slots *redis_slots_new(struct ev_loop *loop, const struct co_config *cfg,
                                    const struct redis_slots_opts *opts, char *err,
                                    size_t errlen)
{
    struct redis_slots_opts defaults;
    struct redis_slots *rs;

    if (opts == NULL) {
        redis_slots_opts_init(&defaults);
        opts = &defaults;
    }
    if (check_opts(opts, cfg, err, errlen) != 0)
        return NULL;
    if ((rs = calloc(1, sizeof(*rs))) == NULL || rs_copy_config(rs, cfg, opts) != 0) {
        if (rs != NULL)
            rs_destroy(rs);
        snprintf(err, errlen, "redis_slots: out of memory");
        return NULL;
    }
    rs->loop = loop;
    rs->state = REDIS_SLOTS_CONNECTING;
    rs->rnd = (uint32_t)time(NULL) ^ (uint32_t)getpid() << 16 ^ (uint32_t)(uintptr_t)rs;
    rs->rnd = rs->rnd ? rs->rnd : 1;
    snprintf(rs->addr, sizeof(rs->addr), "%s", rs->host);
    ev_timer_init(&rs->retry, on_retry, 0., 0.);
    rs->retry.data = rs;
    ev_timer_init(&rs->cmd_timer, on_cmd_timer, 0., 0.);
    rs->cmd_timer.data = rs;
    conn_start(rs);
    return rs;
}

void redis_slots_free(struct redis_slots *rs)
{
    redisAsyncContext *ac;

    if (rs == NULL)
        return;
    rs->closing = 1;
    ac = rs->ac;
    rs->ac = NULL;
    snprintf(rs->fail_msg, sizeof(rs->fail_msg), "redis_slots closed");
    if (ac != NULL)
        redisAsyncFree(ac); /* in-flight callbacks run now, with fail_msg */
    queue_fail_all(rs, "redis_slots closed");
    ev_timer_stop(rs->loop, &rs->retry);
    ev_timer_stop(rs->loop, &rs->cmd_timer);
    /* A lookup glibc is still working on cannot be freed under it; at exit
     * that one small block is left to the OS. */
    if (rs->lookup != NULL && gai_cancel(&rs->lookup->cb) != EAI_NOTCANCELED)
        lookup_free(rs->lookup);
    rs_destroy(rs);
}

/* Why a request cannot be accepted now, or NULL when it can. */
static const char *refusal(struct redis_slots *rs)
{
    if (rs->closing)
        set_error(rs, "redis_slots closed");
    else if (rs->state == REDIS_SLOTS_DOWN)
        set_error(rs, "Redis unavailable: %s", rs->conn_error);
    else if (rs->pending >= rs->opts.max_pending)
        set_error(rs, "Redis queue full (%d requests pending)", rs->pending);
    else
        return NULL;
    return rs->error;
}

/* Accept REQ (send it, or queue it while the first connection is made), or
 * free it and return -1. */
static int submit(struct redis_slots *rs, struct rs_req *req)
{
    if (req == NULL) {
        set_error(rs, "out of memory");
        return -1;
    }
    if (req->oom) {
        set_error(rs, "out of memory");
        req_free(req);
        return -1;
    }
    if (refusal(rs) != NULL) {
        req_free(req);
        return -1;
    }
    rs->pending++;
    req->counted = 1;
    if (rs->phase != PH_READY) {
        list_push(&rs->queue, req);
    } else if (req_send(rs, req) != 0) {
        set_error(rs, "cannot send the command to Redis: %s", rs->ac->errstr);
        req_free(req);
        return -1;
    }
    return 0;
}

/* A request function got invalid arguments: refuse it. */
static int invalid(struct redis_slots *rs, const char *what)
{
    set_error(rs, "invalid argument: %s", what);
    return -1;
}

static int bad_owner(const char *call_id, int attempt, const char *phone)
{
    return call_id == NULL || call_id[0] == '\0' || attempt < 0 || phone == NULL ||
           phone[0] == '\0';
}

/* A slots request with KEYS slots, phone (+ EXTRA_KEY) and ARGV member. */
static struct rs_req *req_owner(struct redis_slots *rs, enum req_kind kind, int id,
                                const char *call_id, int attempt, const char *phone,
                                int extra_key, int nargs)
{
    struct rs_req *req = req_script(rs, kind, id, 2 + extra_key, 1 + nargs);

    if (req == NULL)
        return NULL;
    req_add(req, "%sslots", rs->prefix);
    req_add(req, "%sphone:%s", rs->prefix, phone);
    if (extra_key)
        req_add(req, "%sepoch", rs->prefix);
    req_add(req, "%s:%d", call_id, attempt);
    return req;
}

int redis_slots_acquire(struct redis_slots *rs, const char *call_id, int attempt,
                        const char *phone, int max_slots, double lease_s, slot_acquire_cb cb,
                        void *arg)
{
    long long ms = to_ms(lease_s);
    struct rs_req *req;

    if (bad_owner(call_id, attempt, phone) || max_slots < 0 || !(lease_s > 0) || ms == 0)
        return invalid(rs, "call id, attempt, phone, max_slots or lease");
    req = req_owner(rs, RK_ACQUIRE, S_ACQUIRE, call_id, attempt, phone, 1, 2);
    if (req != NULL) {
        req_add(req, "%d", max_slots);
        req_add(req, "%lld", ms);
        req->cb.acquire = cb;
        req->arg = arg;
    }
    return submit(rs, req);
}

int redis_slots_release(struct redis_slots *rs, const char *call_id, int attempt,
                        const char *phone, slot_done_cb cb, void *arg)
{
    struct rs_req *req;

    if (bad_owner(call_id, attempt, phone))
        return invalid(rs, "call id, attempt or phone");
    req = req_owner(rs, RK_RELEASE, S_RELEASE, call_id, attempt, phone, 0, 0);
    if (req != NULL) {
        req->cb.done = cb;
        req->arg = arg;
    }
    return submit(rs, req);
}

int redis_slots_extend(struct redis_slots *rs, const char *call_id, int attempt,
                       const char *phone, double lease_s, slot_done_cb cb, void *arg)
{
    long long ms = to_ms(lease_s);
    struct rs_req *req;

    if (bad_owner(call_id, attempt, phone) || !(lease_s > 0) || ms == 0)
        return invalid(rs, "call id, attempt, phone or lease");
    req = req_owner(rs, RK_EXTEND, S_EXTEND, call_id, attempt, phone, 0, 1);
    if (req != NULL) {
        req_add(req, "%lld", ms);
        req->cb.done = cb;
        req->arg = arg;
    }
    return submit(rs, req);
}

int redis_slots_count(struct redis_slots *rs, slot_done_cb cb, void *arg)
{
    struct rs_req *req = req_script(rs, RK_COUNT, S_COUNT, 1, 0);

    if (req != NULL) {
        req_add(req, "%sslots", rs->prefix);
        req->cb.done = cb;
        req->arg = arg;
    }
    return submit(rs, req);
}

int redis_slots_needs_rebuild(struct redis_slots *rs, slot_done_cb cb, void *arg)
{
    struct rs_req *req = req_new(rs, RK_NEEDS, 2);

    if (req != NULL) {
        req_add(req, "EXISTS");
        req_add(req, "%sepoch", rs->prefix);
        req->cb.done = cb;
        req->arg = arg;
    }
    return submit(rs, req);
}

/* Redis takes at most 1M arguments per command; stay well below. */
#define REBUILD_MAX 100000

/* An entry's lease: at least 1 s (see struct slot_entry), at most a year. */
static long long rebuild_ms(double s)
{
    long long ms;

    if (!(s >= 1))
        return 1000;
    ms = to_ms(s);
    return ms != 0 ? ms : 365LL * 86400 * 1000;
}

int redis_slots_rebuild(struct redis_slots *rs, const struct slot_entry *e, int n,
                        slot_done_cb cb, void *arg)
{
    struct rs_req *req;

    if (n < 0 || n > REBUILD_MAX || (n > 0 && e == NULL))
        return invalid(rs, "number of entries");
    for (int i = 0; i < n; i++)
        if (bad_owner(e[i].call_id, e[i].attempt, e[i].phone) || isnan(e[i].lease_s))
            return invalid(rs, "an entry's call id, attempt, phone or lease");
    if ((req = req_script(rs, RK_REBUILD, S_REBUILD, 2 + n, 2 * n)) == NULL)
        return submit(rs, NULL);
    req_add(req, "%sslots", rs->prefix);
    req_add(req, "%sepoch", rs->prefix);
    for (int i = 0; i < n; i++)
        req_add(req, "%sphone:%s", rs->prefix, e[i].phone);
    for (int i = 0; i < n; i++) {
        req_add(req, "%s:%d", e[i].call_id, e[i].attempt);
        req_add(req, "%lld", rebuild_ms(e[i].lease_s));
    }
    req->cb.done = cb;
    req->arg = arg;
    return submit(rs, req);
}

int redis_leader_acquire(struct redis_slots *rs, const char *owner, double ttl_s,
                         slot_leader_cb cb, void *arg)
{
    long long ms = to_ms(ttl_s);
    struct rs_req *req;

    if (owner == NULL || owner[0] == '\0' || !(ttl_s > 0) || ms == 0)
        return invalid(rs, "owner or ttl");
    if ((req = req_script(rs, RK_LEADER, S_LEADER, 2, 2)) != NULL) {
        req_add(req, "%sleader", rs->prefix);
        req_add(req, "%sleader:token", rs->prefix);
        req_add(req, "%s", owner);
        req_add(req, "%lld", ms);
        req->cb.leader = cb;
        req->arg = arg;
    }
    return submit(rs, req);
}

int redis_leader_release(struct redis_slots *rs, const char *owner, slot_done_cb cb, void *arg)
{
    struct rs_req *req;

    if (owner == NULL || owner[0] == '\0')
        return invalid(rs, "owner");
    if ((req = req_script(rs, RK_LEADER_REL, S_LEADER_REL, 1, 1)) != NULL) {
        req_add(req, "%sleader", rs->prefix);
        req_add(req, "%s", owner);
        req->cb.done = cb;
        req->arg = arg;
    }
    return submit(rs, req);
}

int redis_slots_is_up(const struct redis_slots *rs)
{
    return rs->state == REDIS_SLOTS_UP;
}

enum redis_slots_state redis_slots_state(const struct redis_slots *rs)
{
    return rs->state;
}

int redis_slots_idle(const struct redis_slots *rs)
{
    return rs->pending == 0;
}

const char *redis_slots_error(const struct redis_slots *rs)
{
    return rs->error[0] != '\0' ? rs->error : rs->conn_error;
}
