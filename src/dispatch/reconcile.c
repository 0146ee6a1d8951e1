/*
 * reconcile.c — one pass of the reconcile (reconcile.h).
 *
 * Owns: the steps of a pass, the copies of each batch between its Redis
 * read, its PostgreSQL read and its Redis write, and the pass's schedule.
 *
 *   epoch marker ─ none (rebuild pending) → end; the tick rebuilds first
 *   └ leases:  ZSCAN page → which tokens own no IN_PROGRESS row (PG)
 *              → drop those (Lua, fenced) → next page … cursor 0
 *     └ phone locks: SCAN page → the same → next page … cursor 0
 *       └ restore: IN_PROGRESS page by id (PG) → add missing leases and
 *                  locks (Lua, fenced) → next page … short page
 *         └ end: next pass in reconcile_interval
 *
 * Every write is one Lua script, so Redis sees it at once and no acquire
 * runs in the middle of it; between the reads and that write, others go
 * on acquiring and releasing.  Why that cannot start a call over the cap:
 *
 *   dispatch job J                 reconcile                    Redis
 *   acquire: lease T (t0) ──────────────────────────────────▶ T in slots
 *                                  scan sees T
 *                                  PG: T owns no IN_PROGRESS row
 *   UPDATE … IN_PROGRESS (commit t1)
 *                                  drop T? only if t0 < now - MIN_AGE
 *
 *  - drop: a token seen in Redis but not IN_PROGRESS in PostgreSQL may be
 *    a job between its acquire (t0) and its IN_PROGRESS commit (t1).  The
 *    script drops a token only when it still holds the same value and was
 *    taken more than RECONCILE_MIN_AGE before the script runs (inferred
 *    from its expiry: expiry - lease), longer than t1 - t0 can be (the
 *    pool's queue and query timeouts).  A token taken after the scan is
 *    not in the batch at all.  So a lease under which a call may still
 *    start is never dropped; a lost release waits at most MIN_AGE plus
 *    one interval.
 *  - restore: a row read IN_PROGRESS may end (webhook, reclaim) and its
 *    release run before the script; the script then restores a lease no
 *    call uses.  That errs on the safe side (one slot counted too many)
 *    and the next pass drops it.  Restoring never checks the cap: the
 *    calls are in progress at the provider, they count.
 *  - fence: each writing script first checks (a) leader:token still holds
 *    the fencing token of the leadership that read PostgreSQL, so a
 *    scheduler that lost the lease mid-pass writes nothing, and (b) the
 *    epoch marker is the one read at the pass's start and of this Redis
 *    run, so a rebuild, a restart (snapshot) or a fail-over between the
 *    reads and the write voids the write (SLOT_FENCE_*): the pass ends and
 *    the tick rebuilds first.  The acquire refuses while the marker is
 *    not this run's (slots.c), so nothing starts before that rebuild.
 *
 * Bounded: every page is RECONCILE_BATCH entries, one PostgreSQL statement
 * and one short script; the loop serves everything else between them.
 */
#include "dispatch/reconcile.h"

#include <stdlib.h>
#include <string.h>

#include "dispatch/attempt.h"
#include "store/sched.h"
#include "util/log.h"
#include "util/timeutil.h"
#include "util/tunables.h"

enum rc_step { RC_IDLE, RC_EPOCH, RC_LEASES, RC_PHONES, RC_RESTORE };

struct reconcile {
    struct ev_loop *loop;
    const struct co_config *cfg;
    struct pg_pool *pg;
    struct redis_slots *redis;
    enum rc_step step;
    ev_tstamp next_due; /* ev_now() of the next pass */
    struct slot_fence fence;
    char *epoch;     /* fence.epoch's copy */
    char cursor[64]; /* the scan's next page */
    char after[40];  /* the restore's keyset position */
    /* the scan page held between its reads and its write */
    struct store_rc_token *page;
    int n_page;
    int dropped, restored; /* this pass */
};

static void pass_end(struct reconcile *rc, const char *why, const char *err);
static void scan_next(struct reconcile *rc);
static void restore_next(struct reconcile *rc);

static void page_clear(struct reconcile *rc)
{
    for (int i = 0; i < rc->n_page; i++) {
        free((char *)rc->page[i].token);
        free((char *)rc->page[i].phone);
    }
    free(rc->page);
    rc->page = NULL;
    rc->n_page = 0;
}

static double lease_s(const struct reconcile *rc)
{
    return rc->cfg->call_timeout + co_tunables.lease_margin;
}

/* A write's answer: go on, or end the pass (error or fence). */
static int write_failed(struct reconcile *rc, int value, const char *err, const char *what)
{
    if (err != NULL) {
        pass_end(rc, what, err);
        return 1;
    }
    if (value == SLOT_FENCE_LEADER || value == SLOT_FENCE_EPOCH) {
        pass_end(rc,
                 value == SLOT_FENCE_LEADER ? "another scheduler leads"
                                            : "Redis rebuilt, restarted or failed over",
                 NULL);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------- restore */

static void restored(void *arg, int n, const char *err)
{
    struct reconcile *rc = arg;
    if (write_failed(rc, n, err, "restoring leases failed"))
        return;
    rc->restored += n;
    if (rc->after[0] == '\0') /* the page was short: done */
        pass_end(rc, NULL, NULL);
    else
        restore_next(rc);
}

static void page_read(void *ctx, const struct store_err *e, const struct store_rc_call *rows, int n)
{
    struct reconcile *rc = ctx;
    if (e != NULL) {
        pass_end(rc, "reading IN_PROGRESS calls failed", e->msg);
        return;
    }
    if (n == 0) {
        pass_end(rc, NULL, NULL);
        return;
    }
    struct slot_entry *ent = calloc((size_t)n, sizeof(*ent));
    if (ent == NULL) {
        pass_end(rc, "out of memory", NULL);
        return;
    }
    for (int r = 0; r < n; r++) {
        ent[r].call_id = rows[r].slot_owner;
        ent[r].attempt = rows[r].attempt;
        ent[r].phone = rows[r].to;
        ent[r].lease_s = rows[r].lease_s;
        ent[r].campaign_id = rows[r].campaign_id;
    }
    /* a full page: more may follow after its last id; else this is the last */
    if (n == RECONCILE_BATCH)
        snprintf(rc->after, sizeof(rc->after), "%s", rows[n - 1].id);
    else
        rc->after[0] = '\0';
    /* the command copies the entries at once (ROWS die with this callback) */
    if (redis_slots_restore(rc->redis, &rc->fence, ent, n, restored, rc) < 0)
        pass_end(rc, "restoring leases refused", redis_slots_error(rc->redis));
    free(ent);
}

static void restore_next(struct reconcile *rc)
{
    if (store_rc_in_progress_page(rc->pg, rc->after, RECONCILE_BATCH, co_ms(lease_s(rc)), page_read,
                                  rc) < 0)
        pass_end(rc, "reading IN_PROGRESS calls refused", pg_pool_error(rc->pg));
}

/* ---------------------------------------------------------------- drop */

static void dropped(void *arg, int n, const char *err)
{
    struct reconcile *rc = arg;
    page_clear(rc);
    if (write_failed(rc, n, err, "dropping stray leases failed"))
        return;
    rc->dropped += n;
    scan_next(rc);
}

static void strays_found(void *ctx, const struct store_err *e, const int *strays, int n)
{
    struct reconcile *rc = ctx;
    if (e != NULL) {
        page_clear(rc);
        pass_end(rc, "checking leases against PostgreSQL failed", e->msg);
        return;
    }
    if (n == 0) {
        page_clear(rc);
        scan_next(rc);
        return;
    }
    struct slot_seen *drop = calloc((size_t)n, sizeof(*drop));
    if (drop == NULL) {
        page_clear(rc);
        pass_end(rc, "out of memory", NULL);
        return;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (strays[i] < 0 || strays[i] >= rc->n_page)
            continue;
        drop[k].token = rc->page[strays[i]].token;
        drop[k].phone = rc->page[strays[i]].phone;
        k++;
    }
    if (redis_slots_drop(rc->redis, &rc->fence, drop, k, RECONCILE_MIN_AGE, lease_s(rc), dropped,
                         rc) < 0) {
        page_clear(rc);
        pass_end(rc, "dropping stray leases refused", redis_slots_error(rc->redis));
    }
    free(drop);
}

/* ---------------------------------------------------------------- scan */

static void scanned(void *arg, const char *cursor, const struct slot_seen *seen, int n,
                    const char *err)
{
    struct reconcile *rc = arg;
    if (err != NULL) {
        pass_end(rc, "scanning Redis failed", err);
        return;
    }
    snprintf(rc->cursor, sizeof(rc->cursor), "%s", cursor);
    if (n == 0) {
        scan_next(rc);
        return;
    }
    if ((rc->page = calloc((size_t)n, sizeof(*rc->page))) == NULL) {
        pass_end(rc, "out of memory", NULL);
        return;
    }
    for (int i = 0; i < n; i++) {
        rc->page[i].token = strdup(seen[i].token);
        rc->page[i].phone = seen[i].phone != NULL ? strdup(seen[i].phone) : NULL;
        rc->n_page++;
        if (rc->page[i].token == NULL || (seen[i].phone != NULL && rc->page[i].phone == NULL)) {
            page_clear(rc);
            pass_end(rc, "out of memory", NULL);
            return;
        }
    }
    if (store_rc_strays(rc->pg, rc->page, rc->n_page, strays_found, rc) < 0) {
        page_clear(rc);
        pass_end(rc, "checking leases against PostgreSQL refused", pg_pool_error(rc->pg));
    }
}

/* The next page of the step's scan; at cursor 0 the next step. */
static void scan_next(struct reconcile *rc)
{
    if (strcmp(rc->cursor, "0") == 0) {
        if (rc->step == RC_LEASES) {
            rc->step = RC_PHONES;
        } else {
            rc->step = RC_RESTORE;
            rc->after[0] = '\0';
            restore_next(rc);
            return;
        }
    } else if (rc->cursor[0] == '\0') {
        snprintf(rc->cursor, sizeof(rc->cursor), "0"); /* the step's first page */
    }
    enum slot_scan_what what = rc->step == RC_LEASES ? SLOT_SCAN_LEASES : SLOT_SCAN_PHONES;
    const char *from = rc->cursor;
    if (redis_slots_scan(rc->redis, what, from, RECONCILE_BATCH, scanned, rc) < 0)
        pass_end(rc, "scanning Redis refused", redis_slots_error(rc->redis));
    /* the cursor "0" of the first page is not the end: mark it started */
    rc->cursor[0] = '\0';
}

/* --------------------------------------------------------------- epoch */

static void epoch_read(void *arg, const char *epoch, const char *err)
{
    struct reconcile *rc = arg;
    if (err != NULL) {
        pass_end(rc, "reading the epoch marker failed", err);
        return;
    }
    if (epoch == NULL) {
        /* no marker of this run: the tick rebuilds before anything else;
         * the next pass comes after it */
        co_debug("reconcile pass skipped: a rebuild is pending", NULL);
        rc->step = RC_IDLE;
        return;
    }
    free(rc->epoch);
    if ((rc->epoch = strdup(epoch)) == NULL) {
        pass_end(rc, "out of memory", NULL);
        return;
    }
    rc->fence.epoch = rc->epoch;
    rc->step = RC_LEASES;
    rc->cursor[0] = '\0';
    scan_next(rc);
}

/* ------------------------------------------------------------ the pass */

static void pass_end(struct reconcile *rc, const char *why, const char *err)
{
    if (why != NULL)
        co_warn("reconcile pass ended early", "reason=\"%s\" error=%s", why, CO_LOG_Q(err));
    else if (rc->dropped > 0 || rc->restored > 0)
        co_warn("Redis and PostgreSQL disagreed: reconciled", "dropped=%d restored=%d", rc->dropped,
                rc->restored);
    else
        co_debug("reconcile pass: Redis and PostgreSQL agree", NULL);
    rc->step = RC_IDLE;
    rc->next_due = ev_now(rc->loop) + rc->cfg->reconcile_interval;
}

void reconcile_kick(struct reconcile *rc, long long token)
{
    if (rc->step != RC_IDLE || ev_now(rc->loop) < rc->next_due)
        return;
    rc->step = RC_EPOCH;
    rc->fence.leader_token = token;
    rc->dropped = rc->restored = 0;
    if (redis_slots_epoch(rc->redis, epoch_read, rc) < 0)
        pass_end(rc, "reading the epoch marker refused", redis_slots_error(rc->redis));
}

int reconcile_busy(const struct reconcile *rc)
{
    return rc->step != RC_IDLE;
}

struct reconcile *reconcile_new(struct ev_loop *loop, const struct co_config *cfg,
                                struct pg_pool *pg, struct redis_slots *redis)
{
    struct reconcile *rc = calloc(1, sizeof(*rc));
    if (rc == NULL)
        return NULL;
    rc->loop = loop;
    rc->cfg = cfg;
    rc->pg = pg;
    rc->redis = redis;
    rc->next_due = ev_now(loop); /* the first pass at the first tick */
    return rc;
}

void reconcile_free(struct reconcile *rc)
{
    if (rc == NULL)
        return;
    page_clear(rc);
    free(rc->epoch);
    free(rc);
}
