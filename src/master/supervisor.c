/*
 * supervisor.c — the master's loop: children, signals, reload, stop.
 *
 * Signals are libev ev_signal watchers on the default loop, so handlers
 * never run arbitrary code; child exits come through one ev_child watcher
 * for any pid.  Each child is a "slot" (kind + index + generation); a slot
 * of the running generation is respawned when its process ends, one of a
 * retired generation is dropped, and killed if it has not left within
 * shutdown_timeout of its retirement.  The control socket (control.c)
 * reaches the master through the ctl_* callbacks at the end.
 */
#include "master/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>

#include "child/child.h"
#include "master/notify.h"
#include "util/config.h"
#include "util/log.h"
#include "util/shm.h"
#include "util/tunables.h"

enum master_state { MASTER_RUNNING, MASTER_STOPPING };

/*
 * A slot's process: spawn() makes it STARTING, its message on the ready
 * pipe READY; when it ends the slot waits in BACKOFF for its respawn, or
 * stays FAILED (it exited with CHILD_EXIT_FATAL) until a reload replaces
 * it.  A slot of an older generation than the master's is retired: its
 * process is never respawned, and the slot goes when the process ends.
 */
enum slot_state { SLOT_BACKOFF, SLOT_FAILED, SLOT_STARTING, SLOT_READY };

struct slot {
    struct supervisor *sup;
    enum child_kind kind;
    int index;
    unsigned generation;
    enum slot_state state;
    pid_t pid; /* 0 in BACKOFF and FAILED */
    ev_tstamp started_at;
    ev_tstamp backoff; /* delay before the next respawn */
    unsigned restarts;
    ev_timer respawn_timer;
    ev_timer retire_timer; /* retired: SIGKILL when it outlives this */
    ev_tstamp retired_at;
};

struct supervisor {
    struct ev_loop *loop;
    struct co_config *cfg;
    struct listen_set listen;
    const char *config_path;
    struct control *ctl; /* the control socket, or NULL */
    ev_tstamp started_at;
    unsigned generation;
    enum master_state state;
    int exit_status;
    bool ready_announced;
    int ready_pipe[2];

    struct slot **slots;
    int n_slots, cap_slots;

    ev_child child_watcher;
    ev_signal sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    ev_io ready_watcher;
    ev_timer kill_timer;
};

_Static_assert(SHM_CHILD_KINDS == CHILD_KIND_MAX, "a restart counter per child kind");

static const struct child_ops *const kind_ops[CHILD_KIND_MAX] = {
    [CHILD_HTTP] = &child_http_ops,
    [CHILD_KAFKA] = &child_kafka_ops,
    [CHILD_SCHED] = &child_sched_ops,
    [CHILD_EVENTS] = &child_events_ops,
};

static void spawn(struct slot *s);
static void on_respawn_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void on_retire_timer(struct ev_loop *loop, ev_timer *w, int revents);

/* Of an older generation than the master's: left by a reload. */
static bool slot_retired(const struct slot *s)
{
    return s->generation != s->sup->generation;
}

/* ------------------------------------------------------------ slot table */

static struct slot *slot_add(struct supervisor *sup, enum child_kind kind, int index)
{
    if (sup->n_slots == sup->cap_slots) {
        int cap = sup->cap_slots ? sup->cap_slots * 2 : 16;
        struct slot **n = realloc(sup->slots, (size_t)cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        sup->slots = n;
        sup->cap_slots = cap;
    }
    struct slot *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->sup = sup;
    s->kind = kind;
    s->index = index;
    s->generation = sup->generation;
    ev_init(&s->respawn_timer, on_respawn_timer);
    s->respawn_timer.data = s;
    ev_init(&s->retire_timer, on_retire_timer);
    s->retire_timer.data = s;
    sup->slots[sup->n_slots++] = s;
    return s;
}

static void slot_remove(struct supervisor *sup, struct slot *s)
{
    ev_timer_stop(sup->loop, &s->respawn_timer);
    ev_timer_stop(sup->loop, &s->retire_timer);
    for (int i = 0; i < sup->n_slots; i++) {
        if (sup->slots[i] == s) {
            sup->slots[i] = sup->slots[--sup->n_slots];
            break;
        }
    }
    free(s);
}

static struct slot *slot_by_pid(struct supervisor *sup, pid_t pid)
{
    for (int i = 0; i < sup->n_slots; i++)
        if (sup->slots[i]->pid == pid)
            return sup->slots[i];
    return NULL;
}

static int count_running(const struct supervisor *sup)
{
    int n = 0;
    for (int i = 0; i < sup->n_slots; i++)
        n += sup->slots[i]->pid > 0;
    return n;
}

/* Create the slots of the current generation from the current config. */
static int add_generation(struct supervisor *sup)
{
    const int counts[CHILD_KIND_MAX] = {
        [CHILD_HTTP] = sup->cfg->workers,
        [CHILD_KAFKA] = sup->cfg->kafka_consumers,
        [CHILD_SCHED] = 1,
        [CHILD_EVENTS] = 1,
    };
    for (int k = 0; k < CHILD_KIND_MAX; k++) {
        for (int i = 0; i < counts[k]; i++) {
            struct slot *s = slot_add(sup, (enum child_kind)k, i);
            if (s == NULL)
                return -1;
            spawn(s);
        }
    }
    return 0;
}

/* ------------------------------------------------------------- status */

static void announce_status(struct supervisor *sup)
{
    int want[CHILD_KIND_MAX] = { 0 }, up[CHILD_KIND_MAX] = { 0 };
    for (int i = 0; i < sup->n_slots; i++) {
        struct slot *s = sup->slots[i];
        if (slot_retired(s))
            continue;
        want[s->kind]++;
        up[s->kind] += s->state == SLOT_READY;
    }
    notify_status("%s%s: http %d/%d, kafka %d/%d, sched %d/%d, events %d/%d ready",
                  sup->state == MASTER_STOPPING ? "stopping" : "running",
                  shm_paused() ? ", dispatch paused" : "", up[CHILD_HTTP], want[CHILD_HTTP],
                  up[CHILD_KAFKA], want[CHILD_KAFKA], up[CHILD_SCHED], want[CHILD_SCHED],
                  up[CHILD_EVENTS], want[CHILD_EVENTS]);
}

/* READY=1 once every child of the running generation said it serves. */
static void check_all_ready(struct supervisor *sup)
{
    if (sup->ready_announced || sup->state != MASTER_RUNNING)
        return;
    for (int i = 0; i < sup->n_slots; i++) {
        struct slot *s = sup->slots[i];
        if (!slot_retired(s) && s->state != SLOT_FAILED && s->state != SLOT_READY)
            return;
    }
    sup->ready_announced = true;
    co_info("all children ready", "generation=%u", sup->generation);
    notify_ready();
    announce_status(sup);
}

/* -------------------------------------------------------------- spawning */

#ifdef CALLORCH_TEST_HOOKS
/* Test-only (compiled into t/callorchd-testhooks, never into callorchd):
 * CALLORCHD_TEST_CRASH=<kind> makes every child of that kind exit at once. */
static int test_crash_requested(enum child_kind kind)
{
    const char *v = getenv("CALLORCHD_TEST_CRASH");
    return v != NULL && strcmp(v, child_kind_name(kind)) == 0;
}
#else
static int test_crash_requested(enum child_kind kind)
{
    return 0;
}
#endif

/*
 * In a new child: detach the master's signal and child watchers.  libev
 * keeps signal watchers process-wide and ev_loop_destroy() leaves them
 * attached, so without this a child's SIGTERM would also run the master's
 * handler on the child's copy of the table (signalling its siblings).
 * Only process-local state is touched: no ev_io_stop on the shared epoll.
 */
static void forget_master_watchers(struct supervisor *sup)
{
    ev_signal *const sigs[] = { &sup->sig_term, &sup->sig_int, &sup->sig_hup, &sup->sig_usr1,
                                &sup->sig_usr2 };
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        ev_signal_stop(sup->loop, sigs[i]);
    ev_child_stop(sup->loop, &sup->child_watcher);
}

/* In the new process: become the child and never return. */
static void become_child(struct slot *s)
{
    struct supervisor *sup = s->sup;
    struct child_ctx ctx = {
        .kind = s->kind,
        .slot = s->index,
        .generation = s->generation,
        .ready_fd = sup->ready_pipe[1],
        .cfg = sup->cfg,
    };
    forget_master_watchers(sup);
    close(sup->ready_pipe[0]);
    control_close_inherited(sup->ctl);
    int fds[CO_MAX_LISTEN * LISTEN_MAX_SLOTS];
    if (s->kind == CHILD_HTTP) {
        ctx.n_listen = listen_keep_worker(&sup->listen, s->index, sup->cfg->workers, fds,
                                          CO_MAX_LISTEN * LISTEN_MAX_SLOTS);
        ctx.listen_fds = fds;
    } else {
        listen_close(&sup->listen);
    }
    if (test_crash_requested(s->kind))
        _exit(1);
    _exit(child_run(&ctx, kind_ops[s->kind]));
}

static void spawn(struct slot *s)
{
    struct supervisor *sup = s->sup;
    pid_t pid = fork();
    if (pid < 0) {
        co_error("fork failed", "kind=%s slot=%d error=\"%s\"", child_kind_name(s->kind), s->index,
                 strerror(errno));
        s->backoff = s->backoff > 0 ? s->backoff : co_tunables.respawn_min;
        ev_timer_set(&s->respawn_timer, s->backoff, 0.);
        ev_timer_start(sup->loop, &s->respawn_timer);
        return;
    }
    if (pid == 0)
        become_child(s);
    s->pid = pid;
    s->state = SLOT_STARTING;
    s->started_at = ev_now(sup->loop);
    co_info("child spawned", "kind=%s slot=%d pid=%d generation=%u", child_kind_name(s->kind),
            s->index, (int)pid, s->generation);
}

static void on_respawn_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct slot *s = w->data;
    if (s->sup->state == MASTER_RUNNING && !slot_retired(s) && s->state == SLOT_BACKOFF)
        spawn(s);
}

/* Next delay: none after a stable run, else double the last one. */
static ev_tstamp next_backoff(const struct slot *s, ev_tstamp lived)
{
    if (lived >= co_tunables.respawn_stable)
        return 0.;
    if (s->backoff <= 0.)
        return co_tunables.respawn_min;
    return s->backoff * 2 > co_tunables.respawn_max ? co_tunables.respawn_max : s->backoff * 2;
}

static void log_exit(const struct slot *s, pid_t pid, int status, ev_tstamp lived)
{
    const char *kind = child_kind_name(s->kind);
    if (WIFSIGNALED(status))
        co_log(slot_retired(s) || s->sup->state == MASTER_STOPPING ? CO_LOG_INFO : CO_LOG_ERROR,
               "child killed by signal",
               "kind=%s slot=%d pid=%d signal=%d signame=%s core=%s uptime=%.1fs", kind, s->index,
               (int)pid, WTERMSIG(status), strsignal(WTERMSIG(status)),
               WCOREDUMP(status) ? "yes" : "no", lived);
    else
        co_log(WEXITSTATUS(status) == 0 ? CO_LOG_INFO : CO_LOG_ERROR, "child exited",
               "kind=%s slot=%d pid=%d status=%d uptime=%.1fs", kind, s->index, (int)pid,
               WEXITSTATUS(status), lived);
}

static void maybe_finish_stop(struct supervisor *sup)
{
    if (sup->state == MASTER_STOPPING && count_running(sup) == 0) {
        co_info("all children gone; master exiting", "status=%d", sup->exit_status);
        ev_break(sup->loop, EVBREAK_ALL);
    }
}

static void on_child_exit(struct ev_loop *loop, ev_child *w, int revents)
{
    struct supervisor *sup = w->data;
    struct slot *s = slot_by_pid(sup, w->rpid);
    if (s == NULL)
        return;
    ev_tstamp lived = ev_now(loop) - s->started_at;
    log_exit(s, w->rpid, w->rstatus, lived);
    s->pid = 0;
    s->state = SLOT_BACKOFF;
    if (slot_retired(s) || sup->state == MASTER_STOPPING) {
        slot_remove(sup, s);
        maybe_finish_stop(sup);
        return;
    }
    if (WIFEXITED(w->rstatus) && WEXITSTATUS(w->rstatus) == CHILD_EXIT_FATAL) {
        s->state = SLOT_FAILED;
        co_error("child failed fatally; not respawned (fix the cause, then reload)",
                 "kind=%s slot=%d", child_kind_name(s->kind), s->index);
        announce_status(sup);
        return;
    }
    s->backoff = next_backoff(s, lived);
    s->restarts++;
    if (co_shm != NULL)
        atomic_fetch_add(&co_shm->child_restarts[s->kind], 1);
    co_info("respawning child", "kind=%s slot=%d delay=%.1fs restarts=%u", child_kind_name(s->kind),
            s->index, s->backoff, s->restarts);
    ev_timer_set(&s->respawn_timer, s->backoff, 0.);
    ev_timer_start(loop, &s->respawn_timer);
    announce_status(sup);
}

/* ready pipe: each child writes its pid once it serves */
static void on_ready(struct ev_loop *loop, ev_io *w, int revents)
{
    struct supervisor *sup = w->data;
    pid_t pids[64];
    ssize_t n;
    while ((n = read(sup->ready_pipe[0], pids, sizeof(pids))) > 0) {
        for (size_t i = 0; i < (size_t)n / sizeof(pid_t); i++) {
            struct slot *s = slot_by_pid(sup, pids[i]);
            if (s != NULL && s->state == SLOT_STARTING)
                s->state = SLOT_READY;
        }
    }
    check_all_ready(sup);
    if (sup->ready_announced)
        announce_status(sup);
}

/* ------------------------------------------------------------- stopping */

static void signal_all(struct supervisor *sup, int sig)
{
    for (int i = 0; i < sup->n_slots; i++)
        if (sup->slots[i]->pid > 0)
            kill(sup->slots[i]->pid, sig);
}

static void on_kill_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct supervisor *sup = w->data;
    co_warn("shutdown timeout: killing remaining children", "count=%d", count_running(sup));
    signal_all(sup, SIGKILL);
}

static void begin_stop(struct supervisor *sup, int sig, ev_tstamp timeout)
{
    if (sup->state == MASTER_STOPPING) {
        if (sig == SIGINT) /* a second, impatient request: go fast */
            signal_all(sup, SIGINT);
        return;
    }
    sup->state = MASTER_STOPPING;
    notify_stopping();
    for (int i = 0; i < sup->n_slots; i++)
        ev_timer_stop(sup->loop, &sup->slots[i]->respawn_timer);
    /* drop slots that have no process (waiting for a respawn, or fatal) */
    for (int i = sup->n_slots - 1; i >= 0; i--)
        if (sup->slots[i]->pid == 0)
            slot_remove(sup, sup->slots[i]);
    signal_all(sup, sig);
    ev_timer_set(&sup->kill_timer, timeout, 0.);
    ev_timer_start(sup->loop, &sup->kill_timer);
    announce_status(sup);
    maybe_finish_stop(sup);
}

static void on_sigterm(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct supervisor *sup = w->data;
    co_info("SIGTERM: graceful stop", "timeout=%.1fs", sup->cfg->shutdown_timeout);
    begin_stop(sup, SIGTERM, sup->cfg->shutdown_timeout);
}

static void on_sigint(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct supervisor *sup = w->data;
    co_info("SIGINT: fast stop", NULL);
    /* children leave at once; the timer only catches a stuck one */
    begin_stop(sup, SIGINT, sup->cfg->shutdown_timeout < 5. ? sup->cfg->shutdown_timeout : 5.);
}

/* ------------------------------------------------------------- reloading */

/* Point logging at the new config's target; keep the old one on failure. */
static void apply_log_config(const struct co_config *old, const struct co_config *cfg)
{
    co_log_set_level(cfg->log_level);
    if (strcmp(old->log_target, cfg->log_target) == 0)
        return;
    if (co_log_open(cfg->log_target, cfg->log_level) < 0)
        co_error("cannot open new log target; keeping the old one", "target=%s error=\"%s\"",
                 CO_LOG_Q(cfg->log_target), strerror(errno));
}

/* The listening sockets CFG needs: those of the addresses that stay, new
 * ones for new addresses or workers; 0 or -1 and why in ERR.  The sockets
 * of a removed address close here and in the retiring workers as they
 * leave. */
static int reload_listen(struct supervisor *sup, const struct co_config *cfg, char *err,
                         size_t errlen)
{
    struct listen_set ls;
    if (listen_update(&sup->listen, cfg, &ls, err, errlen) < 0)
        return -1;
    listen_close(&sup->listen);
    sup->listen = ls;
    return 0;
}

/* A key only a restart applies (config.c's table) changed: say so. */
static void warn_restart_only(void *arg, const char *key, const char *running,
                              const char *configured)
{
    co_warn("changed key takes effect at the next restart, not on reload",
            "key=%s running=%s configured=%s", key, CO_LOG_Q(running), CO_LOG_Q(configured));
}

/* A retired child still there shutdown_timeout after its SIGTERM: kill it. */
static void on_retire_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct slot *s = w->data;
    if (s->pid <= 0)
        return;
    co_warn("retired child did not exit within shutdown_timeout: killing it",
            "kind=%s slot=%d pid=%d generation=%u retired_for=%.1fs", child_kind_name(s->kind),
            s->index, (int)s->pid, s->generation, ev_now(loop) - s->retired_at);
    kill(s->pid, SIGKILL); /* its exit comes through on_child_exit, which drops the slot */
}

/*
 * Retire the running generation (the caller then moves the master to the
 * next one): its children finish in-flight work and leave, or are killed
 * once the shutdown_timeout they run under has passed.
 */
static void retire_generation(struct supervisor *sup)
{
    ev_tstamp timeout = sup->cfg->shutdown_timeout;
    for (int i = sup->n_slots - 1; i >= 0; i--) {
        struct slot *s = sup->slots[i];
        if (s->pid > 0) {
            kill(s->pid, SIGTERM);
            s->retired_at = ev_now(sup->loop);
            ev_timer_set(&s->retire_timer, timeout, 0.);
            ev_timer_start(sup->loop, &s->retire_timer);
        } else {
            slot_remove(sup, s);
        }
    }
}

/* Load the config; if valid, swap it in and start a new generation. */
static int swap_config(struct supervisor *sup, char *err, size_t errlen)
{
    struct co_config *cfg;

    if (sup->state != MASTER_RUNNING) {
        snprintf(err, errlen, "callorchd is stopping");
        return -1;
    }
    if (co_config_load(sup->config_path, &cfg, err, errlen) < 0)
        return -1;
    if (reload_listen(sup, cfg, err, errlen) < 0) {
        co_config_free(cfg);
        return -1;
    }
    notify_reloading();
    apply_log_config(sup->cfg, cfg);
    co_config_restart_changes(sup->cfg, cfg, warn_restart_only, NULL);
    retire_generation(sup);
    co_config_free(sup->cfg);
    sup->cfg = cfg;
    sup->generation++;
    sup->ready_announced = false;
    co_info("configuration reloaded", "file=%s generation=%u", sup->config_path, sup->generation);
    if (add_generation(sup) < 0) {
        snprintf(err, errlen, "configuration loaded, but cannot allocate the child table");
        return -1;
    }
    return 0;
}

/* Reload (SIGHUP, callorchctl reload).  0, or -1 with why in ERR (logged). */
static int reload(struct supervisor *sup, char *err, size_t errlen)
{
    int rc = swap_config(sup, err, errlen);
    if (rc < 0)
        co_error("reload failed; keeping the running configuration", "error=%s", CO_LOG_Q(err));
    return rc;
}

static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct supervisor *sup = w->data;
    char err[1024];
    co_info("SIGHUP: reloading configuration", "file=%s", sup->config_path);
    reload(sup, err, sizeof(err));
}

static void on_sigusr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct supervisor *sup = w->data;
    if (co_log_reopen() < 0)
        co_error("cannot reopen log file", "error=\"%s\"", strerror(errno));
    else
        co_info("SIGUSR1: log file reopened", NULL);
    signal_all(sup, SIGUSR1);
}

static void on_ignored(struct ev_loop *loop, ev_signal *w, int revents)
{
}

/* -------------------------------------------------------- control socket */

static const char *slot_state_name(const struct slot *s)
{
    if (s->state == SLOT_BACKOFF)
        return "backoff";
    if (s->state == SLOT_FAILED)
        return "failed";
    if (slot_retired(s) || s->sup->state == MASTER_STOPPING)
        return "exiting";
    return s->state == SLOT_READY ? "ready" : "starting";
}

/* Order of "status": by kind, slot, then generation. */
static int slot_cmp(const void *a, const void *b)
{
    const struct slot *x = *(struct slot *const *)a, *y = *(struct slot *const *)b;
    if (x->kind != y->kind)
        return (int)x->kind - (int)y->kind;
    if (x->index != y->index)
        return x->index - y->index;
    return (x->generation > y->generation) - (x->generation < y->generation);
}

/* The child table as "status" shows it; -1 when out of memory. */
static int ctl_children(struct supervisor *sup, struct control_status *st)
{
    size_t n = (size_t)sup->n_slots;
    struct slot **sorted = malloc((n ? n : 1) * sizeof(*sorted));
    st->children = calloc(n ? n : 1, sizeof(*st->children));
    if (sorted == NULL || st->children == NULL) {
        free(sorted);
        free(st->children);
        st->children = NULL;
        return -1;
    }
    memcpy(sorted, sup->slots, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), slot_cmp);
    ev_tstamp now = ev_now(sup->loop);
    for (size_t i = 0; i < n; i++) {
        const struct slot *s = sorted[i];
        st->children[i] = (struct control_child){
            .kind = child_kind_name(s->kind),
            .slot = s->index,
            .pid = s->pid,
            .generation = s->generation,
            .uptime = s->pid > 0 ? now - s->started_at : 0.,
            .restarts = s->restarts,
            .ready = s->state == SLOT_READY,
            .state = slot_state_name(s),
        };
    }
    st->n_children = (int)n;
    free(sorted);
    return 0;
}

static int ctl_status(void *arg, struct control_status *st)
{
    struct supervisor *sup = arg;
    st->uptime = ev_now(sup->loop) - sup->started_at;
    st->config_file = sup->config_path;
    st->state = sup->state == MASTER_STOPPING ? "stopping" : "running";
    st->generation = sup->generation;
    st->paused = shm_paused();
    st->slots_in_use = co_shm != NULL ? atomic_load(&co_shm->slots_in_use) : 0;
    st->max_concurrent_calls = sup->cfg->max_concurrent_calls;
    return ctl_children(sup, st);
}

static int ctl_reload(void *arg, unsigned *generation, char *err, size_t errlen)
{
    struct supervisor *sup = arg;
    if (reload(sup, err, errlen) < 0)
        return -1;
    *generation = sup->generation;
    return 0;
}

static void ctl_stop(void *arg)
{
    struct supervisor *sup = arg;
    co_info("graceful stop requested by callorchctl", "timeout=%.1fs", sup->cfg->shutdown_timeout);
    begin_stop(sup, SIGTERM, sup->cfg->shutdown_timeout);
}

/* callorchctl pause/resume: flip the switch every kafka and sched child reads. */
static int ctl_set_paused(void *arg, int paused)
{
    struct supervisor *sup = arg;
    if (co_shm == NULL)
        return -1;
    int was = atomic_exchange(&co_shm->paused, paused);
    if (was != paused && paused)
        co_info("dispatch paused: no new call starts; calls in flight finish", NULL);
    else if (was != paused)
        co_info("dispatch resumed", NULL);
    announce_status(sup);
    return was;
}

static double ctl_shutdown_timeout(void *arg)
{
    const struct supervisor *sup = arg;
    return sup->cfg->shutdown_timeout;
}

static const struct control_ops ctl_ops = {
    .status = ctl_status,
    .reload = ctl_reload,
    .stop = ctl_stop,
    .set_paused = ctl_set_paused,
    .shutdown_timeout = ctl_shutdown_timeout,
};

/* --------------------------------------------------------------- set up */

static void start_signal(struct supervisor *sup, ev_signal *w,
                         void (*cb)(struct ev_loop *, ev_signal *, int), int signum)
{
    ev_signal_init(w, cb, signum);
    w->data = sup;
    ev_signal_start(sup->loop, w);
}

static int setup(struct supervisor *sup)
{
    if (pipe2(sup->ready_pipe, O_CLOEXEC) < 0)
        return -1;
    fcntl(sup->ready_pipe[0], F_SETFL, O_NONBLOCK);
    ev_io_init(&sup->ready_watcher, on_ready, sup->ready_pipe[0], EV_READ);
    sup->ready_watcher.data = sup;
    ev_io_start(sup->loop, &sup->ready_watcher);

    ev_child_init(&sup->child_watcher, on_child_exit, 0, 0);
    sup->child_watcher.data = sup;
    ev_child_start(sup->loop, &sup->child_watcher);

    start_signal(sup, &sup->sig_term, on_sigterm, SIGTERM);
    start_signal(sup, &sup->sig_int, on_sigint, SIGINT);
    start_signal(sup, &sup->sig_hup, on_sighup, SIGHUP);
    start_signal(sup, &sup->sig_usr1, on_sigusr1, SIGUSR1);
    start_signal(sup, &sup->sig_usr2, on_ignored, SIGUSR2);
    signal(SIGPIPE, SIG_IGN);

    ev_init(&sup->kill_timer, on_kill_timer);
    sup->kill_timer.data = sup;
    if (sup->ctl != NULL)
        control_start(sup->ctl, sup->loop, &ctl_ops, sup);
    return 0;
}

static void teardown(struct supervisor *sup)
{
    control_stop(sup->ctl);
    while (sup->n_slots > 0)
        slot_remove(sup, sup->slots[0]);
    free(sup->slots);
    ev_timer_stop(sup->loop, &sup->kill_timer);
    ev_io_stop(sup->loop, &sup->ready_watcher);
    close(sup->ready_pipe[0]);
    close(sup->ready_pipe[1]);
    listen_close(&sup->listen);
    co_config_free(sup->cfg);
}

int supervisor_run(struct co_config *cfg, struct listen_set *ls, struct control *ctl,
                   const char *config_path)
{
    struct supervisor sup = {
        .loop = EV_DEFAULT,
        .cfg = cfg,
        .listen = *ls,
        .config_path = config_path,
        .ctl = ctl,
        .generation = 1,
        .state = MASTER_RUNNING,
    };

    sup.started_at = ev_now(sup.loop);
    if (setup(&sup) < 0) {
        co_error("cannot set up the master", "error=\"%s\"", strerror(errno));
        teardown(&sup);
        return 1;
    }
    if (add_generation(&sup) < 0) {
        co_error("cannot allocate the child table", NULL);
        begin_stop(&sup, SIGTERM, cfg->shutdown_timeout);
        sup.exit_status = 1;
    }
    announce_status(&sup);
    ev_run(sup.loop, 0);
    int status = sup.exit_status;
    teardown(&sup);
    return status;
}
