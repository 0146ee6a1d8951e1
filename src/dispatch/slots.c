/*
 * slots.c — slots, phone locks and the leader lease in Redis (key layout and
 * lease tokens: slots.h).
 *
 * Owns: the Lua scripts (one per state change, so each is atomic in Redis),
 * the commands that run them, and the translation of their answers into
 * the callbacks of slots.h.  Sending, queueing, timeouts and reconnecting
 * are net/redis.c's: every request here is one redis_send() whose reply
 * comes back to on_reply() below.
 */
#include <auto-config.h>

#include "dispatch/slots.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "net/redis.h"
#include "util/err.h"

/* ------------------------------------------------------------- scripts --- */

/* Redis's own clock in ms.  replicate_commands() lets a script write after
 * TIME on Redis < 5; Redis >= 5 replicates scripts by effects anyway. */
#define LUA_NOW                                                                \
    "if redis.replicate_commands then redis.replicate_commands() end\n"        \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* KEYS: slots, phone, epoch.  ARGV: token, max, lease_ms.
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

/* KEYS: slots, phone.  ARGV: token.  Returns how many of the two went. */
static const char LUA_RELEASE[] =
    "local n = redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "if redis.call('GET', KEYS[2]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[2])\n"
    "  n = n + 1\n"
    "end\n"
    "return n\n";

/* KEYS: slots, phone.  ARGV: token, lease_ms.  Returns 1 renewed, 0 lost. */
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

/* KEYS: slots, epoch, phone_1 … phone_n.  ARGV: token_i, lease_ms_i pairs.
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

/* Loaded on every connection by net/redis.c, run by their index. */
static const struct redis_script SCRIPTS[S_N] = {
    [S_ACQUIRE] = {"acquire", LUA_ACQUIRE},
    [S_RELEASE] = {"release", LUA_RELEASE},
    [S_EXTEND] = {"extend", LUA_EXTEND},
    [S_COUNT] = {"count", LUA_COUNT},
    [S_REBUILD] = {"rebuild", LUA_REBUILD},
    [S_LEADER] = {"leader", LUA_LEADER},
    [S_LEADER_REL] = {"leader_release", LUA_LEADER_RELEASE},
};

/* ------------------------------------------------------------- structs --- */

/* What a reply means, by the request that asked. */
enum req_kind {
    RK_ACQUIRE, RK_RELEASE, RK_EXTEND, RK_COUNT, RK_NEEDS, RK_REBUILD, RK_LEADER, RK_LEADER_REL
};

/* The caller's side of one request in flight: whom to tell, and how. */
struct slot_req {
    enum req_kind kind;
    union {
        slot_acquire_cb acquire;
        slot_done_cb done;
        slot_leader_cb leader;
    } cb;
    void *arg;
};

struct redis_slots {
    struct redis *redis;
    char *prefix;                /* [redis] key_prefix */
};

/* ------------------------------------------------------------- helpers --- */

/* Seconds as whole ms for PX and scores; at least 1.  0 when not finite or
 * beyond a year (a caller bug we refuse rather than store). */
static long long to_ms(double s)
{
    if (!isfinite(s) || s > 365.0 * 86400)
        return 0;
    return s * 1000 < 1 ? 1 : (long long)ceil(s * 1000);
}

/* ------------------------------------------------------------- replies --- */

/* The caller's callback with an error, then the request is gone. */
static void req_fail(struct slot_req *req, const char *err)
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
    default:
        if (req->cb.done != NULL)
            req->cb.done(req->arg, 0, err);
        break;
    }
    free(req);
}

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

static void deliver_acquire(struct slot_req *req, const redisReply *r)
{
    long long code, n;

    if (reply_pair(r, &code, &n) != 0 || code < SLOT_NEEDS_REBUILD || code > SLOT_OK) {
        req_fail(req, "unexpected reply from Redis to the acquire script");
        return;
    }
    if (req->cb.acquire != NULL)
        req->cb.acquire(req->arg, (enum slot_result)code, (int)n, NULL);
    free(req);
}

static void deliver_leader(struct slot_req *req, const redisReply *r)
{
    long long is_leader, token;

    if (reply_pair(r, &is_leader, &token) != 0) {
        req_fail(req, "unexpected reply from Redis to the leader script");
        return;
    }
    if (req->cb.leader != NULL)
        req->cb.leader(req->arg, is_leader != 0, token, NULL);
    free(req);
}

/* The integer answers: release, extend, count, needs_rebuild, rebuild,
 * leader release. */
static void deliver_int(struct slot_req *req, const redisReply *r)
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
    free(req);
}

/* net/redis.c's answer to one request (redis_reply_cb). */
static void on_reply(void *arg, const redisReply *reply, const char *err)
{
    struct slot_req *req = arg;

    if (err != NULL)
        req_fail(req, err);
    else if (req->kind == RK_ACQUIRE)
        deliver_acquire(req, reply);
    else if (req->kind == RK_LEADER)
        deliver_leader(req, reply);
    else
        deliver_int(req, reply);
}

/* ------------------------------------------------------------ requests --- */

/* The caller's side of a request of KIND; NULL (refusal recorded) when out
 * of memory.  The caller sets the callback member KIND uses. */
static struct slot_req *req_new(struct redis_slots *rs, enum req_kind kind, void *arg)
{
    struct slot_req *req = calloc(1, sizeof(*req));

    if (req == NULL) {
        redis_refuse(rs->redis, "out of memory");
        return NULL;
    }
    req->kind = kind;
    req->arg = arg;
    return req;
}

/* Send CMD for REQ: 0, or -1 (REQ freed, its callback never called). */
static int submit(struct redis_slots *rs, struct redis_cmd *cmd, struct slot_req *req)
{
    if (redis_send(rs->redis, cmd, on_reply, req) != 0) {
        free(req);
        return -1;
    }
    return 0;
}

/* A request function got invalid arguments: refuse it. */
static int invalid(struct redis_slots *rs, const char *what)
{
    return redis_refuse(rs->redis, "invalid argument: %s", what);
}

static int bad_owner(const char *call_id, int attempt, const char *phone)
{
    return call_id == NULL || call_id[0] == '\0' || attempt < 0 || phone == NULL ||
           phone[0] == '\0';
}

/* A script with KEYS slots, phone (+ epoch when WITH_EPOCH) and ARGV the
 * lease token, NARGS more arguments to add. */
static struct redis_cmd *cmd_token(struct redis_slots *rs, int id, const char *call_id,
                                   int attempt, const char *phone, int with_epoch, int nargs)
{
    struct redis_cmd *cmd = redis_cmd_script(rs->redis, id, 2 + with_epoch, 1 + nargs);

    redis_cmd_add(cmd, "%sslots", rs->prefix);
    redis_cmd_add(cmd, "%sphone:%s", rs->prefix, phone);
    if (with_epoch)
        redis_cmd_add(cmd, "%sepoch", rs->prefix);
    redis_cmd_add(cmd, "%s:%d", call_id, attempt);
    return cmd;
}

/* -------------------------------------------------------------- public --- */

void redis_slots_opts_init(struct redis_slots_opts *opts)
{
    struct redis_opts o;

    redis_opts_init(&o);
    opts->name = o.name;
    opts->command_timeout = o.command_timeout;
    opts->backoff_min = o.backoff_min;
    opts->backoff_max = o.backoff_max;
    opts->max_pending = o.max_pending;
}

struct redis_slots *redis_slots_new(struct ev_loop *loop, const struct co_config *cfg,
                                    const struct redis_slots_opts *opts, char *err,
                                    size_t errlen)
{
    struct redis_opts o;
    struct redis_slots *rs;

    redis_opts_init(&o);
    o.client = "redis_slots";
    if (opts != NULL) {
        o.name = opts->name;
        o.command_timeout = opts->command_timeout;
        o.backoff_min = opts->backoff_min;
        o.backoff_max = opts->backoff_max;
        o.max_pending = opts->max_pending;
    }
    if ((rs = calloc(1, sizeof(*rs))) == NULL ||
        (rs->prefix = strdup(cfg->redis_key_prefix != NULL ? cfg->redis_key_prefix : "")) ==
            NULL) {
        free(rs);
        co_seterr(err, errlen, "redis_slots: out of memory");
        return NULL;
    }
    if ((rs->redis = redis_new(loop, cfg, &o, SCRIPTS, S_N, err, errlen)) == NULL) {
        free(rs->prefix);
        free(rs);
        return NULL;
    }
    return rs;
}

void redis_slots_free(struct redis_slots *rs)
{
    if (rs == NULL)
        return;
    redis_free(rs->redis); /* fails what is pending: "redis_slots closed" */
    free(rs->prefix);
    free(rs);
}

int redis_slots_acquire(struct redis_slots *rs, const char *call_id, int attempt,
                        const char *phone, int max_slots, double lease_s, slot_acquire_cb cb,
                        void *arg)
{
    long long ms = to_ms(lease_s);
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (bad_owner(call_id, attempt, phone) || max_slots < 0 || !(lease_s > 0) || ms == 0)
        return invalid(rs, "call id, attempt, phone, max_slots or lease");
    if ((req = req_new(rs, RK_ACQUIRE, arg)) == NULL)
        return -1;
    req->cb.acquire = cb;
    cmd = cmd_token(rs, S_ACQUIRE, call_id, attempt, phone, 1, 2);
    redis_cmd_add(cmd, "%d", max_slots);
    redis_cmd_add(cmd, "%lld", ms);
    return submit(rs, cmd, req);
}

int redis_slots_release(struct redis_slots *rs, const char *call_id, int attempt,
                        const char *phone, slot_done_cb cb, void *arg)
{
    struct slot_req *req;

    if (bad_owner(call_id, attempt, phone))
        return invalid(rs, "call id, attempt or phone");
    if ((req = req_new(rs, RK_RELEASE, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    return submit(rs, cmd_token(rs, S_RELEASE, call_id, attempt, phone, 0, 0), req);
}

int redis_slots_extend(struct redis_slots *rs, const char *call_id, int attempt,
                       const char *phone, double lease_s, slot_done_cb cb, void *arg)
{
    long long ms = to_ms(lease_s);
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (bad_owner(call_id, attempt, phone) || !(lease_s > 0) || ms == 0)
        return invalid(rs, "call id, attempt, phone or lease");
    if ((req = req_new(rs, RK_EXTEND, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    cmd = cmd_token(rs, S_EXTEND, call_id, attempt, phone, 0, 1);
    redis_cmd_add(cmd, "%lld", ms);
    return submit(rs, cmd, req);
}

int redis_slots_count(struct redis_slots *rs, slot_done_cb cb, void *arg)
{
    struct slot_req *req = req_new(rs, RK_COUNT, arg);
    struct redis_cmd *cmd;

    if (req == NULL)
        return -1;
    req->cb.done = cb;
    cmd = redis_cmd_script(rs->redis, S_COUNT, 1, 0);
    redis_cmd_add(cmd, "%sslots", rs->prefix);
    return submit(rs, cmd, req);
}

int redis_slots_needs_rebuild(struct redis_slots *rs, slot_done_cb cb, void *arg)
{
    struct slot_req *req = req_new(rs, RK_NEEDS, arg);
    struct redis_cmd *cmd;

    if (req == NULL)
        return -1;
    req->cb.done = cb;
    cmd = redis_cmd_new(2);
    redis_cmd_add(cmd, "EXISTS");
    redis_cmd_add(cmd, "%sepoch", rs->prefix);
    return submit(rs, cmd, req);
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
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (n < 0 || n > REBUILD_MAX || (n > 0 && e == NULL))
        return invalid(rs, "number of entries");
    for (int i = 0; i < n; i++)
        if (bad_owner(e[i].call_id, e[i].attempt, e[i].phone) || isnan(e[i].lease_s))
            return invalid(rs, "an entry's call id, attempt, phone or lease");
    if ((req = req_new(rs, RK_REBUILD, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    cmd = redis_cmd_script(rs->redis, S_REBUILD, 2 + n, 2 * n);
    redis_cmd_add(cmd, "%sslots", rs->prefix);
    redis_cmd_add(cmd, "%sepoch", rs->prefix);
    for (int i = 0; i < n; i++)
        redis_cmd_add(cmd, "%sphone:%s", rs->prefix, e[i].phone);
    for (int i = 0; i < n; i++) {
        redis_cmd_add(cmd, "%s:%d", e[i].call_id, e[i].attempt);
        redis_cmd_add(cmd, "%lld", rebuild_ms(e[i].lease_s));
    }
    return submit(rs, cmd, req);
}

int redis_leader_acquire(struct redis_slots *rs, const char *owner, double ttl_s,
                         slot_leader_cb cb, void *arg)
{
    long long ms = to_ms(ttl_s);
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (owner == NULL || owner[0] == '\0' || !(ttl_s > 0) || ms == 0)
        return invalid(rs, "owner or ttl");
    if ((req = req_new(rs, RK_LEADER, arg)) == NULL)
        return -1;
    req->cb.leader = cb;
    cmd = redis_cmd_script(rs->redis, S_LEADER, 2, 2);
    redis_cmd_add(cmd, "%sleader", rs->prefix);
    redis_cmd_add(cmd, "%sleader:token", rs->prefix);
    redis_cmd_add(cmd, "%s", owner);
    redis_cmd_add(cmd, "%lld", ms);
    return submit(rs, cmd, req);
}

int redis_leader_release(struct redis_slots *rs, const char *owner, slot_done_cb cb, void *arg)
{
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (owner == NULL || owner[0] == '\0')
        return invalid(rs, "owner");
    if ((req = req_new(rs, RK_LEADER_REL, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    cmd = redis_cmd_script(rs->redis, S_LEADER_REL, 1, 1);
    redis_cmd_add(cmd, "%sleader", rs->prefix);
    redis_cmd_add(cmd, "%s", owner);
    return submit(rs, cmd, req);
}

int redis_slots_is_up(const struct redis_slots *rs)
{
    return redis_health(rs->redis) == CONN_HEALTH_UP;
}

enum redis_slots_state redis_slots_state(const struct redis_slots *rs)
{
    switch (redis_health(rs->redis)) {
    case CONN_HEALTH_UP: return REDIS_SLOTS_UP;
    case CONN_HEALTH_DOWN: return REDIS_SLOTS_DOWN;
    case CONN_HEALTH_CONNECTING: break;
    }
    return REDIS_SLOTS_CONNECTING;
}

int redis_slots_idle(const struct redis_slots *rs)
{
    return redis_idle(rs->redis);
}

const char *redis_slots_error(const struct redis_slots *rs)
{
    return redis_error(rs->redis);
}
