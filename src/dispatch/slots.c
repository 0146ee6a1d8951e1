/*
 * slots.c — slots, phone locks and the leader lease in Redis (key layout and
 * lease tokens: slots.h).
 *
 * Owns: the Lua scripts (one per state change, so each is atomic in Redis;
 * the reconcile's scan, fenced drop and restore too), the commands that run
 * them, the translation of their answers into the callbacks of slots.h, and
 * the queue of releases sent again until Redis answers them.  Sending, queueing, timeouts and reconnecting
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
#include "util/log.h"

/* ------------------------------------------------------------- scripts --- */

/* Redis's own clock in ms.  replicate_commands() lets a script write after
 * TIME on Redis < 5; Redis >= 5 replicates scripts by effects anyway. */
#define LUA_NOW                                                         \
    "if redis.replicate_commands then redis.replicate_commands() end\n" \
    "local t = redis.call('TIME')\n"                                    \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* The server's run_id: it changes when Redis restarts or a replica takes
 * over.  The epoch marker records "<ms>:<run_id>" of the rebuild; a marker
 * of another run (restored from a snapshot, or replicated from a master
 * that is gone) counts as missing: the slot set may be older than the
 * calls in progress.  Every script that uses it gets the run_id as its
 * LAST argument, as the connection's handshake read it (net/redis.c): a
 * command runs on the server its connection reached, and INFO inside each
 * acquire cost ~80 us of Redis's time.  An empty one (INFO refused at the
 * handshake) makes the script ask INFO itself.  EPOCH_OK(ep) says whether
 * EP is this run's. */
#define LUA_RUN                                                                   \
    "local run = ARGV[#ARGV]\n"                                                   \
    "if run == '' then\n"                                                         \
    "  run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or '?'\n" \
    "end\n"                                                                       \
    "local function epoch_ok(ep)\n"                                               \
    "  return ep and string.sub(ep, -(#run + 1)) == ':' .. run\n"                 \
    "end\n"

/* KEYS: slots, phone, epoch, freq, camp, rate, camp rate, pause.  ARGV:
 * token, max, lease_ms, cap, period_ms, camp_max, rate_n, rate_win_ms,
 * camp_rate_n, camp_rate_win_ms, run_id.  Returns {code, in_use} and, for
 * SLOT_FREQUENCY, SLOT_PACED and SLOT_PROVIDER_PAUSED, the ms (Redis's
 * clock) from which it may succeed; code as enum slot_result.
 *
 * The order of the checks: the provider's 429 pause, the number's attempt
 * cap (a number over its budget is held until a definite time instead of
 * parked and republished), the global slots, the campaign's slots, the
 * pacing windows, the phone lock; nothing is written unless all pass.
 * With cap 0 the freq key is not touched, with camp_max 0 the campaign
 * set (no campaign, or one without a cap: a cap set later counts the
 * calls started from then on), with rate_n 0 the pacing log.  A token that holds its
 * slot already (the same request again) is not checked twice.
 *
 * The campaign set holds the tokens of the campaign's calls, and a token
 * counts only while it holds a lease in the slot set: every release, lease
 * expiry, reconcile drop and rebuild of the slot set thus frees the
 * campaign's slot too, with no campaign id needed on those paths; members
 * without a lease are removed here, when the set is next read.  The pacing
 * logs are sorted sets of the tokens started within the window, scored by
 * when: "at most N in any window" holds exactly, on one clock. */
static const char LUA_ACQUIRE[] =
    LUA_NOW "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n" LUA_RUN
            "if not epoch_ok(redis.call('GET', KEYS[3])) then\n"
            "  return {-2, redis.call('ZCARD', KEYS[1])}\n"
            "end\n"
            "local held = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
            "local owner = redis.call('GET', KEYS[2])\n"
            "local expiry = now + tonumber(ARGV[3])\n"
            "local cap, period = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
            "local cmax = tonumber(ARGV[6])\n"
            "local function paced(key, n, win)\n"
            "  n, win = tonumber(n), tonumber(win)\n"
            "  if n <= 0 then return nil end\n"
            "  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)\n"
            "  if redis.call('ZCARD', key) < n then return nil end\n"
            "  return tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) + win\n"
            "end\n"
            "local function log_start(key, n, win)\n"
            "  if tonumber(n) <= 0 then return end\n"
            "  redis.call('ZADD', key, now, ARGV[1])\n"
            "  redis.call('PEXPIRE', key, win)\n"
            "end\n"
            "if not held then\n"
            "  local p = redis.call('PTTL', KEYS[8])\n"
            "  if p > 0 then return {-7, redis.call('ZCARD', KEYS[1]), now + p} end\n"
            "end\n"
            "if cap > 0 and not held then\n"
            "  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - period)\n"
            "  if not redis.call('ZSCORE', KEYS[4], ARGV[1])\n"
            "     and redis.call('ZCARD', KEYS[4]) >= cap then\n"
            "    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')\n"
            "    return {-4, redis.call('ZCARD', KEYS[1]), tonumber(oldest[2]) + period}\n"
            "  end\n"
            "end\n"
            "if not held then\n"
            "  local n = redis.call('ZCARD', KEYS[1])\n"
            "  if n >= tonumber(ARGV[2]) then return {0, n} end\n"
            "  if cmax > 0 then\n"
            "    local live = 0\n"
            "    for _, m in ipairs(redis.call('SMEMBERS', KEYS[5])) do\n"
            "      if redis.call('ZSCORE', KEYS[1], m) then live = live + 1\n"
            "      else redis.call('SREM', KEYS[5], m) end\n"
            "    end\n"
            "    if live >= cmax then return {-5, n} end\n"
            "  end\n"
            "  local at = paced(KEYS[6], ARGV[7], ARGV[8]) or paced(KEYS[7], ARGV[9], ARGV[10])\n"
            "  if at then return {-6, n, at} end\n"
            "elseif tonumber(held) > expiry then\n"
            "  expiry = tonumber(held)\n"
            "end\n"
            "if owner and owner ~= ARGV[1] then\n"
            "  if held then redis.call('ZREM', KEYS[1], ARGV[1]) end\n"
            "  return {-1, redis.call('ZCARD', KEYS[1])}\n"
            "end\n"
            "redis.call('ZADD', KEYS[1], expiry, ARGV[1])\n"
            "redis.call('SET', KEYS[2], ARGV[1], 'PX', expiry - now)\n"
            "if cap > 0 then\n"
            "  redis.call('ZADD', KEYS[4], 'NX', now, ARGV[1])\n"
            "  redis.call('PEXPIRE', KEYS[4], period)\n"
            "end\n"
            "if cmax > 0 then redis.call('SADD', KEYS[5], ARGV[1]) end\n"
            "if not held then\n"
            "  log_start(KEYS[6], ARGV[7], ARGV[8])\n"
            "  log_start(KEYS[7], ARGV[9], ARGV[10])\n"
            "end\n"
            "return {1, redis.call('ZCARD', KEYS[1])}\n";

/* KEYS: pause.  ARGV: ms.  The provider answered 429 with Retry-After: no
 * acquire succeeds for MS ms from now; a pause is only ever extended,
 * never shortened.  Returns 1 set, 0 a longer pause was in place. */
static const char LUA_PAUSE[] =
    "if redis.call('PTTL', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end\n"
    "redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])\n"
    "return 1\n";

/* KEYS: slots, phone[, freq].  ARGV: token.  Returns how many of slot and
 * lock went.  With the freq key (a call that was not started) the token no
 * longer counts against the number's attempt cap. */
static const char LUA_RELEASE[] = "local n = redis.call('ZREM', KEYS[1], ARGV[1])\n"
                                  "if redis.call('GET', KEYS[2]) == ARGV[1] then\n"
                                  "  redis.call('DEL', KEYS[2])\n"
                                  "  n = n + 1\n"
                                  "end\n"
                                  "if KEYS[3] then redis.call('ZREM', KEYS[3], ARGV[1]) end\n"
                                  "return n\n";

/* KEYS: slots, phone.  ARGV: token, lease_ms.  Returns 1 renewed, 0 lost. */
static const char LUA_EXTEND[] =
    LUA_NOW "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
            "if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end\n"
            "local owner = redis.call('GET', KEYS[2])\n"
            "if owner and owner ~= ARGV[1] then return 0 end\n"
            "redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])\n"
            "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])\n"
            "return 1\n";

/* KEYS: slots, pause.  Returns {slots in use, ms left of the provider's
 * 429 pause (0: none)}. */
static const char LUA_USAGE[] = LUA_NOW "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
                                        "local p = redis.call('PTTL', KEYS[2])\n"
                                        "return {redis.call('ZCARD', KEYS[1]), p > 0 and p or 0}\n";

/* KEYS: slots.  Returns the slots in use. */
static const char LUA_COUNT[] = LUA_NOW "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
                                        "return redis.call('ZCARD', KEYS[1])\n";

/* The campaign set of a token's campaign (ARGV '' : none) in the rebuild
 * and the restore, whose keys are many: "P camp:<id>", P taken from the
 * slot set's key (KEYS[1] is always "P slots"). */
#define LUA_CAMP                                                                \
    "local function camp_add(cid, tok)\n"                                       \
    "  if cid == '' then return end\n"                                          \
    "  redis.call('SADD', string.sub(KEYS[1], 1, -6) .. 'camp:' .. cid, tok)\n" \
    "end\n"

/* KEYS: slots, epoch, phone_1 … phone_n.  ARGV: token_i, lease_ms_i,
 * campaign_i triples, run_id.
 * Returns 1 rebuilt, 0 when the marker is this run's (nothing changed). */
static const char LUA_REBUILD[] =
    LUA_NOW LUA_RUN LUA_CAMP "if epoch_ok(redis.call('GET', KEYS[2])) then return 0 end\n"
                             "redis.call('DEL', KEYS[1])\n"
                             "for i = 3, #KEYS do\n"
                             "  local m = ARGV[3 * (i - 3) + 1]\n"
                             "  local lease = tonumber(ARGV[3 * (i - 3) + 2])\n"
                             "  redis.call('ZADD', KEYS[1], now + lease, m)\n"
                             "  redis.call('SET', KEYS[i], m, 'PX', lease)\n"
                             "  camp_add(ARGV[3 * (i - 3) + 3], m)\n"
                             "end\n"
                             "redis.call('SET', KEYS[2], now .. ':' .. run)\n"
                             "return 1\n";

/* The per-number attempt counts from PostgreSQL, before the rebuild sets
 * the epoch marker (acquires are refused until then, so no attempt can
 * slip in between).  KEYS: epoch, freq_1 … freq_n.  ARGV: period_ms, then
 * member_i, started_ms_i pairs, run_id.  Returns 1 written, 0 when the
 * marker is this run's (rebuilt already: nothing changed). */
static const char LUA_RECOUNT[] =
    LUA_NOW LUA_RUN "if epoch_ok(redis.call('GET', KEYS[1])) then return 0 end\n"
                    "local period = tonumber(ARGV[1])\n"
                    "for i = 2, #KEYS do\n"
                    "  local at = tonumber(ARGV[2 * (i - 2) + 3])\n"
                    "  if at > now - period then\n"
                    "    redis.call('ZADD', KEYS[i], at, ARGV[2 * (i - 2) + 2])\n"
                    "    redis.call('PEXPIRE', KEYS[i], period)\n"
                    "  end\n"
                    "end\n"
                    "return 1\n";

/* KEYS: leader, token.  ARGV: owner, ttl_ms.  Returns {is_leader, token}. */
static const char LUA_LEADER[] =
    LUA_NOW "local cur = redis.call('GET', KEYS[1])\n"
            "if cur == ARGV[1] then\n"
            "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
            "  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}\n"
            "end\n"
            "if cur then return {0, 0} end\n"
            "if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], now) end\n"
            "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
            "return {1, redis.call('INCR', KEYS[2])}\n";

/* KEYS: leader.  ARGV: owner.  Returns 1 released, 0 not ours. */
static const char LUA_LEADER_RELEASE[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                         "  return redis.call('DEL', KEYS[1])\n"
                                         "end\n"
                                         "return 0\n";

/* KEYS: epoch.  ARGV: run_id.  Returns the marker when it is this run's,
 * else nil (a rebuild is needed before anything starts). */
static const char LUA_EPOCH[] = LUA_RUN "local ep = redis.call('GET', KEYS[1])\n"
                                        "if epoch_ok(ep) then return ep end\n"
                                        "return false\n";

/* The reconcile's guard, at the head of each of its writing scripts:
 * KEYS[2] epoch, KEYS[3] leader:token; ARGV[1] the fencing token of the
 * leadership that read PostgreSQL, ARGV[2] the epoch marker read before.
 * -1: another scheduler leads now; -2: Redis was rebuilt, restarted or
 * failed over since (the snapshot the caller holds may be older than it). */
#define LUA_RC_GUARD                                                \
    LUA_RUN                                                         \
    "if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end\n" \
    "local ep = redis.call('GET', KEYS[2])\n"                       \
    "if ep ~= ARGV[2] or not epoch_ok(ep) then return -2 end\n"

/* One page of the reconcile's scan.  KEYS: slots.  ARGV: 'z' (the slot
 * leases) or 'p' (the phone locks), cursor, count, MATCH pattern of the
 * phone keys, length of the key prefix to cut ("P phone:").  Returns
 * {cursor, {token, phone or "", …}}. */
static const char LUA_RC_SCAN[] =
    "local out = {}\n"
    "if ARGV[1] == 'z' then\n"
    "  local r = redis.call('ZSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])\n"
    "  for i = 1, #r[2], 2 do out[#out + 1] = r[2][i]; out[#out + 1] = '' end\n"
    "  return {r[1], out}\n"
    "end\n"
    "local r = redis.call('SCAN', ARGV[2], 'MATCH', ARGV[4], 'COUNT', ARGV[3])\n"
    "local cut = tonumber(ARGV[5])\n"
    "for _, k in ipairs(r[2]) do\n"
    "  local ok, v = pcall(redis.call, 'GET', k)\n"
    "  if ok and v then out[#out + 1] = v; out[#out + 1] = string.sub(k, cut + 1) end\n"
    "end\n"
    "return {r[1], out}\n";

/* Drop leases and locks that no IN_PROGRESS attempt owned when PostgreSQL
 * was read, and only those taken more than min_age ago (see reconcile.c).
 * KEYS: slots, epoch, leader:token, then one phone key per 'p' entry.
 * ARGV: fence, epoch, min_age_ms, lease_ms, then kind ('z' | 'p'), token
 * pairs, run_id.  A lease's age is inferred from its expiry: taken at expiry -
 * lease_ms.  Returns how many went, or the guard's -1 / -2. */
static const char LUA_RC_DROP[] = LUA_NOW LUA_RC_GUARD
    "local old = now + tonumber(ARGV[4]) - tonumber(ARGV[3])\n"
    "local n, k = 0, 4\n"
    "for i = 5, #ARGV - 1, 2 do\n"
    "  local tok = ARGV[i + 1]\n"
    "  if ARGV[i] == 'z' then\n"
    "    local sc = redis.call('ZSCORE', KEYS[1], tok)\n"
    "    if sc and tonumber(sc) < old then redis.call('ZREM', KEYS[1], tok); n = n + 1 end\n"
    "  else\n"
    "    local ok, v = pcall(redis.call, 'GET', KEYS[k])\n"
    "    if ok and v == tok then\n"
    "      local ttl = redis.call('PTTL', KEYS[k])\n"
    "      if ttl < 0 or now + ttl < old then redis.call('DEL', KEYS[k]); n = n + 1 end\n"
    "    end\n"
    "    k = k + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

/* Restore the lease and phone lock of IN_PROGRESS attempts where missing,
 * and their campaign's count.
 * KEYS: slots, epoch, leader:token, phone_1 … phone_n.  ARGV: fence, epoch,
 * then token_i, lease_ms_i, campaign_i triples, run_id.  Returns how many
 * leases and locks were written, or the guard's -1 / -2. */
static const char LUA_RC_RESTORE[] =
    LUA_NOW LUA_RC_GUARD LUA_CAMP "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
                                  "local n = 0\n"
                                  "for i = 4, #KEYS do\n"
                                  "  local tok = ARGV[3 * (i - 4) + 3]\n"
                                  "  local lease = tonumber(ARGV[3 * (i - 4) + 4])\n"
                                  "  if not redis.call('ZSCORE', KEYS[1], tok) then\n"
                                  "    redis.call('ZADD', KEYS[1], now + lease, tok); n = n + 1\n"
                                  "  end\n"
                                  "  local ok, v = pcall(redis.call, 'GET', KEYS[i])\n"
                                  "  if not ok or v ~= tok then\n"
                                  "    redis.call('SET', KEYS[i], tok, 'PX', lease); n = n + 1\n"
                                  "  end\n"
                                  "  camp_add(ARGV[3 * (i - 4) + 5], tok)\n"
                                  "end\n"
                                  "return n\n";

enum script_id {
    S_ACQUIRE,
    S_RELEASE,
    S_EXTEND,
    S_COUNT,
    S_REBUILD,
    S_RECOUNT,
    S_LEADER,
    S_LEADER_REL,
    S_EPOCH,
    S_RC_SCAN,
    S_RC_DROP,
    S_RC_RESTORE,
    S_PAUSE,
    S_USAGE,
    S_N
};

/* Loaded on every connection by net/redis.c, run by their index. */
static const struct redis_script SCRIPTS[S_N] = {
    [S_ACQUIRE] = { "acquire", LUA_ACQUIRE },
    [S_RELEASE] = { "release", LUA_RELEASE },
    [S_EXTEND] = { "extend", LUA_EXTEND },
    [S_COUNT] = { "count", LUA_COUNT },
    [S_REBUILD] = { "rebuild", LUA_REBUILD },
    [S_RECOUNT] = { "recount", LUA_RECOUNT },
    [S_LEADER] = { "leader", LUA_LEADER },
    [S_LEADER_REL] = { "leader_release", LUA_LEADER_RELEASE },
    [S_EPOCH] = { "epoch", LUA_EPOCH },
    [S_RC_SCAN] = { "reconcile_scan", LUA_RC_SCAN },
    [S_RC_DROP] = { "reconcile_drop", LUA_RC_DROP },
    [S_RC_RESTORE] = { "reconcile_restore", LUA_RC_RESTORE },
    [S_PAUSE] = { "pause", LUA_PAUSE },
    [S_USAGE] = { "usage", LUA_USAGE },
};

/* ------------------------------------------------------------- structs --- */

/* What a reply means, by the request that asked. */
enum req_kind {
    RK_ACQUIRE,
    RK_TAKE,
    RK_RELEASE,
    RK_EXTEND,
    RK_COUNT,
    RK_NEEDS,
    RK_REBUILD,
    RK_LEADER,
    RK_LEADER_REL,
    RK_EPOCH,
    RK_SCAN,
    RK_RC,
    RK_PAUSE,
    RK_USAGE
};

/* The caller's side of one request in flight: whom to tell, and how. */
struct slot_req {
    enum req_kind kind;
    union {
        slot_acquire_cb acquire;
        slot_grant_cb grant;
        slot_done_cb done;
        slot_leader_cb leader;
        slot_text_cb text;
        slot_scan_cb scan;
        slot_usage_cb usage;
    } cb;
    void *arg;
};

/* A release that got no answer, waiting to be sent again (release_retry). */
struct pending_release {
    struct pending_release *next;
    struct redis_slots *rs;
    char *owner;
    char *phone;
    int attempt;
    int tries;
    int uncount;     /* not started: the attempt cap does not count it */
    const char *why; /* a string literal */
};

struct redis_slots {
    struct redis *redis;
    struct ev_loop *loop;
    char *prefix; /* [redis] key_prefix */
    int freeing;
    /* releases waiting for their next try (FIFO), and the timer that sends
     * them: RELEASE_RETRY_MIN doubling to RELEASE_RETRY_MAX_DELAY while
     * Redis does not answer, back to the minimum after an answer */
    struct pending_release *retry_head, *retry_tail;
    int n_retry;
    double retry_delay;
    ev_timer retry_timer;
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
    case RK_TAKE:
        if (req->cb.grant != NULL) {
            struct slot_grant g = { .result = SLOT_ERROR };
            req->cb.grant(req->arg, &g, err);
        }
        break;
    case RK_LEADER:
        if (req->cb.leader != NULL)
            req->cb.leader(req->arg, 0, 0, err);
        break;
    case RK_EPOCH:
        if (req->cb.text != NULL)
            req->cb.text(req->arg, NULL, err);
        break;
    case RK_SCAN:
        if (req->cb.scan != NULL)
            req->cb.scan(req->arg, NULL, NULL, 0, err);
        break;
    case RK_USAGE:
        if (req->cb.usage != NULL)
            req->cb.usage(req->arg, 0, 0, err);
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

/* {code, in_use[, free_at_ms]} of the acquire script into G; -1 when it
 * is not that. */
static int reply_grant(const redisReply *r, struct slot_grant *g)
{
    long long code, n, at = 0;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->elements > 3 ||
        reply_int(r->element[0], &code) != 0 || reply_int(r->element[1], &n) != 0)
        return -1;
    if (code == SLOT_FREQUENCY || code == SLOT_PACED || code == SLOT_PROVIDER_PAUSED) {
        if (r->elements != 3 || reply_int(r->element[2], &at) != 0)
            return -1;
    } else if ((code < SLOT_NEEDS_REBUILD && code != SLOT_CAMPAIGN_FULL) || code > SLOT_OK) {
        return -1;
    }
    g->result = (enum slot_result)code;
    g->in_use = (int)n;
    g->free_at_ms = at;
    return 0;
}

static void deliver_acquire(struct slot_req *req, const redisReply *r)
{
    struct slot_grant g;

    if (reply_grant(r, &g) != 0) {
        req_fail(req, "unexpected reply from Redis to the acquire script");
        return;
    }
    if (req->kind == RK_TAKE && req->cb.grant != NULL)
        req->cb.grant(req->arg, &g, NULL);
    else if (req->kind == RK_ACQUIRE && req->cb.acquire != NULL)
        req->cb.acquire(req->arg, g.result, g.in_use, NULL);
    free(req);
}

static void deliver_usage(struct slot_req *req, const redisReply *r)
{
    long long in_use, paused;

    if (reply_pair(r, &in_use, &paused) != 0) {
        req_fail(req, "unexpected reply from Redis to the usage script");
        return;
    }
    if (req->cb.usage != NULL)
        req->cb.usage(req->arg, (int)in_use, paused, NULL);
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
    default: value = (int)v; break;
    }
    if (req->cb.done != NULL)
        req->cb.done(req->arg, value, NULL);
    free(req);
}

/* The epoch script: the marker, or nil when a rebuild is needed.  For
 * RK_NEEDS, 1 when nil. */
static void deliver_epoch(struct slot_req *req, const redisReply *r)
{
    int is_str = r->type == REDIS_REPLY_STRING;

    if (!is_str && r->type != REDIS_REPLY_NIL) {
        req_fail(req, "unexpected reply from Redis to the epoch script");
        return;
    }
    if (req->kind == RK_NEEDS) {
        if (req->cb.done != NULL)
            req->cb.done(req->arg, !is_str, NULL);
    } else if (req->cb.text != NULL) {
        req->cb.text(req->arg, is_str ? r->str : NULL, NULL);
    }
    free(req);
}

/* A string element without a NUL inside (tokens are C strings here). */
static int plain_str(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING && strlen(r->str) == r->len;
}

/* The scan script: {cursor, {token, phone, …}}. */
static void deliver_scan(struct slot_req *req, const redisReply *r)
{
    const redisReply *list;
    struct slot_seen *seen;
    int n = 0;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !plain_str(r->element[0]) ||
        r->element[1]->type != REDIS_REPLY_ARRAY || r->element[1]->elements % 2 != 0) {
        req_fail(req, "unexpected reply from Redis to the reconcile scan");
        return;
    }
    list = r->element[1];
    if ((seen = calloc(list->elements / 2 + 1, sizeof(*seen))) == NULL) {
        req_fail(req, "out of memory");
        return;
    }
    for (size_t i = 0; i + 1 < list->elements; i += 2) {
        if (!plain_str(list->element[i]) || !plain_str(list->element[i + 1]))
            continue; /* not a token this daemon could have written */
        seen[n].token = list->element[i]->str;
        seen[n].phone = list->element[i + 1]->str[0] != '\0' ? list->element[i + 1]->str : NULL;
        n++;
    }
    if (req->cb.scan != NULL)
        req->cb.scan(req->arg, r->element[0]->str, seen, n, NULL);
    free(seen);
    free(req);
}

/* net/redis.c's answer to one request (redis_reply_cb). */
static void on_reply(void *arg, const redisReply *reply, const char *err)
{
    struct slot_req *req = arg;

    if (err != NULL)
        req_fail(req, err);
    else if (req->kind == RK_EPOCH || req->kind == RK_NEEDS)
        deliver_epoch(req, reply);
    else if (req->kind == RK_SCAN)
        deliver_scan(req, reply);
    else if (req->kind == RK_ACQUIRE || req->kind == RK_TAKE)
        deliver_acquire(req, reply);
    else if (req->kind == RK_LEADER)
        deliver_leader(req, reply);
    else if (req->kind == RK_USAGE)
        deliver_usage(req, reply);
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

/* The run_id argument every epoch-aware script takes last (LUA_RUN). */
static void add_run(struct redis_slots *rs, struct redis_cmd *cmd)
{
    redis_cmd_add(cmd, "%s", redis_run_id(rs->redis));
}

/* A request function got invalid arguments: refuse it. */
static int invalid(struct redis_slots *rs, const char *what)
{
    return redis_refuse(rs->redis, "invalid argument: %s", what);
}

static int has_text(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static int bad_owner(const char *call_id, int attempt, const char *phone)
{
    return call_id == NULL || call_id[0] == '\0' || attempt < 0 || phone == NULL ||
           phone[0] == '\0';
}

/* The keys a script takes after slots and phone. */
enum token_keys {
    TK_NONE,  /* slots, phone */
    TK_EPOCH, /* + epoch */
    TK_FREQ   /* + freq (a release of a call not started) */
};

/* A script with KEYS slots, phone and the MORE keys, and ARGV the lease
 * token, NARGS more arguments to add. */
static struct redis_cmd *cmd_token(struct redis_slots *rs, int id, const char *call_id, int attempt,
                                   const char *phone, enum token_keys more, int nargs)
{
    static const int extra[] = { [TK_NONE] = 0, [TK_EPOCH] = 1, [TK_FREQ] = 1 };
    struct redis_cmd *cmd = redis_cmd_script(rs->redis, id, 2 + extra[more], 1 + nargs);

    redis_cmd_add(cmd, "%sslots", rs->prefix);
    redis_cmd_add(cmd, "%sphone:%s", rs->prefix, phone);
    if (more == TK_EPOCH)
        redis_cmd_add(cmd, "%sepoch", rs->prefix);
    if (more == TK_FREQ)
        redis_cmd_add(cmd, "%sfreq:%s", rs->prefix, phone);
    redis_cmd_add(cmd, "%s:%d", call_id, attempt);
    return cmd;
}

/* A pacing rate as the acquire's sliding log: at most *N starts in any
 * window of *WIN_MS.  CPS >= 1: floor(CPS) per second; below 1: one per
 * 1/CPS s; 0 (or less): unpaced, *N 0.  SLOT_PACE_GUARD_MS widens the
 * window (slots.h). */
static void pace_window(double cps, int *n, long long *win_ms)
{
    *n = 0;
    *win_ms = 1000 + SLOT_PACE_GUARD_MS;
    if (!(cps > 0) || !isfinite(cps))
        return;
    if (cps >= 1) {
        *n = cps > 1e6 ? 1000000 : (int)cps;
        return;
    }
    *n = 1;
    *win_ms = (long long)ceil(1000.0 / (cps < 1e-6 ? 1e-6 : cps)) + SLOT_PACE_GUARD_MS;
}

static int ask_invalid(const struct slot_ask *a, long long ms, long long period)
{
    return bad_owner(a->call_id, a->attempt, a->phone) || a->max_slots < 0 || !(a->lease_s > 0) ||
           ms == 0 || a->cap < 0 || (a->cap > 0 && (!(a->cap_period_s > 0) || period == 0)) ||
           a->campaign_max < 0 || (a->campaign_max > 0 && !has_text(a->campaign_id)) ||
           isnan(a->calls_per_second) || isnan(a->campaign_cps) ||
           (a->campaign_cps > 0 && !has_text(a->campaign_id));
}

/* The acquire script for A, answering REQ (freed when refused). */
static int acquire_send(struct redis_slots *rs, const struct slot_ask *a, struct slot_req *req)
{
    long long ms = to_ms(a->lease_s);
    long long period = a->cap > 0 ? to_ms(a->cap_period_s) : 0;
    const char *camp = has_text(a->campaign_id) ? a->campaign_id : "-";
    int rate_n, camp_n;
    long long rate_win, camp_win;
    struct redis_cmd *cmd;

    if (ask_invalid(a, ms, period)) {
        free(req);
        return invalid(rs, "call id, attempt, phone, max_slots, lease, cap or campaign");
    }
    pace_window(a->calls_per_second, &rate_n, &rate_win);
    pace_window(a->campaign_cps, &camp_n, &camp_win);
    cmd = redis_cmd_script(rs->redis, S_ACQUIRE, 8, 11);
    redis_cmd_add(cmd, "%sslots", rs->prefix);
    redis_cmd_add(cmd, "%sphone:%s", rs->prefix, a->phone);
    redis_cmd_add(cmd, "%sepoch", rs->prefix);
    redis_cmd_add(cmd, "%sfreq:%s", rs->prefix, a->phone);
    redis_cmd_add(cmd, "%scamp:%s", rs->prefix, camp);
    redis_cmd_add(cmd, "%srate", rs->prefix);
    redis_cmd_add(cmd, "%srate:camp:%s", rs->prefix, camp);
    redis_cmd_add(cmd, "%spause", rs->prefix);
    redis_cmd_add(cmd, "%s:%d", a->call_id, a->attempt);
    redis_cmd_add(cmd, "%d", a->max_slots);
    redis_cmd_add(cmd, "%lld", ms);
    redis_cmd_add(cmd, "%d", a->cap);
    redis_cmd_add(cmd, "%lld", period);
    redis_cmd_add(cmd, "%d", a->campaign_max);
    redis_cmd_add(cmd, "%d", rate_n);
    redis_cmd_add(cmd, "%lld", rate_win);
    redis_cmd_add(cmd, "%d", camp_n);
    redis_cmd_add(cmd, "%lld", camp_win);
    add_run(rs, cmd);
    return submit(rs, cmd, req);
}

/* The release script; UNCOUNT: the call was not started, so its token
 * leaves the number's attempt count too. */
static int release_send(struct redis_slots *rs, const char *call_id, int attempt, const char *phone,
                        int uncount, slot_done_cb cb, void *arg)
{
    struct slot_req *req;

    if (bad_owner(call_id, attempt, phone))
        return invalid(rs, "call id, attempt or phone");
    if ((req = req_new(rs, RK_RELEASE, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    return submit(
        rs, cmd_token(rs, S_RELEASE, call_id, attempt, phone, uncount ? TK_FREQ : TK_NONE, 0), req);
}

/* ------------------------------------------------------ release retry --- */

/*
 * A release with no answer (Redis down, paused, timed out) is not a "no":
 * the lease may still be held.  It is queued and sent again, FIFO, with a
 * delay doubling from RELEASE_RETRY_MIN to RELEASE_RETRY_MAX_DELAY while
 * Redis does not answer.  The queue is bounded (RELEASE_RETRY_QUEUE); what
 * it cannot hold, or what a process that dies held, the scheduler's
 * reconcile removes (reconcile.c).  Sending a release twice is harmless:
 * the script removes only the token's own lease and lock.
 */

static void pending_free(struct pending_release *p)
{
    free(p->owner);
    free(p->phone);
    free(p);
}

static void retry_arm(struct redis_slots *rs)
{
    if (rs->retry_head == NULL || ev_is_active(&rs->retry_timer))
        return;
    ev_timer_set(&rs->retry_timer, rs->retry_delay, 0.);
    ev_timer_start(rs->loop, &rs->retry_timer);
}

/* Put P at the end of the queue (or drop it when the queue is full). */
static void retry_queue(struct redis_slots *rs, struct pending_release *p, const char *err)
{
    if (rs->freeing) {
        pending_free(p);
        return;
    }
    if (rs->n_retry >= RELEASE_RETRY_QUEUE) {
        co_warn("slot release dropped: the retry queue is full; the reconcile removes it",
                "token=%s:%d after=\"%s\"", CO_LOG_Q(p->owner), p->attempt, p->why);
        pending_free(p);
        return;
    }
    if (p->tries == 1)
        co_warn("slot release got no answer; retrying", "token=%s:%d after=\"%s\" error=%s",
                CO_LOG_Q(p->owner), p->attempt, p->why, CO_LOG_Q(err));
    p->next = NULL;
    if (rs->retry_tail != NULL)
        rs->retry_tail->next = p;
    else
        rs->retry_head = p;
    rs->retry_tail = p;
    rs->n_retry++;
    retry_arm(rs);
}

static void pending_done(void *arg, int released, const char *err)
{
    struct pending_release *p = arg;
    struct redis_slots *rs = p->rs;

    if (err != NULL) {
        if (!rs->freeing) {
            rs->retry_delay *= 2;
            if (rs->retry_delay > RELEASE_RETRY_MAX_DELAY)
                rs->retry_delay = RELEASE_RETRY_MAX_DELAY;
        }
        retry_queue(rs, p, err);
        return;
    }
    rs->retry_delay = RELEASE_RETRY_MIN;
    if (p->tries > 1)
        co_info("slot release retried", "token=%s:%d tries=%d released=%d", CO_LOG_Q(p->owner),
                p->attempt, p->tries, released);
    pending_free(p);
}

/* Send P; refused at once (Redis down): back into the queue. */
static void pending_send(struct redis_slots *rs, struct pending_release *p)
{
    p->tries++;
    if (release_send(rs, p->owner, p->attempt, p->phone, p->uncount, pending_done, p) < 0)
        retry_queue(rs, p, redis_slots_error(rs));
}

/* The retry timer: send up to RELEASE_RETRY_BATCH queued releases. */
static void retry_due(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct redis_slots *rs = w->data;
    int n = rs->n_retry < RELEASE_RETRY_BATCH ? rs->n_retry : RELEASE_RETRY_BATCH;

    (void)loop;
    (void)revents;
    for (int i = 0; i < n && rs->retry_head != NULL; i++) {
        struct pending_release *p = rs->retry_head;
        rs->retry_head = p->next;
        if (rs->retry_head == NULL)
            rs->retry_tail = NULL;
        rs->n_retry--;
        pending_send(rs, p);
    }
    retry_arm(rs);
}

/* -------------------------------------------------------------- public --- */

struct redis_slots *redis_slots_new(struct ev_loop *loop, const struct co_config *cfg,
                                    const struct redis_opts *opts, char *err, size_t errlen)
{
    struct redis_opts o;
    struct redis_slots *rs;

    if (opts != NULL)
        o = *opts;
    else
        redis_opts_init(&o);
    o.client = "redis_slots";
    if ((rs = calloc(1, sizeof(*rs))) == NULL ||
        (rs->prefix = strdup(cfg->redis_key_prefix != NULL ? cfg->redis_key_prefix : "")) == NULL) {
        free(rs);
        co_seterr(err, errlen, "redis_slots: out of memory");
        return NULL;
    }
    if ((rs->redis = redis_new(loop, cfg, &o, SCRIPTS, S_N, err, errlen)) == NULL) {
        free(rs->prefix);
        free(rs);
        return NULL;
    }
    rs->loop = loop;
    rs->retry_delay = RELEASE_RETRY_MIN;
    ev_timer_init(&rs->retry_timer, retry_due, 0., 0.);
    rs->retry_timer.data = rs;
    return rs;
}

void redis_slots_free(struct redis_slots *rs)
{
    if (rs == NULL)
        return;
    rs->freeing = 1;       /* releases failing now are not queued again */
    redis_free(rs->redis); /* fails what is pending: "redis_slots closed" */
    ev_timer_stop(rs->loop, &rs->retry_timer);
    if (rs->n_retry > 0)
        co_warn("slot releases not retried: stopping; the reconcile removes them", "count=%d",
                rs->n_retry);
    while (rs->retry_head != NULL) {
        struct pending_release *p = rs->retry_head;
        rs->retry_head = p->next;
        pending_free(p);
    }
    free(rs->prefix);
    free(rs);
}

int redis_slots_take(struct redis_slots *rs, const struct slot_ask *a, slot_grant_cb cb, void *arg)
{
    struct slot_req *req;

    if ((req = req_new(rs, RK_TAKE, arg)) == NULL)
        return -1;
    req->cb.grant = cb;
    return acquire_send(rs, a, req);
}

int redis_slots_acquire(struct redis_slots *rs, const char *call_id, int attempt, const char *phone,
                        int max_slots, double lease_s, slot_acquire_cb cb, void *arg)
{
    struct slot_ask a = { .call_id = call_id,
                          .attempt = attempt,
                          .phone = phone,
                          .max_slots = max_slots,
                          .lease_s = lease_s };
    struct slot_req *req;

    if ((req = req_new(rs, RK_ACQUIRE, arg)) == NULL)
        return -1;
    req->cb.acquire = cb;
    return acquire_send(rs, &a, req);
}

int redis_slots_release(struct redis_slots *rs, const char *call_id, int attempt, const char *phone,
                        slot_done_cb cb, void *arg)
{
    return release_send(rs, call_id, attempt, phone, 0, cb, arg);
}

int redis_slots_extend(struct redis_slots *rs, const char *call_id, int attempt, const char *phone,
                       double lease_s, slot_done_cb cb, void *arg)
{
    long long ms = to_ms(lease_s);
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (bad_owner(call_id, attempt, phone) || !(lease_s > 0) || ms == 0)
        return invalid(rs, "call id, attempt, phone or lease");
    if ((req = req_new(rs, RK_EXTEND, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    cmd = cmd_token(rs, S_EXTEND, call_id, attempt, phone, TK_NONE, 1);
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

int redis_slots_pause(struct redis_slots *rs, double seconds, slot_done_cb cb, void *arg)
{
    long long ms = to_ms(seconds);
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (!(seconds > 0) || ms == 0)
        return invalid(rs, "pause");
    if ((req = req_new(rs, RK_PAUSE, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    cmd = redis_cmd_script(rs->redis, S_PAUSE, 1, 1);
    redis_cmd_add(cmd, "%spause", rs->prefix);
    redis_cmd_add(cmd, "%lld", ms);
    return submit(rs, cmd, req);
}

int redis_slots_usage(struct redis_slots *rs, slot_usage_cb cb, void *arg)
{
    struct slot_req *req = req_new(rs, RK_USAGE, arg);
    struct redis_cmd *cmd;

    if (req == NULL)
        return -1;
    req->cb.usage = cb;
    cmd = redis_cmd_script(rs->redis, S_USAGE, 2, 0);
    redis_cmd_add(cmd, "%sslots", rs->prefix);
    redis_cmd_add(cmd, "%spause", rs->prefix);
    return submit(rs, cmd, req);
}

int redis_slots_needs_rebuild(struct redis_slots *rs, slot_done_cb cb, void *arg)
{
    struct slot_req *req = req_new(rs, RK_NEEDS, arg);
    struct redis_cmd *cmd;

    if (req == NULL)
        return -1;
    req->cb.done = cb;
    cmd = redis_cmd_script(rs->redis, S_EPOCH, 1, 1);
    redis_cmd_add(cmd, "%sepoch", rs->prefix);
    add_run(rs, cmd);
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

/* An entry's token, lease and campaign ("": none), as the rebuild and the
 * restore take them. */
static void add_entry(struct redis_cmd *cmd, const struct slot_entry *e)
{
    redis_cmd_add(cmd, "%s:%d", e->call_id, e->attempt);
    redis_cmd_add(cmd, "%lld", rebuild_ms(e->lease_s));
    redis_cmd_add(cmd, "%s", has_text(e->campaign_id) ? e->campaign_id : "");
}

int redis_slots_rebuild(struct redis_slots *rs, const struct slot_entry *e, int n, slot_done_cb cb,
                        void *arg)
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
    cmd = redis_cmd_script(rs->redis, S_REBUILD, 2 + n, 3 * n + 1);
    redis_cmd_add(cmd, "%sslots", rs->prefix);
    redis_cmd_add(cmd, "%sepoch", rs->prefix);
    for (int i = 0; i < n; i++)
        redis_cmd_add(cmd, "%sphone:%s", rs->prefix, e[i].phone);
    for (int i = 0; i < n; i++)
        add_entry(cmd, &e[i]);
    add_run(rs, cmd);
    return submit(rs, cmd, req);
}

int redis_slots_recount(struct redis_slots *rs, const struct slot_counted *e, int n,
                        double period_s, slot_done_cb cb, void *arg)
{
    long long period = to_ms(period_s);
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (n < 0 || n > REBUILD_MAX || (n > 0 && e == NULL) || !(period_s > 0) || period == 0)
        return invalid(rs, "number of entries or period");
    for (int i = 0; i < n; i++)
        if (bad_owner(e[i].call_id, e[i].attempt, e[i].phone))
            return invalid(rs, "an entry's call id, attempt or phone");
    if ((req = req_new(rs, RK_REBUILD, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    cmd = redis_cmd_script(rs->redis, S_RECOUNT, 1 + n, 1 + 2 * n + 1);
    redis_cmd_add(cmd, "%sepoch", rs->prefix);
    for (int i = 0; i < n; i++)
        redis_cmd_add(cmd, "%sfreq:%s", rs->prefix, e[i].phone);
    redis_cmd_add(cmd, "%lld", period);
    for (int i = 0; i < n; i++) {
        redis_cmd_add(cmd, "%s:%d", e[i].call_id, e[i].attempt);
        redis_cmd_add(cmd, "%lld", e[i].started_ms);
    }
    add_run(rs, cmd);
    return submit(rs, cmd, req);
}

int redis_leader_acquire(struct redis_slots *rs, const char *owner, double ttl_s, slot_leader_cb cb,
                         void *arg)
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

/* Queue-backed release (see slots.h); UNCOUNT as in release_send(). */
static void release_retried(struct redis_slots *rs, const char *call_id, int attempt,
                            const char *phone, int uncount, const char *why)
{
    struct pending_release *p;

    if (bad_owner(call_id, attempt, phone))
        return;
    if ((p = calloc(1, sizeof(*p))) == NULL || (p->owner = strdup(call_id)) == NULL ||
        (p->phone = strdup(phone)) == NULL) {
        if (p != NULL)
            pending_free(p);
        co_warn("slot release dropped: out of memory; the reconcile removes it", "token=%s:%d",
                CO_LOG_Q(call_id), attempt);
        return;
    }
    p->rs = rs;
    p->attempt = attempt;
    p->uncount = uncount;
    p->why = why;
    pending_send(rs, p);
}

void redis_slots_release_retried(struct redis_slots *rs, const char *call_id, int attempt,
                                 const char *phone, const char *why)
{
    release_retried(rs, call_id, attempt, phone, 0, why);
}

void redis_slots_release_unstarted(struct redis_slots *rs, const char *call_id, int attempt,
                                   const char *phone, const char *why)
{
    release_retried(rs, call_id, attempt, phone, 1, why);
}

int redis_slots_retry_queued(const struct redis_slots *rs)
{
    return rs->n_retry;
}

int redis_slots_epoch(struct redis_slots *rs, slot_text_cb cb, void *arg)
{
    struct slot_req *req = req_new(rs, RK_EPOCH, arg);
    struct redis_cmd *cmd;

    if (req == NULL)
        return -1;
    req->cb.text = cb;
    cmd = redis_cmd_script(rs->redis, S_EPOCH, 1, 1);
    redis_cmd_add(cmd, "%sepoch", rs->prefix);
    add_run(rs, cmd);
    return submit(rs, cmd, req);
}

/* S with the glob characters of SCAN's MATCH escaped, into BUF. */
static const char *glob_escape(char *buf, size_t size, const char *s)
{
    size_t n = 0;

    for (; *s != '\0' && n + 2 < size; s++) {
        if (strchr("*?[]\\", *s) != NULL)
            buf[n++] = '\\';
        buf[n++] = *s;
    }
    buf[n] = '\0';
    return buf;
}

int redis_slots_scan(struct redis_slots *rs, enum slot_scan_what what, const char *cursor,
                     int count, slot_scan_cb cb, void *arg)
{
    char pat[512];
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (cursor == NULL || cursor[0] == '\0' || count < 1 || strlen(rs->prefix) > 200)
        return invalid(rs, "cursor, count or key prefix");
    if ((req = req_new(rs, RK_SCAN, arg)) == NULL)
        return -1;
    req->cb.scan = cb;
    cmd = redis_cmd_script(rs->redis, S_RC_SCAN, 1, 5);
    redis_cmd_add(cmd, "%sslots", rs->prefix);
    redis_cmd_add(cmd, "%s", what == SLOT_SCAN_LEASES ? "z" : "p");
    redis_cmd_add(cmd, "%s", cursor);
    redis_cmd_add(cmd, "%d", count);
    redis_cmd_add(cmd, "%sphone:*", glob_escape(pat, sizeof(pat), rs->prefix));
    redis_cmd_add(cmd, "%zu", strlen(rs->prefix) + strlen("phone:"));
    return submit(rs, cmd, req);
}

/* The three keys and two arguments of the reconcile's guard. */
static void add_guard(struct redis_slots *rs, struct redis_cmd *cmd)
{
    redis_cmd_add(cmd, "%sslots", rs->prefix);
    redis_cmd_add(cmd, "%sepoch", rs->prefix);
    redis_cmd_add(cmd, "%sleader:token", rs->prefix);
}

int redis_slots_drop(struct redis_slots *rs, const struct slot_fence *f, const struct slot_seen *e,
                     int n, double min_age_s, double lease_s, slot_done_cb cb, void *arg)
{
    int phones = 0;
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (f == NULL || f->epoch == NULL || n < 0 || n > RECONCILE_MAX || (n > 0 && e == NULL) ||
        to_ms(lease_s) == 0 || !(min_age_s >= 0))
        return invalid(rs, "fence, entries, age or lease");
    for (int i = 0; i < n; i++) {
        if (e[i].token == NULL || e[i].token[0] == '\0')
            return invalid(rs, "an entry's token");
        phones += e[i].phone != NULL;
    }
    if ((req = req_new(rs, RK_RC, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    cmd = redis_cmd_script(rs->redis, S_RC_DROP, 3 + phones, 4 + 2 * n + 1);
    add_guard(rs, cmd);
    for (int i = 0; i < n; i++)
        if (e[i].phone != NULL)
            redis_cmd_add(cmd, "%sphone:%s", rs->prefix, e[i].phone);
    redis_cmd_add(cmd, "%lld", f->leader_token);
    redis_cmd_add(cmd, "%s", f->epoch);
    redis_cmd_add(cmd, "%lld", (long long)(min_age_s * 1000));
    redis_cmd_add(cmd, "%lld", to_ms(lease_s));
    for (int i = 0; i < n; i++) {
        redis_cmd_add(cmd, "%s", e[i].phone != NULL ? "p" : "z");
        redis_cmd_add(cmd, "%s", e[i].token);
    }
    add_run(rs, cmd);
    return submit(rs, cmd, req);
}

int redis_slots_restore(struct redis_slots *rs, const struct slot_fence *f,
                        const struct slot_entry *e, int n, slot_done_cb cb, void *arg)
{
    struct slot_req *req;
    struct redis_cmd *cmd;

    if (f == NULL || f->epoch == NULL || n < 0 || n > RECONCILE_MAX || (n > 0 && e == NULL))
        return invalid(rs, "fence or number of entries");
    for (int i = 0; i < n; i++)
        if (bad_owner(e[i].call_id, e[i].attempt, e[i].phone) || isnan(e[i].lease_s))
            return invalid(rs, "an entry's call id, attempt, phone or lease");
    if ((req = req_new(rs, RK_RC, arg)) == NULL)
        return -1;
    req->cb.done = cb;
    cmd = redis_cmd_script(rs->redis, S_RC_RESTORE, 3 + n, 2 + 3 * n + 1);
    add_guard(rs, cmd);
    for (int i = 0; i < n; i++)
        redis_cmd_add(cmd, "%sphone:%s", rs->prefix, e[i].phone);
    redis_cmd_add(cmd, "%lld", f->leader_token);
    redis_cmd_add(cmd, "%s", f->epoch);
    for (int i = 0; i < n; i++)
        add_entry(cmd, &e[i]);
    add_run(rs, cmd);
    return submit(rs, cmd, req);
}
