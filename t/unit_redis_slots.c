/*
 * unit_redis_slots.c — the redis_slots API (src/dispatch/slots.c, the slot
 * rules, over src/net/redis.c, the connection) against a real Redis server.
 *
 * CALLORCH_TEST_REDIS_PORT holds the port of a throw-away Redis on
 * 127.0.0.1 (t/13-redis-slots.t starts one and sets it); without it the test
 * skips.  The test FLUSHALLs that server.  The restart case runs when
 * CALLORCH_TEST_REDIS_CTL=stdio: we print "# redisctl stop" / "# redisctl
 * start" and wait for a line on stdin (that is how t/13-redis-slots.t drives
 * the harness).
 */
#include <auto-config.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "dispatch/slots.h"
#include "tap.h"
#include "tap_ev.h"
#include "tap_redis.h"
#include "util/config.h"
#include "util/log.h"

static struct ev_loop *loop;
static int port;
static int in_submit;        /* set while a request function runs */
static int cb_inside_submit; /* a callback came from inside a submit */

/* ------------------------------------------------------------- helpers --- */

/* Run the loop until COND(ARG) holds or SECONDS pass; returns COND. */
static int run_until(int (*cond)(void *), void *arg, double seconds)
{
    return run_loop_until(loop, cond, arg, seconds);
}

static int never(void *arg)
{
    return 0;
}

/* Let the loop run for SECONDS. */
static void run_for(double seconds)
{
    run_until(never, NULL, seconds);
}

static int is_up(void *arg)
{
    return redis_slots_is_up(arg);
}

static int is_down(void *arg)
{
    return redis_slots_state(arg) == REDIS_SLOTS_DOWN;
}

static int counter_reaches(void *arg)
{
    int *p = arg;
    return p[0] >= p[1];
}

/* One request's outcome, copied out of its callback. */
struct outcome {
    int done;
    int r; /* enum slot_result, or the int value */
    int in_use;
    long long token;
    char err[256];
};

static void keep_err(struct outcome *o, const char *err)
{
    if (in_submit)
        cb_inside_submit++;
    o->done++;
    snprintf(o->err, sizeof(o->err), "%s", err ? err : "");
}

static void on_acquire(void *arg, enum slot_result r, int in_use, const char *err)
{
    struct outcome *o = arg;

    keep_err(o, err);
    o->r = r;
    o->in_use = in_use;
}

static void on_done(void *arg, int value, const char *err)
{
    struct outcome *o = arg;

    keep_err(o, err);
    o->r = value;
}

static void on_leader(void *arg, int is_leader, long long token, const char *err)
{
    struct outcome *o = arg;

    keep_err(o, err);
    o->r = is_leader;
    o->token = token;
}

static int outcome_done(void *arg)
{
    return ((struct outcome *)arg)->done > 0;
}

/* Wait for O; returns its value, or -100 when the request was refused and
 * -101 when no callback came. */
static int finish(int submitted, struct outcome *o)
{
    if (submitted != 0)
        return -100;
    return run_until(outcome_done, o, 10) ? o->r : -101;
}

static int acquire(struct redis_slots *rs, const char *id, int attempt, const char *phone, int max,
                   double lease, struct outcome *o)
{
    int r;

    memset(o, 0, sizeof(*o));
    in_submit = 1;
    r = redis_slots_acquire(rs, id, attempt, phone, max, lease, on_acquire, o);
    in_submit = 0;
    return finish(r, o);
}

static void on_grant(void *arg, const struct slot_grant *g, const char *err)
{
    struct outcome *o = arg;

    keep_err(o, err);
    o->r = g->result;
    o->in_use = g->in_use;
    o->token = g->free_at_ms;
}

/* redis_slots_take() of A; o->token: free_at_ms. */
static int take_ask(struct redis_slots *rs, const struct slot_ask *a, struct outcome *o)
{
    int r;

    memset(o, 0, sizeof(*o));
    in_submit = 1;
    r = redis_slots_take(rs, a, on_grant, o);
    in_submit = 0;
    return finish(r, o);
}

/* acquire() with a per-number cap of CAP per PERIOD s; o->token: free_at_ms. */
static int take(struct redis_slots *rs, const char *id, const char *phone, int cap, double period,
                struct outcome *o)
{
    struct slot_ask a = { .call_id = id,
                          .attempt = 1,
                          .phone = phone,
                          .max_slots = 10,
                          .lease_s = 30,
                          .cap = cap,
                          .cap_period_s = period };

    return take_ask(rs, &a, o);
}

static int release(struct redis_slots *rs, const char *id, int attempt, const char *phone)
{
    struct outcome o = { 0 };
    int r;

    in_submit = 1;
    r = redis_slots_release(rs, id, attempt, phone, on_done, &o);
    in_submit = 0;
    return finish(r, &o);
}

static int extend(struct redis_slots *rs, const char *id, int attempt, const char *phone,
                  double lease)
{
    struct outcome o = { 0 };

    return finish(redis_slots_extend(rs, id, attempt, phone, lease, on_done, &o), &o);
}

static int count(struct redis_slots *rs)
{
    struct outcome o = { 0 };

    return finish(redis_slots_count(rs, on_done, &o), &o);
}

static int needs_rebuild(struct redis_slots *rs)
{
    struct outcome o = { 0 };

    return finish(redis_slots_needs_rebuild(rs, on_done, &o), &o);
}

static int rebuild(struct redis_slots *rs, const struct slot_entry *e, int n)
{
    struct outcome o = { 0 };

    return finish(redis_slots_rebuild(rs, e, n, on_done, &o), &o);
}

static int leader(struct redis_slots *rs, const char *owner, double ttl, long long *token)
{
    struct outcome o = { 0 };
    int r = finish(redis_leader_acquire(rs, owner, ttl, on_leader, &o), &o);

    *token = o.token;
    return r;
}

static int leader_release(struct redis_slots *rs, const char *owner)
{
    struct outcome o = { 0 };

    return finish(redis_leader_release(rs, owner, on_done, &o), &o);
}

/* A config for HOST:PORT with PASSWORD and DB; prefix "t:". */
static struct co_config make_cfg(const char *host, int p, const char *password, int db)
{
    struct co_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.redis_host = (char *)host;
    cfg.redis_port = p;
    cfg.redis_password = (char *)password;
    cfg.redis_db = db;
    cfg.redis_key_prefix = (char *)"t:";
    cfg.max_concurrent_calls = 30;
    return cfg;
}

static struct redis_slots *make(const char *host, int p, const char *password, int db,
                                double timeout)
{
    struct co_config cfg = make_cfg(host, p, password, db);
    struct redis_opts opts;
    struct redis_slots *rs;
    char err[256];

    redis_opts_init(&opts);
    opts.name = "test";
    opts.command_timeout = timeout;
    if ((rs = redis_slots_new(loop, &cfg, &opts, err, sizeof(err))) == NULL)
        bail("redis_slots_new: %s", err);
    return rs;
}

/* A fresh, empty and rebuilt (marker set) state on the test server. */
static void reset_state(struct redis_slots *rs)
{
    admin_int("FLUSHALL");
    if (rebuild(rs, NULL, 0) != 1)
        bail("empty rebuild failed");
}

/* A loopback port nobody listens on (bound, then closed). */
static int closed_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), p;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        bail("cannot bind a loopback port");
    p = ntohs(sa.sin_port);
    close(fd);
    return p;
}

/* A loopback socket that listens but never accepts nor answers. */
static int silent_listener(int *p)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        bail("cannot listen on a loopback port");
    *p = ntohs(sa.sin_port);
    return fd;
}

/* ------------------------------------------------------------- cases --- */

static void test_fresh_redis(struct redis_slots *rs)
{
    struct outcome o;

    admin_int("FLUSHALL");
    is_int(1, needs_rebuild(rs), "an empty Redis needs a rebuild");
    is_int(SLOT_NEEDS_REBUILD, acquire(rs, "c0", 1, "+15550000000", 10, 30, &o),
           "acquire before the first rebuild: NEEDS_REBUILD");
    is_int(1, rebuild(rs, NULL, 0), "empty rebuild sets the marker");
    is_int(0, needs_rebuild(rs), "no rebuild needed any more");
    is_int(0, rebuild(rs, NULL, 0), "a second rebuild changes nothing (marker present)");
    ok(admin_int("EXISTS t:epoch") == 1, "marker key t:epoch exists");
}

static void test_cap_and_locks(struct redis_slots *rs)
{
    struct outcome o;
    long long pttl;

    reset_state(rs);
    is_int(SLOT_OK, acquire(rs, "c1", 1, "+15550000001", 3, 30, &o), "c1 acquires");
    is_int(1, o.in_use, "one slot in use");
    is_int(SLOT_OK, acquire(rs, "c2", 1, "+15550000002", 3, 30, &o), "c2 acquires");
    is_int(SLOT_OK, acquire(rs, "c3", 1, "+15550000003", 3, 30, &o), "c3 acquires");
    is_int(3, o.in_use, "three slots in use");
    is_int(SLOT_NO_SLOT, acquire(rs, "c4", 1, "+15550000004", 3, 30, &o), "c4: NO_SLOT at max");
    is_int(3, o.in_use, "NO_SLOT reports the slots in use");
    ok(admin_int("ZCARD t:slots") == 3, "three members in t:slots");
    is_string("c2:1", admin_str("GET t:phone:+15550000002"), "phone key holds the owner");
    pttl = admin_int("PTTL t:phone:+15550000002");
    ok(pttl > 28000 && pttl <= 30000, "phone lock expires with the lease (pttl %lld)", pttl);
    ok(admin_int("EXISTS t:phone:+15550000004") == 0, "no phone key for the refused call");

    is_int(1, release(rs, "c1", 1, "+15550000001"), "c1 releases");
    is_int(SLOT_PHONE_BUSY, acquire(rs, "c5", 1, "+15550000002", 3, 30, &o),
           "c5 on c2's phone: PHONE_BUSY although a slot is free");
    is_int(2, o.in_use, "PHONE_BUSY took no slot");
    is_int(SLOT_OK, acquire(rs, "c2", 1, "+15550000002", 3, 30, &o), "c2 again (redelivery): OK");
    is_int(2, o.in_use, "the re-acquire took no second slot");
    is_int(SLOT_OK, acquire(rs, "c2", 1, "+15550000002", 2, 30, &o),
           "re-acquire is OK even when the set is full");
    is_int(SLOT_PHONE_BUSY, acquire(rs, "c2", 2, "+15550000002", 3, 30, &o),
           "the next attempt of c2 is another owner");

    is_int(0, release(rs, "c9", 1, "+15550000002"), "release by a wrong owner: nothing");
    is_int(0, release(rs, "c2", 2, "+15550000002"), "release by a wrong attempt: nothing");
    is_string("c2:1", admin_str("GET t:phone:+15550000002"), "phone lock still c2's");
    ok(admin_int("ZCARD t:slots") == 2, "slots unchanged");
    is_int(1, release(rs, "c2", 1, "+15550000002"), "release by the owner");
    ok(admin_int("EXISTS t:phone:+15550000002") == 0, "phone lock gone");
    ok(admin_str("ZSCORE t:slots c2:1")[0] == '\0', "slot gone");
    is_int(0, release(rs, "c2", 1, "+15550000002"), "a second release: nothing");
    is_int(1, count(rs), "count: one slot (c3) left");
    is_int(SLOT_OK, acquire(rs, "c5", 1, "+15550000002", 3, 30, &o), "c5 gets the phone now");
}

static void test_extend(struct redis_slots *rs)
{
    struct outcome o;
    long long pttl;

    reset_state(rs);
    is_int(SLOT_OK, acquire(rs, "e1", 1, "+15550000011", 3, 1, &o), "e1 acquires for 1 s");
    is_int(1, extend(rs, "e1", 1, "+15550000011", 60), "extend to 60 s");
    pttl = admin_int("PTTL t:phone:+15550000011");
    ok(pttl > 58000, "phone lock renewed (pttl %lld)", pttl);
    ok(atof(admin_str("ZSCORE t:slots e1:1")) > 0, "slot still held");
    is_int(0, extend(rs, "e2", 1, "+15550000011", 60), "extend by a non-owner: 0");
    is_int(SLOT_OK, acquire(rs, "e1", 1, "+15550000011", 3, 5, &o),
           "re-acquire with a shorter lease: OK");
    pttl = admin_int("PTTL t:phone:+15550000011");
    ok(pttl > 58000, "a re-acquire never shortens the lease (pttl %lld)", pttl);
    is_int(1, release(rs, "e1", 1, "+15550000011"), "release");
    is_int(0, extend(rs, "e1", 1, "+15550000011", 60), "extend after release: 0 (lease lost)");
    ok(admin_int("EXISTS t:phone:+15550000011") == 0, "extend did not resurrect the lock");
}

static void test_expiry(struct redis_slots *rs)
{
    struct outcome o;

    reset_state(rs);
    is_int(SLOT_OK, acquire(rs, "x1", 1, "+15550000021", 2, 0.2, &o), "x1: 0.2 s lease");
    is_int(SLOT_OK, acquire(rs, "x2", 1, "+15550000022", 2, 0.2, &o), "x2: 0.2 s lease");
    is_int(SLOT_NO_SLOT, acquire(rs, "x3", 1, "+15550000023", 2, 30, &o), "x3: full");
    run_for(0.35);
    is_int(0, count(rs), "expired leases are not counted");
    ok(admin_int("ZCARD t:slots") == 0, "and were dropped from the set");
    is_int(SLOT_OK, acquire(rs, "x3", 1, "+15550000023", 2, 30, &o), "x3 gets a slot now");
    is_int(SLOT_OK, acquire(rs, "x4", 1, "+15550000021", 2, 30, &o),
           "x1's phone is free after its lease");
    is_int(0, extend(rs, "x2", 1, "+15550000022", 30), "an expired lease cannot be extended");
}

static void test_rebuild(struct redis_slots *rs)
{
    struct slot_entry e[] = {
        { "r1", 1, "+15550000031", 30, NULL },
        { "r2", 2, "+15550000032", 30, NULL },
        { "r3", 1, "+15550000033", -5, NULL }, /* past its timeout: still counted for 1 s */
    };
    struct outcome o;
    long long pttl;

    reset_state(rs);
    is_int(SLOT_OK, acquire(rs, "old", 1, "+15550000039", 10, 30, &o), "a slot before the loss");
    admin_int("FLUSHALL");
    is_int(SLOT_NEEDS_REBUILD, acquire(rs, "n1", 1, "+15550000038", 10, 30, &o),
           "after FLUSHALL: NEEDS_REBUILD");
    is_int(0, o.in_use, "no slots counted");
    is_int(1, needs_rebuild(rs), "needs_rebuild says so");
    ok(admin_int("EXISTS t:phone:+15550000038") == 0, "nothing was taken meanwhile");
    is_int(1, rebuild(rs, e, 3), "rebuild from three IN_PROGRESS rows");
    is_int(0, needs_rebuild(rs), "marker back");
    ok(admin_int("ZCARD t:slots") == 3, "three slots");
    is_string("r2:2", admin_str("GET t:phone:+15550000032"), "phone lock restored with owner");
    pttl = admin_int("PTTL t:phone:+15550000031");
    ok(pttl > 28000 && pttl <= 30000, "with the remaining lease (pttl %lld)", pttl);
    pttl = admin_int("PTTL t:phone:+15550000033");
    ok(pttl > 0 && pttl <= 1000, "an overdue row gets 1 s (pttl %lld)", pttl);
    is_int(SLOT_NO_SLOT, acquire(rs, "n1", 1, "+15550000038", 3, 30, &o), "cap holds: NO_SLOT");
    is_int(SLOT_PHONE_BUSY, acquire(rs, "n2", 1, "+15550000031", 10, 30, &o),
           "rebuilt phone lock holds: PHONE_BUSY");
    is_int(SLOT_OK, acquire(rs, "r1", 1, "+15550000031", 3, 30, &o),
           "the rebuilt owner re-acquires");
    is_int(3, o.in_use, "without a new slot");
    is_int(0, rebuild(rs, e, 1), "a stale second rebuild changes nothing");
    ok(admin_int("ZCARD t:slots") == 3, "slots untouched");
    is_int(1, release(rs, "r2", 2, "+15550000032"), "rebuilt owner releases");
    ok(admin_int("EXISTS t:phone:+15550000032") == 0, "its lock is gone");
}

static void test_leader(struct redis_slots *rs)
{
    long long t1, t2, t3, t;

    admin_int("FLUSHALL");
    is_int(1, leader(rs, "A", 5, &t1), "A becomes leader");
    ok(t1 > 0, "with a token (%lld)", t1);
    is_int(0, leader(rs, "B", 5, &t), "B is not leader");
    is_int(0, (int)t, "and has no token");
    is_int(1, leader(rs, "A", 5, &t), "A renews");
    is_int(t1, t, "same leadership, same token");
    is_int(0, leader_release(rs, "B"), "B cannot release A's lease");
    is_string("A", admin_str("GET t:leader"), "A still holds it");
    is_int(1, leader_release(rs, "A"), "A releases");
    is_int(1, leader(rs, "B", 0.2, &t2), "B becomes leader");
    ok(t2 > t1, "with a larger token (%lld > %lld)", t2, t1);
    run_for(0.35);
    is_int(1, leader(rs, "A", 5, &t3), "A takes over after B's lease expired");
    ok(t3 > t2, "with a larger token again (%lld > %lld)", t3, t2);
    is_int(0, leader(rs, "B", 5, &t), "B cannot come back");
    admin_int("FLUSHALL");
    is_int(1, leader(rs, "B", 5, &t), "after Redis lost its data B leads");
    ok(t > t3, "and the token still grows (%lld > %lld)", t, t3);
}

struct many {
    int done[2]; /* done count, wanted */
    int ok, no_slot, other, errors;
};

static void many_done(void *arg, enum slot_result r, int in_use, const char *err)
{
    struct many *m = arg;

    if (in_submit)
        cb_inside_submit++;
    m->done[0]++;
    if (err != NULL)
        m->errors++;
    else if (r == SLOT_OK)
        m->ok++;
    else if (r == SLOT_NO_SLOT)
        m->no_slot++;
    else
        m->other++;
}

/* N acquires on distinct phones through the handles RS[0..NRS-1], max 50. */
static void acquire_many(struct redis_slots **rs, int nrs, int n, struct many *m)
{
    char id[32], phone[32];

    memset(m, 0, sizeof(*m));
    m->done[1] = n;
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        snprintf(phone, sizeof(phone), "+1555100%04d", i);
        in_submit = 1;
        if (redis_slots_acquire(rs[i % nrs], id, 1, phone, 50, 30, many_done, m) != 0)
            m->done[1]--, m->errors++;
        in_submit = 0;
    }
    run_until(counter_reaches, m->done, 20);
}

static void test_concurrency(struct redis_slots *rs)
{
    struct redis_slots *more[4];
    struct many m;

    reset_state(rs);
    acquire_many(&rs, 1, 200, &m);
    is_int(200, m.done[0], "200 pipelined acquires all answered");
    is_int(50, m.ok, "exactly 50 OK with max 50");
    is_int(150, m.no_slot, "150 NO_SLOT");
    is_int(0, m.errors + m.other, "no errors");
    ok(admin_int("ZCARD t:slots") == 50, "50 members in the set");

    for (int i = 0; i < 4; i++)
        more[i] = make("127.0.0.1", port, "", 0, 5);
    for (int i = 0; i < 4; i++)
        run_until(is_up, more[i], 10);
    reset_state(rs);
    acquire_many(more, 4, 400, &m);
    is_int(50, m.ok, "four connections, 400 acquires: exactly 50 OK");
    is_int(350, m.no_slot, "the rest NO_SLOT");
    for (int i = 0; i < 4; i++)
        redis_slots_free(more[i]);
}

/* The attempts counted for a phone, for run_until(). */
struct freq_wait {
    const char *phone;
    long long want;
};

static int freq_is(void *arg)
{
    const struct freq_wait *w = arg;
    return admin_int("ZCARD t:freq:%s", w->phone) == w->want;
}

static void test_frequency(struct redis_slots *rs)
{
    const char *ph = "+15550000091";
    struct outcome o;
    long long first;

    reset_state(rs);
    is_int(SLOT_OK, take(rs, "f1", ph, 2, 60, &o), "cap 2: the first attempt is taken");
    ok(admin_int("ZCARD t:freq:%s", ph) == 1, "and counted in t:freq:<phone>");
    long long pttl = admin_int("PTTL t:freq:%s", ph);
    ok(pttl > 59000 && pttl <= 60000, "the count expires a period later (pttl %lld)", pttl);
    is_int(SLOT_OK, take(rs, "f1", ph, 2, 60, &o), "the same token again: OK");
    ok(admin_int("ZCARD t:freq:%s", ph) == 1, "not counted twice");
    first = atoll(admin_str("ZSCORE t:freq:%s f1:1", ph));
    is_int(1, release(rs, "f1", 1, ph), "a started attempt ends: released");
    ok(admin_int("ZCARD t:freq:%s", ph) == 1, "the started attempt still counts");

    is_int(SLOT_OK, take(rs, "f2", ph, 2, 60, &o), "second attempt taken");
    redis_slots_release_unstarted(rs, "f2", 1, ph, "test");
    struct freq_wait w = { ph, 1 };
    ok(run_until(freq_is, &w, 10), "a call not started: its attempt leaves the count");
    ok(admin_int("EXISTS t:phone:%s", ph) == 0, "and its lock is released");

    is_int(SLOT_OK, take(rs, "f3", ph, 2, 60, &o), "so another attempt may be taken");
    is_int(1, release(rs, "f3", 1, ph), "f3 ends");
    long long slots = admin_int("ZCARD t:slots");
    is_int(SLOT_FREQUENCY, take(rs, "f4", ph, 2, 60, &o), "cap reached: SLOT_FREQUENCY");
    ok(o.token == first + 60000, "free_at_ms = the oldest attempt + period (%lld, %lld)", o.token,
       first + 60000);
    ok(admin_int("ZCARD t:slots") == slots && admin_int("EXISTS t:phone:%s", ph) == 0,
       "nothing taken for the held call");
    ok(admin_int("ZCARD t:freq:%s", ph) == 2, "nor counted");

    admin_int("ZADD t:freq:%s XX %lld f1:1", ph, first - 60001);
    is_int(SLOT_OK, take(rs, "f4", ph, 2, 60, &o), "the oldest left the period: taken");
    ok(admin_str("ZSCORE t:freq:%s f1:1", ph)[0] == '\0' && admin_int("ZCARD t:freq:%s", ph) == 2,
       "the attempt outside the period was trimmed");

    is_int(SLOT_OK, take(rs, "g1", "+15550000092", 0, 0, &o), "cap 0: taken");
    ok(admin_int("EXISTS t:freq:+15550000092") == 0, "cap 0: no freq key");
    struct slot_ask bad = {
        .call_id = "b", .attempt = 1, .phone = "+1555", .max_slots = 5, .lease_s = 30, .cap = 2
    };
    is_int(-1, redis_slots_take(rs, &bad, on_grant, NULL), "a cap without a period refused");
}

/* Rounds of four takes at once, through four connections, for one number
 * with a cap of 3; the one that got its slot ends (counted) before the next
 * round: exactly three ever get one, however the takes interleave. */
static void test_frequency_race(struct redis_slots *rs)
{
    const char *ph = "+15550000094";
    struct redis_slots *more[4];
    int oks = 0, freq = 0, busy = 0;

    reset_state(rs);
    for (int i = 0; i < 4; i++)
        more[i] = make("127.0.0.1", port, "", 0, 5);
    for (int i = 0; i < 4; i++)
        run_until(is_up, more[i], 10);
    for (int round = 0; round < 5; round++) {
        struct outcome o[4];
        struct slot_ask a[4];
        char id[4][16];
        for (int i = 0; i < 4; i++) {
            memset(&o[i], 0, sizeof(o[i]));
            snprintf(id[i], sizeof(id[i]), "q%d.%d", round, i);
            a[i] = (struct slot_ask){ .call_id = id[i],
                                      .attempt = 1,
                                      .phone = ph,
                                      .max_slots = 10,
                                      .lease_s = 30,
                                      .cap = 3,
                                      .cap_period_s = 60 };
            if (redis_slots_take(more[i], &a[i], on_grant, &o[i]) != 0)
                bail("take refused: %s", redis_slots_error(more[i]));
        }
        for (int i = 0; i < 4; i++) {
            run_until(outcome_done, &o[i], 10);
            oks += o[i].r == SLOT_OK;
            freq += o[i].r == SLOT_FREQUENCY;
            busy += o[i].r == SLOT_PHONE_BUSY;
            if (o[i].r == SLOT_OK)
                release(rs, id[i], 1, ph);
        }
    }
    is_int(3, oks, "four connections racing, cap 3: exactly three attempts taken");
    /* the cap is checked before the lock: once the third is taken, the
     * takes of its round are held for the cap, not found busy */
    is_int(11, freq, "the takes after the third held for the cap");
    is_int(6, busy, "the others of the first two rounds found the phone locked");
    ok(admin_int("ZCARD t:freq:%s", ph) == 3, "three attempts counted");
    for (int i = 0; i < 4; i++)
        redis_slots_free(more[i]);
}

static void test_recount(struct redis_slots *rs)
{
    const char *ph = "+15550000093";
    struct timeval tv;
    struct outcome o;

    reset_state(rs);
    gettimeofday(&tv, NULL);
    long long now = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    struct slot_counted e[] = { { "r1", 1, ph, now - 1000 }, { "r2", 1, ph, now - 120000 } };
    memset(&o, 0, sizeof(o));
    is_int(0, finish(redis_slots_recount(rs, e, 2, 60, on_done, &o), &o),
           "recount with the marker in place: nothing changed");
    ok(admin_int("EXISTS t:freq:%s", ph) == 0, "no count written");
    admin_int("DEL t:epoch");
    memset(&o, 0, sizeof(o));
    is_int(1, finish(redis_slots_recount(rs, e, 2, 60, on_done, &o), &o),
           "recount while a rebuild is needed: written");
    ok(admin_int("ZCARD t:freq:%s", ph) == 1, "only the attempt within the period counts");
    ok(atoll(admin_str("ZSCORE t:freq:%s r1:1", ph)) == now - 1000,
       "as <call id>:<attempt>, at its start");
    is_int(1, rebuild(rs, NULL, 0), "then the rebuild");
    is_int(SLOT_FREQUENCY, take(rs, "r3", ph, 1, 60, &o), "the restored count holds the cap");
    ok(o.token == now - 1000 + 60000, "until the restored attempt leaves the period");
}

static void test_noscript(struct redis_slots *rs)
{
    struct outcome o;

    reset_state(rs);
    is_string("OK", admin_str("SCRIPT FLUSH"), "script cache flushed behind our back");
    is_int(SLOT_OK, acquire(rs, "s1", 1, "+15550000041", 5, 30, &o),
           "acquire still works (NOSCRIPT -> EVAL)");
    is_string("", o.err, "without an error");
    is_int(1, release(rs, "s1", 1, "+15550000041"), "release too");
}

static void test_invalid(struct redis_slots *rs)
{
    struct slot_entry bad = { "", 1, "+1555", 10, NULL };

    is_int(-1, redis_slots_acquire(rs, "", 1, "+1555", 5, 30, on_acquire, NULL),
           "empty call id refused");
    like(redis_slots_error(rs), "invalid argument", "error says why");
    is_int(-1, redis_slots_acquire(rs, "a", 1, "+1555", 5, 0, on_acquire, NULL),
           "zero lease refused");
    is_int(-1, redis_slots_acquire(rs, "a", -1, "+1555", 5, 30, on_acquire, NULL),
           "negative attempt refused");
    is_int(-1, redis_slots_release(rs, "a", 1, NULL, on_done, NULL), "no phone refused");
    is_int(-1, redis_slots_rebuild(rs, &bad, 1, on_done, NULL), "bad rebuild entry refused");
    is_int(-1, redis_leader_acquire(rs, "", 5, on_leader, NULL), "empty leader owner refused");
}

static void test_auth_and_db(void)
{
    struct redis_slots *rs, *bad;
    struct outcome o;

    is_string("OK", admin_str("CONFIG SET requirepass s3cret"), "Redis now wants a password");
    rs = make("127.0.0.1", port, "s3cret", 3, 5);
    bad = make("127.0.0.1", port, "wrong", 0, 5);
    ok(run_until(is_up, rs, 10), "right password: up (%s)", redis_slots_error(rs));
    ok(run_until(is_down, bad, 10), "wrong password: down");
    like(redis_slots_error(bad), "AUTH failed", "error names AUTH: %s", redis_slots_error(bad));
    is_int(-1, redis_slots_count(bad, on_done, &o), "requests refused while down");
    admin_int("FLUSHALL");
    is_int(1, rebuild(rs, NULL, 0), "rebuild in db 3");
    is_int(SLOT_OK, acquire(rs, "d1", 1, "+15550000051", 5, 30, &o), "acquire in db 3");
    ok(admin_int("EXISTS t:slots") == 0, "nothing in db 0");
    admin_str("SELECT 3");
    ok(admin_int("ZCARD t:slots") == 1, "the slot is in db 3");
    admin_str("SELECT 0");
    redis_slots_free(bad);
    redis_slots_free(rs);
    is_string("OK", admin_str("CONFIG SET requirepass %s", ""), "password removed again");
}

static void test_host_name(void)
{
    struct redis_slots *rs = make("localhost", port, "", 0, 5);

    ok(run_until(is_up, rs, 10), "host name resolved asynchronously: up (%s)",
       redis_slots_error(rs));
    is_int(0, needs_rebuild(rs) < 0, "and answers");
    redis_slots_free(rs);
    rs = make("no-such-host.invalid", port, "", 0, 5);
    ok(run_until(is_down, rs, 10), "unknown host: down");
    like(redis_slots_error(rs), "resolve", "error says so: %s", redis_slots_error(rs));
    redis_slots_free(rs);
}

static void test_unreachable(void)
{
    struct redis_slots *rs = make("127.0.0.1", closed_port(), "", 0, 5);
    struct outcome o = { 0 };
    int r;

    in_submit = 1;
    r = redis_slots_acquire(rs, "u1", 1, "+15550000061", 5, 30, on_acquire, &o);
    in_submit = 0;
    /* Accepted while CONNECTING and failed from the loop, or refused at
     * once when the connect already failed inside redis_slots_new(). */
    ok(r != 0 || (run_until(outcome_done, &o, 10) && o.r == SLOT_ERROR),
       "a request made while connecting fails: %s", r != 0 ? redis_slots_error(rs) : o.err);
    ok(run_until(is_down, rs, 10), "closed port: DOWN");
    is_int(-1, redis_slots_acquire(rs, "u2", 1, "+15550000062", 5, 30, on_acquire, &o),
           "then requests are refused at once");
    like(redis_slots_error(rs), "Redis unavailable", "with a reason: %s", redis_slots_error(rs));
    run_for(0.5); /* a few reconnect attempts, no crash */
    ok(!redis_slots_is_up(rs), "still down");
    redis_slots_free(rs);
}

static void test_timeouts(void)
{
    struct redis_slots *rs;
    struct outcome o = { 0 };
    double t0;
    int p, fd = silent_listener(&p);

    rs = make("127.0.0.1", p, "", 0, 0.3);
    t0 = ev_time();
    ok(run_until(is_down, rs, 5), "a server that never answers: DOWN");
    ok(ev_time() - t0 < 2, "after the handshake timeout (%.2f s)", ev_time() - t0);
    like(redis_slots_error(rs), "timed out", "error: %s", redis_slots_error(rs));
    redis_slots_free(rs);
    close(fd);

    /* A server that stops answering after the handshake. */
    rs = make("127.0.0.1", port, "", 0, 0.3);
    ok(run_until(is_up, rs, 10), "up");
    is_string("OK", admin_str("CLIENT PAUSE 1200 ALL"), "Redis paused for 1.2 s");
    t0 = ev_time();
    ok(finish(redis_slots_count(rs, on_done, &o), &o) == 0 && o.err[0] != '\0',
       "the command fails: %s", o.err);
    like(o.err, "timed out", "because it timed out");
    ok(ev_time() - t0 < 1, "after about the command timeout (%.2f s)", ev_time() - t0);
    ok(!redis_slots_is_up(rs), "the connection was dropped");
    ok(run_until(is_up, rs, 10), "and comes back after the pause");
    ok(count(rs) >= 0, "commands work again");
    redis_slots_free(rs);
}

/* The server drops the connection while a request is in flight. */
static void test_connection_killed(void)
{
    struct redis_slots *rs = make("127.0.0.1", port, "", 0, 5);
    struct outcome o = { 0 };

    ok(run_until(is_up, rs, 10), "up");
    /* WRITE pause holds scripts but lets the admin's CLIENT KILL through */
    is_string("OK", admin_str("CLIENT PAUSE 3000 WRITE"), "scripts paused");
    is_int(0, redis_slots_count(rs, on_done, &o), "a request goes out");
    run_for(0.1);
    ok(admin_int("CLIENT KILL TYPE normal") >= 1, "the server kills our connection");
    ok(run_until(outcome_done, &o, 5), "the request in flight is answered");
    like(o.err, "connection lost", "with an error: %s", o.err);
    is_int(1, o.done, "exactly once");
    admin_str("CLIENT UNPAUSE");
    ok(run_until(is_up, rs, 10), "reconnected");
    redis_slots_free(rs);
}

/* More requests than max_pending are refused, not buffered without end. */
static void test_max_pending(void)
{
    struct co_config cfg = make_cfg("127.0.0.1", port, "", 0);
    struct redis_opts opts;
    struct outcome o[6];
    struct redis_slots *rs;
    int accepted = 0;
    char err[256];

    memset(o, 0, sizeof(o));
    redis_opts_init(&opts);
    opts.max_pending = 5;
    if ((rs = redis_slots_new(loop, &cfg, &opts, err, sizeof(err))) == NULL)
        bail("redis_slots_new: %s", err);
    for (int i = 0; i < 6; i++)
        accepted += redis_slots_count(rs, on_done, &o[i]) == 0;
    is_int(5, accepted, "max_pending 5: five accepted");
    like(redis_slots_error(rs), "queue full", "the sixth refused: %s", redis_slots_error(rs));
    for (int i = 0; i < 5; i++)
        run_until(outcome_done, &o[i], 10);
    is_int(5, o[0].done + o[1].done + o[2].done + o[3].done + o[4].done,
           "the accepted five are answered");
    ok(redis_slots_idle(rs), "then idle");
    redis_slots_free(rs);
}

/* Count the callbacks of O[0..N-1] and those that said "closed". */
static void tally(const struct outcome *o, int n, int *ncb, int *closed)
{
    *ncb = *closed = 0;
    for (int i = 0; i < n; i++) {
        *ncb += o[i].done;
        *closed += strstr(o[i].err, "redis_slots closed") != NULL;
    }
}

static void test_free_pending(void)
{
    struct redis_slots *rs = make("127.0.0.1", port, "", 0, 5);
    struct outcome o[3];
    int ncb, closed;

    memset(o, 0, sizeof(o));
    for (int i = 0; i < 2; i++)
        redis_slots_acquire(rs, "f", i, "+15550000071", 5, 30, on_acquire, &o[i]);
    redis_slots_free(rs); /* still CONNECTING: both are queued */
    tally(o, 2, &ncb, &closed);
    is_int(2, ncb, "free: each queued request got one callback");
    is_int(2, closed, "with 'redis_slots closed'");

    memset(o, 0, sizeof(o));
    rs = make("127.0.0.1", port, "", 0, 5);
    run_until(is_up, rs, 10);
    for (int i = 0; i < 3; i++)
        redis_slots_count(rs, on_done, &o[i]);
    ok(!redis_slots_idle(rs), "requests in flight");
    redis_slots_free(rs);
    tally(o, 3, &ncb, &closed);
    is_int(3, ncb, "free: each request in flight got one callback");
    is_int(3, closed, "with 'redis_slots closed'");
}

static void test_queue_while_connecting(void)
{
    struct redis_slots *rs = make("127.0.0.1", port, "", 0, 5);
    struct outcome o = { 0 };

    is_int(REDIS_SLOTS_CONNECTING, redis_slots_state(rs), "a new handle is CONNECTING");
    in_submit = 1;
    is_int(0, redis_slots_count(rs, on_done, &o), "a request is accepted while connecting");
    in_submit = 0;
    ok(run_until(outcome_done, &o, 10), "and answered once up");
    is_string("", o.err, "without an error");
    ok(redis_slots_idle(rs), "idle afterwards");
    redis_slots_free(rs);
}

/* A take of token ID (attempt 1) for PHONE in campaign CAMP (NULL: none)
 * with CMAX slots and CPS starts a second of its own, under a global
 * pacing of RATE; ten slots, 30 s leases. */
static int take_in(struct redis_slots *rs, const char *id, const char *phone, const char *camp,
                   int cmax, double cps, double rate, double lease, struct outcome *o)
{
    struct slot_ask a = { .call_id = id,
                          .attempt = 1,
                          .phone = phone,
                          .max_slots = 10,
                          .lease_s = lease,
                          .campaign_id = camp,
                          .campaign_max = cmax,
                          .calls_per_second = rate,
                          .campaign_cps = cps };

    return take_ask(rs, &a, o);
}

static void test_campaign(struct redis_slots *rs)
{
    struct outcome o;
    struct slot_entry e[] = {
        { "k1", 1, "+15550000131", 30, "c3" },
        { "k2", 1, "+15550000132", 30, NULL },
    };

    reset_state(rs);
    is_int(SLOT_OK, take_in(rs, "c1", "+15550000121", "c1", 2, 0, 0, 30, &o),
           "campaign max 2: 1st");
    is_int(SLOT_OK, take_in(rs, "c2", "+15550000122", "c1", 2, 0, 0, 30, &o), "2nd");
    is_int(SLOT_CAMPAIGN_FULL, take_in(rs, "c3", "+15550000123", "c1", 2, 0, 0, 30, &o),
           "3rd: SLOT_CAMPAIGN_FULL");
    ok(admin_int("ZCARD t:slots") == 2 && admin_int("EXISTS t:phone:+15550000123") == 0,
       "nothing taken for it");
    is_int(2, o.in_use, "in_use: the global slots");
    is_int(SLOT_OK, take_in(rs, "c2", "+15550000122", "c1", 2, 0, 0, 30, &o),
           "the same token again: OK, not counted twice");
    is_int(SLOT_OK, take_in(rs, "o1", "+15550000124", "other", 2, 0, 0, 30, &o),
           "another campaign has its own slots");
    is_int(SLOT_OK, take_in(rs, "s1", "+15550000125", NULL, 0, 0, 0, 30, &o),
           "a call without a campaign is not held");
    is_int(1, release(rs, "c1", 1, "+15550000121"), "a plain release (no campaign id) ...");
    is_int(SLOT_OK, take_in(rs, "c3", "+15550000123", "c1", 2, 0, 0, 30, &o),
           "... frees the campaign's slot too");
    ok(admin_int("SCARD t:camp:c1") == 2, "the released token left the campaign set");

    /* a lease that expires frees the campaign's slot with the global one */
    is_int(SLOT_OK, take_in(rs, "e1", "+15550000126", "c2", 1, 0, 0, 0.2, &o),
           "max 1, 0.2 s lease");
    is_int(SLOT_CAMPAIGN_FULL, take_in(rs, "e2", "+15550000127", "c2", 1, 0, 0, 30, &o),
           "full while the lease runs");
    run_for(0.3);
    is_int(SLOT_OK, take_in(rs, "e2", "+15550000127", "c2", 1, 0, 0, 30, &o),
           "after its expiry: taken");

    /* a rebuild from PostgreSQL restores the campaign's count */
    admin_int("FLUSHALL");
    is_int(1, rebuild(rs, e, 2), "rebuild with a campaign call");
    ok(admin_int("SISMEMBER t:camp:c3 k1:1") == 1, "its token is back in the campaign set");
    is_int(SLOT_CAMPAIGN_FULL, take_in(rs, "n1", "+15550000133", "c3", 1, 0, 0, 30, &o),
           "the rebuilt call holds the campaign's only slot");
    is_int(1, release(rs, "k1", 1, "+15550000131"), "it ends");
    is_int(SLOT_OK, take_in(rs, "n1", "+15550000133", "c3", 1, 0, 0, 30, &o), "then taken");

    struct slot_ask bad = { .call_id = "b",
                            .attempt = 1,
                            .phone = "+1555",
                            .max_slots = 5,
                            .lease_s = 30,
                            .campaign_max = 2 };
    is_int(-1, redis_slots_take(rs, &bad, on_grant, NULL), "a campaign cap without an id refused");
}

/* Redis's clock, ms. */
static long long redis_now_ms(void)
{
    redisReply *r = redisCommand(admin, "TIME");
    long long ms = 0;

    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        ms = atoll(r->element[0]->str) * 1000 + atoll(r->element[1]->str) / 1000;
    freeReplyObject(r);
    return ms;
}

static void test_pacing(struct redis_slots *rs)
{
    struct outcome o;
    long long t0, first;

    reset_state(rs);
    t0 = redis_now_ms();
    is_int(SLOT_OK, take_in(rs, "p1", "+15550000141", NULL, 0, 0, 2, 30, &o), "2/s: 1st start");
    is_int(SLOT_OK, take_in(rs, "p2", "+15550000142", NULL, 0, 0, 2, 30, &o), "2nd start");
    first = atoll(admin_str("ZSCORE t:rate p1:1"));
    ok(first >= t0, "logged on Redis's clock (%lld >= %lld)", first, t0);
    is_int(1, release(rs, "p1", 1, "+15550000141"), "a call ends at once ...");
    is_int(SLOT_PACED, take_in(rs, "p3", "+15550000143", NULL, 0, 0, 2, 30, &o),
           "... the 3rd start within the second: SLOT_PACED (starts, not slots, count)");
    ok(o.token == first + 1000 + SLOT_PACE_GUARD_MS,
       "free_at_ms = the oldest start + window (%lld)", o.token - first);
    ok(admin_int("ZCARD t:slots") == 1 && admin_int("EXISTS t:phone:+15550000143") == 0,
       "nothing taken for it");
    is_int(SLOT_OK, take_in(rs, "p2", "+15550000142", NULL, 0, 0, 2, 30, &o),
           "a token already started is not paced again");
    long long pttl = admin_int("PTTL t:rate");
    ok(pttl > 0 && pttl <= 1000 + SLOT_PACE_GUARD_MS, "the log expires a window later (%lld)",
       pttl);
    run_for((first + 1000 + SLOT_PACE_GUARD_MS - redis_now_ms()) / 1000.0 + 0.02);
    is_int(SLOT_OK, take_in(rs, "p3", "+15550000143", NULL, 0, 0, 2, 30, &o),
           "once the oldest start left the window: taken");

    /* a campaign's rate, inside an unpaced global */
    reset_state(rs);
    is_int(SLOT_OK, take_in(rs, "q1", "+15550000151", "k", 0, 1, 0, 30, &o), "campaign 1/s: 1st");
    is_int(SLOT_PACED, take_in(rs, "q2", "+15550000152", "k", 0, 1, 0, 30, &o), "2nd: paced");
    is_int(SLOT_OK, take_in(rs, "q3", "+15550000153", "j", 0, 1, 0, 30, &o),
           "another campaign's own window");
    is_int(SLOT_OK, take_in(rs, "q4", "+15550000154", NULL, 0, 0, 0, 30, &o),
           "a call without a campaign: unpaced");
    ok(admin_int("EXISTS t:rate") == 0, "no global log when unpaced");

    /* below one a second: one start per 1/rate s */
    is_int(SLOT_OK, take_in(rs, "h1", "+15550000161", "h", 0, 0.5, 0, 30, &o), "0.5/s: 1st");
    first = atoll(admin_str("ZSCORE t:rate:camp:h h1:1"));
    is_int(SLOT_PACED, take_in(rs, "h2", "+15550000162", "h", 0, 0.5, 0, 30, &o), "2nd: paced");
    ok(o.token == first + 2000 + SLOT_PACE_GUARD_MS, "for 2 s (%lld)", o.token - first);
}

static void on_usage(void *arg, int in_use, long long paused_ms, const char *err)
{
    struct outcome *o = arg;

    keep_err(o, err);
    o->in_use = in_use;
    o->token = paused_ms;
}

static void test_provider_pause(struct redis_slots *rs)
{
    struct outcome o;
    long long t0;

    reset_state(rs);
    is_int(SLOT_OK, take_in(rs, "z1", "+15550000171", NULL, 0, 0, 0, 30, &o), "a call before");
    t0 = redis_now_ms();
    is_int(1, finish(redis_slots_pause(rs, 0.5, on_done, &o), &o), "429: pause 0.5 s");
    memset(&o, 0, sizeof(o));
    is_int(0, finish(redis_slots_pause(rs, 0.1, on_done, &o), &o), "a shorter pause is ignored");
    ok(admin_int("PTTL t:pause") > 300, "the longer one runs on");
    memset(&o, 0, sizeof(o));
    finish(redis_slots_usage(rs, on_usage, &o), &o);
    ok(o.in_use == 1 && o.token > 300 && o.token <= 500,
       "usage: 1 slot in use, %lld ms of the pause left", o.token);
    is_int(SLOT_PROVIDER_PAUSED, take_in(rs, "z2", "+15550000172", NULL, 0, 0, 0, 30, &o),
           "a new start: SLOT_PROVIDER_PAUSED");
    ok(o.token >= t0 + 400 && o.token <= t0 + 600, "until the pause ends (%lld ms)", o.token - t0);
    ok(admin_int("EXISTS t:phone:+15550000172") == 0, "nothing taken");
    is_int(SLOT_OK, take_in(rs, "z1", "+15550000171", NULL, 0, 0, 0, 30, &o),
           "the token that holds its slot re-acquires");
    run_for(0.6);
    is_int(SLOT_OK, take_in(rs, "z2", "+15550000172", NULL, 0, 0, 0, 30, &o), "after it: taken");
    memset(&o, 0, sizeof(o));
    finish(redis_slots_usage(rs, on_usage, &o), &o);
    ok(o.in_use == 2 && o.token == 0 && o.err[0] == '\0', "usage: no pause left");
    is_int(-1, redis_slots_pause(rs, 0, on_done, &o), "a pause of 0 refused");
}

static int ctl(const char *what)
{
    char line[64];

    printf("# redisctl %s\n", what);
    fflush(stdout);
    return fgets(line, sizeof(line), stdin) != NULL ? 0 : -1;
}

static void test_restart(void)
{
    struct redis_slots *rs = make("127.0.0.1", port, "", 0, 5);
    struct outcome o;

    ok(run_until(is_up, rs, 10), "up before the restart");
    reset_state(rs);
    is_int(SLOT_OK, acquire(rs, "p1", 1, "+15550000081", 5, 30, &o), "a slot before");
    if (ctl("stop") != 0)
        bail("lost the harness");
    ok(run_until(is_down, rs, 10), "Redis stopped: DOWN");
    is_int(-1, redis_slots_acquire(rs, "p2", 1, "+15550000082", 5, 30, on_acquire, &o),
           "refused while down");
    if (ctl("start") != 0)
        bail("lost the harness");
    ok(run_until(is_up, rs, 10), "reconnected after Redis came back");
    admin_connect(port);
    is_int(SLOT_NEEDS_REBUILD, acquire(rs, "p2", 1, "+15550000082", 5, 30, &o),
           "the empty Redis wants a rebuild");
    is_int(1, rebuild(rs, NULL, 0), "rebuild");
    is_int(SLOT_OK, acquire(rs, "p2", 1, "+15550000082", 5, 30, &o), "then acquires work");
    redis_slots_free(rs);
}

int main(void)
{
    const char *p = getenv("CALLORCH_TEST_REDIS_PORT");
    const char *ctlmode = getenv("CALLORCH_TEST_REDIS_CTL");
    struct redis_slots *rs;

    if (p == NULL || atoi(p) <= 0) {
        printf("1..0 # SKIP no CALLORCH_TEST_REDIS_PORT\n");
        return 0;
    }
    port = atoi(p);
    co_log_set_level(getenv("TEST_VERBOSE") ? CO_LOG_DEBUG : CO_LOG_ERROR);
    loop = ev_default_loop(0);
    admin_connect(port);

    test_queue_while_connecting();
    rs = make("127.0.0.1", port, "", 0, 5);
    ok(run_until(is_up, rs, 10), "up: %s", redis_slots_error(rs));
    test_fresh_redis(rs);
    test_cap_and_locks(rs);
    test_extend(rs);
    test_expiry(rs);
    test_rebuild(rs);
    test_leader(rs);
    test_concurrency(rs);
    test_frequency(rs);
    test_frequency_race(rs);
    test_recount(rs);
    test_campaign(rs);
    test_pacing(rs);
    test_provider_pause(rs);
    test_noscript(rs);
    test_invalid(rs);
    redis_slots_free(rs);

    test_auth_and_db();
    test_host_name();
    test_unreachable();
    test_timeouts();
    test_connection_killed();
    test_max_pending();
    test_free_pending();
    if (ctlmode != NULL && strcmp(ctlmode, "stdio") == 0)
        test_restart();
    else
        diag("nobody to stop and start Redis: restart case not run");
    is_int(0, cb_inside_submit, "no callback ever ran inside a request function");
    redisFree(admin);
    ev_loop_destroy(loop);
    return done_testing();
}
