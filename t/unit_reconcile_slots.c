/*
 * unit_reconcile_slots.c — the Redis side of issue 9's reconcile in
 * src/dispatch/slots.c against a real Redis server: the epoch marker bound
 * to the server's run_id, the reconcile's scan, fenced drop and restore,
 * and the release that is retried until Redis answers.
 *
 * CALLORCH_TEST_REDIS_PORT holds the port of a throw-away Redis on
 * 127.0.0.1 (t/48-reconcile-slots.t starts one); without it the test
 * skips.  The test FLUSHALLs that server.
 */
#include <auto-config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "dispatch/slots.h"
#include "tap.h"
#include "tap_ev.h"
#include "tap_redis.h"
#include "util/config.h"
#include "util/log.h"

static struct ev_loop *loop;

struct outcome {
    int done;
    int value;
    char text[256];
    int has_text;
    char err[256];
    int n_seen;
    char cursor[64];
    char seen[16][128]; /* "token|phone" */
};

static int outcome_done(void *arg)
{
    return ((struct outcome *)arg)->done > 0;
}

static void on_done(void *arg, int value, const char *err)
{
    struct outcome *o = arg;
    o->done++;
    o->value = value;
    snprintf(o->err, sizeof(o->err), "%s", err ? err : "");
}

static void on_text(void *arg, const char *text, const char *err)
{
    struct outcome *o = arg;
    o->done++;
    o->has_text = text != NULL;
    snprintf(o->text, sizeof(o->text), "%s", text ? text : "");
    snprintf(o->err, sizeof(o->err), "%s", err ? err : "");
}

static void on_scan(void *arg, const char *cursor, const struct slot_seen *seen, int n,
                    const char *err)
{
    struct outcome *o = arg;
    o->done++;
    snprintf(o->err, sizeof(o->err), "%s", err ? err : "");
    snprintf(o->cursor, sizeof(o->cursor), "%s", cursor ? cursor : "");
    for (int i = 0; i < n && o->n_seen < 16; i++)
        snprintf(o->seen[o->n_seen++], sizeof(o->seen[0]), "%s|%s", seen[i].token,
                 seen[i].phone ? seen[i].phone : "");
}

static void on_acquire(void *arg, enum slot_result r, int in_use, const char *err)
{
    struct outcome *o = arg;
    o->done++;
    o->value = r;
    snprintf(o->err, sizeof(o->err), "%s", err ? err : "");
}

/* Wait for O; its value, or -100 when refused, -101 when no answer came. */
static int finish(int submitted, struct outcome *o)
{
    if (submitted != 0)
        return -100;
    return run_loop_until(loop, outcome_done, o, 10) ? o->value : -101;
}

/* The server's run_id, from INFO server. */
static const char *run_id(void)
{
    static char id[64];
    const char *info = admin_str("INFO server");
    const char *p = strstr(info, "run_id:");
    if (p == NULL || sscanf(p + 7, "%63[0-9a-f]", id) != 1)
        bail("no run_id in INFO server");
    return id;
}

static long long redis_now_ms(void)
{
    redisReply *r = redisCommand(admin, "TIME");
    long long ms;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        bail("TIME");
    ms = atoll(r->element[0]->str) * 1000 + atoll(r->element[1]->str) / 1000;
    freeReplyObject(r);
    return ms;
}

static int is_up(void *arg)
{
    return redis_slots_is_up(arg);
}

static int queue_empty_and_released(void *arg)
{
    struct redis_slots *rs = arg;
    return redis_slots_retry_queued(rs) == 0 && admin_int("ZCARD t:slots") == 0;
}

static struct redis_slots *make(int port, double timeout)
{
    struct co_config cfg;
    struct redis_opts opts;
    struct redis_slots *rs;
    char err[256];

    memset(&cfg, 0, sizeof(cfg));
    cfg.redis_host = (char *)"127.0.0.1";
    cfg.redis_port = port;
    cfg.redis_password = (char *)"";
    cfg.redis_key_prefix = (char *)"t:";
    redis_opts_init(&opts);
    opts.name = "test";
    opts.command_timeout = timeout;
    opts.backoff_min = 0.05;
    opts.backoff_max = 0.2;
    if ((rs = redis_slots_new(loop, &cfg, &opts, err, sizeof(err))) == NULL)
        bail("redis_slots_new: %s", err);
    if (!run_loop_until(loop, is_up, rs, 10))
        bail("not up: %s", redis_slots_error(rs));
    return rs;
}

static int acquire(struct redis_slots *rs, const char *owner, const char *phone)
{
    struct outcome o = { 0 };
    return finish(redis_slots_acquire(rs, owner, 1, phone, 10, 600, on_acquire, &o), &o);
}

static int rebuild(struct redis_slots *rs, const struct slot_entry *e, int n)
{
    struct outcome o = { 0 };
    return finish(redis_slots_rebuild(rs, e, n, on_done, &o), &o);
}

/* The epoch as the reconcile reads it: copied into BUF, 1 when present. */
static int epoch(struct redis_slots *rs, char *buf, size_t size)
{
    struct outcome o = { 0 };
    if (finish(redis_slots_epoch(rs, on_text, &o), &o) == -100 || !o.done)
        return -1;
    snprintf(buf, size, "%s", o.text);
    return o.has_text;
}

static void test_run_id(struct redis_slots *rs)
{
    char ep[256], want[128];
    struct outcome o = { 0 };

    admin_int("FLUSHALL");
    is_int(SLOT_NEEDS_REBUILD, acquire(rs, "c1", "+15550000001"), "fresh Redis: acquire refused");
    is_int(1, rebuild(rs, NULL, 0), "empty rebuild");
    snprintf(want, sizeof(want), ":%s", run_id());
    const char *marker = admin_str("GET t:epoch");
    ok(strlen(marker) > strlen(want) && strcmp(marker + strlen(marker) - strlen(want), want) == 0,
       "the epoch marker ends in this server's run_id (%s)", marker);
    is_int(1, epoch(rs, ep, sizeof(ep)), "redis_slots_epoch: the marker is this run's");
    is_string(marker, ep, "and it is the marker");
    is_int(0, finish(redis_slots_needs_rebuild(rs, on_done, &o), &o), "no rebuild needed");

    /* as after a restart from a snapshot, or a fail-over: another run's marker */
    admin_str("SET t:epoch 1234:0123456789abcdef0123456789abcdef01234567");
    is_int(SLOT_NEEDS_REBUILD, acquire(rs, "c1", "+15550000001"),
           "a marker of another run: acquire refused (rebuild first)");
    memset(&o, 0, sizeof(o));
    is_int(1, finish(redis_slots_needs_rebuild(rs, on_done, &o), &o), "a rebuild is needed");
    is_int(0, epoch(rs, ep, sizeof(ep)), "redis_slots_epoch: no marker of this run");
    admin_str("SET t:slots:junk x");
    struct slot_entry e = { "c9", 2, "+15550000009", 30, NULL };
    is_int(1, rebuild(rs, &e, 1), "rebuilt despite the (foreign) marker");
    is_int(1, admin_int("ZCARD t:slots"), "with the one IN_PROGRESS entry");
    is_int(SLOT_OK, acquire(rs, "c1", "+15550000001"), "then acquire works again");
    admin_str("SET t:epoch 42");
    is_int(SLOT_NEEDS_REBUILD, acquire(rs, "c2", "+15550000002"),
           "a marker of the old format (no run_id) counts as foreign");
}

static void test_scan(struct redis_slots *rs)
{
    struct outcome o = { 0 };
    char cursor[64] = "0";
    int seen_slot = 0, seen_phone = 0;

    admin_int("FLUSHALL");
    rebuild(rs, NULL, 0);
    acquire(rs, "c1", "+15550000001");
    do {
        memset(&o, 0, sizeof(o));
        finish(redis_slots_scan(rs, SLOT_SCAN_LEASES, cursor, 100, on_scan, &o), &o);
        for (int i = 0; i < o.n_seen; i++)
            seen_slot += strcmp(o.seen[i], "c1:1|") == 0;
        snprintf(cursor, sizeof(cursor), "%s", o.cursor);
    } while (o.done && strcmp(cursor, "0") != 0);
    is_int(1, seen_slot, "the lease scan sees the slot token (no phone)");
    snprintf(cursor, sizeof(cursor), "0");
    do {
        memset(&o, 0, sizeof(o));
        finish(redis_slots_scan(rs, SLOT_SCAN_PHONES, cursor, 100, on_scan, &o), &o);
        for (int i = 0; i < o.n_seen; i++)
            seen_phone += strcmp(o.seen[i], "c1:1|+15550000001") == 0;
        snprintf(cursor, sizeof(cursor), "%s", o.cursor);
    } while (o.done && strcmp(cursor, "0") != 0);
    is_int(1, seen_phone, "the phone scan sees the lock with its number");
}

static void test_fence(struct redis_slots *rs)
{
    char ep[256];
    struct outcome o = { 0 };
    long long now, lease = 600 * 1000;

    admin_int("FLUSHALL");
    rebuild(rs, NULL, 0);
    epoch(rs, ep, sizeof(ep));
    admin_str("SET t:leader:token 7");
    now = redis_now_ms();
    admin_int("ZADD t:slots %lld old:1", now + 5000);    /* taken 595 s ago */
    admin_int("ZADD t:slots %lld young:1", now + lease); /* taken now */
    admin_str("SET t:phone:+15550000003 old:1 PX 5000");
    admin_str("SET t:phone:+15550000004 young:1 PX %lld", lease);
    struct slot_seen drop[] = {
        { "old:1", NULL },           { "young:1", NULL },
        { "old:1", "+15550000003" }, { "young:1", "+15550000004" },
        { "gone:1", NULL },
    };
    struct slot_fence bad_leader = { 6, ep }, bad_epoch = { 7, "1:abc" }, good = { 7, ep };

    is_int(SLOT_FENCE_LEADER,
           finish(redis_slots_drop(rs, &bad_leader, drop, 5, 30, 600, on_done, &o), &o),
           "drop under another leadership's token: refused");
    memset(&o, 0, sizeof(o));
    is_int(SLOT_FENCE_EPOCH,
           finish(redis_slots_drop(rs, &bad_epoch, drop, 5, 30, 600, on_done, &o), &o),
           "drop with an epoch read before a rebuild: refused");
    is_int(2, admin_int("ZCARD t:slots"), "nothing dropped so far");
    memset(&o, 0, sizeof(o));
    is_int(2, finish(redis_slots_drop(rs, &good, drop, 5, 30, 600, on_done, &o), &o),
           "drop: the old lease and the old lock went");
    ok(strcmp(admin_str("ZSCORE t:slots old:1"), "") == 0 &&
           admin_int("EXISTS t:phone:+15550000003") == 0,
       "old lease and lock gone");
    ok(strcmp(admin_str("ZSCORE t:slots young:1"), "") != 0, "the young lease is kept");
    is_string("young:1", admin_str("GET t:phone:+15550000004"), "the young lock is kept");

    /* a lock that changed hands since the scan is not dropped */
    admin_str("SET t:phone:+15550000005 other:1 PX 5000");
    struct slot_seen moved = { "old:1", "+15550000005" };
    memset(&o, 0, sizeof(o));
    is_int(0, finish(redis_slots_drop(rs, &good, &moved, 1, 30, 600, on_done, &o), &o),
           "a lock held by another token now is left alone");

    struct slot_entry e[] = { { "c7", 1, "+15550000007", 100, NULL },
                              { "young", 1, "+15550000004", 600, NULL } };
    memset(&o, 0, sizeof(o));
    is_int(SLOT_FENCE_EPOCH, finish(redis_slots_restore(rs, &bad_epoch, e, 2, on_done, &o), &o),
           "restore with a stale epoch: refused");
    memset(&o, 0, sizeof(o));
    is_int(2, finish(redis_slots_restore(rs, &good, e, 2, on_done, &o), &o),
           "restore: the missing lease and lock written, the present ones left");
    is_string("c7:1", admin_str("GET t:phone:+15550000007"), "the restored lock holds the token");
    long long pttl = admin_int("PTTL t:phone:+15550000007");
    ok(pttl > 90000 && pttl <= 100000, "with the remaining lease (%lld ms)", pttl);
}

static void on_grant(void *arg, const struct slot_grant *g, const char *err)
{
    on_done(arg, g->result, err);
}

/* A take for OWNER:1 in campaign CAMP, which has one slot. */
static int take_camp(struct redis_slots *rs, const char *owner, const char *phone, const char *camp)
{
    struct slot_ask a = { .call_id = owner,
                          .attempt = 1,
                          .phone = phone,
                          .max_slots = 10,
                          .lease_s = 600,
                          .campaign_id = camp,
                          .campaign_max = 1 };
    struct outcome o = { 0 };
    return finish(redis_slots_take(rs, &a, on_grant, &o), &o);
}

/* The reconcile keeps a campaign's count with the slot set: a dropped
 * stray lease frees its campaign slot, a restored lease counts again. */
static void test_campaign_paths(struct redis_slots *rs)
{
    char ep[256];
    struct outcome o = { 0 };

    admin_int("FLUSHALL");
    rebuild(rs, NULL, 0);
    epoch(rs, ep, sizeof(ep));
    admin_str("SET t:leader:token 7");
    admin_int("ZADD t:slots %lld stray:1", redis_now_ms() + 5000); /* taken 595 s ago */
    admin_int("SADD t:camp:k stray:1");
    is_int(SLOT_CAMPAIGN_FULL, take_camp(rs, "n1", "+15550000021", "k"),
           "a stray lease holds campaign k's one slot");
    struct slot_fence good = { 7, ep };
    struct slot_seen drop = { "stray:1", NULL };
    is_int(1, finish(redis_slots_drop(rs, &good, &drop, 1, 30, 600, on_done, &o), &o),
           "the reconcile drops the stray lease");
    is_int(SLOT_OK, take_camp(rs, "n1", "+15550000021", "k"), "which frees the campaign's slot");

    struct slot_entry e = { "c8", 1, "+15550000022", 100, "m" };
    memset(&o, 0, sizeof(o));
    is_int(2, finish(redis_slots_restore(rs, &good, &e, 1, on_done, &o), &o),
           "restore: an IN_PROGRESS call of campaign m whose lease was lost");
    is_int(SLOT_CAMPAIGN_FULL, take_camp(rs, "n2", "+15550000023", "m"),
           "campaign m counts it again");
}

static void test_release_retry(int port)
{
    struct redis_slots *rs = make(port, 0.3);

    admin_int("FLUSHALL");
    rebuild(rs, NULL, 0);
    is_int(SLOT_OK, acquire(rs, "r1", "+15550000011"), "a slot taken");
    /* Redis does not answer for 1.5 s: the release times out (0.3 s) */
    admin_str("CLIENT PAUSE 1500");
    redis_slots_release_retried(rs, "r1", 1, "+15550000011", "test");
    ok(run_loop_until(loop, queue_empty_and_released, rs, 15),
       "the unanswered release was retried until Redis answered: slot free, queue empty");
    is_int(0, admin_int("EXISTS t:phone:+15550000011"), "and the phone lock is gone");
    redis_slots_free(rs);
}

int main(void)
{
    const char *p = getenv("CALLORCH_TEST_REDIS_PORT");
    struct redis_slots *rs;

    if (p == NULL || atoi(p) <= 0) {
        printf("1..0 # SKIP no CALLORCH_TEST_REDIS_PORT\n");
        return 0;
    }
    co_log_set_level(getenv("TEST_VERBOSE") ? CO_LOG_DEBUG : CO_LOG_ERROR);
    loop = ev_default_loop(0);
    admin_connect(atoi(p));
    rs = make(atoi(p), 5);
    test_run_id(rs);
    test_scan(rs);
    test_fence(rs);
    test_campaign_paths(rs);
    redis_slots_free(rs);
    test_release_retry(atoi(p));
    redisFree(admin);
    return done_testing();
}
