/*
 * child.c — the common runtime of every child process (see child.h).
 */
#include "child/child.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "util/log.h"
#include "util/proctitle.h"

static const char *const kind_names[CHILD_KIND_MAX] = { "http", "kafka", "sched", "events" };

/* A child serves until SIGTERM, then drains (its ops->stop) until it is done. */
enum child_phase { CHILD_SERVING, CHILD_DRAINING };

struct child_rt {
    struct child_ctx *ctx;
    const struct child_ops *ops;
    void *state;
    enum child_phase phase;
    ev_signal sig_term, sig_int, sig_usr1, sig_hup;
};

const char *child_kind_name(enum child_kind kind)
{
    return kind >= 0 && kind < CHILD_KIND_MAX ? kind_names[kind] : "?";
}

static void on_term(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct child_rt *rt = w->data;
    if (rt->phase == CHILD_DRAINING)
        return;
    rt->phase = CHILD_DRAINING;
    co_info("graceful stop", "kind=%s slot=%d", child_kind_name(rt->ctx->kind), rt->ctx->slot);
    rt->ops->stop(rt->state, rt->ctx);
}

static void on_int(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct child_rt *rt = w->data;
    co_info("fast stop", "kind=%s slot=%d", child_kind_name(rt->ctx->kind), rt->ctx->slot);
    ev_break(loop, EVBREAK_ALL);
}

static void on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    if (co_log_reopen() < 0)
        co_error("cannot reopen log file", "error=\"%s\"", strerror(errno));
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    /* reload is the master's business: a child is replaced, not reloaded */
}

void child_done(struct child_ctx *ctx)
{
    ev_break(ctx->loop, EVBREAK_ALL);
}

void child_notify_ready(const struct child_ctx *ctx)
{
    pid_t pid = getpid();
    /* a write of at most PIPE_BUF bytes to a pipe is atomic */
    if (ctx->ready_fd >= 0 && write(ctx->ready_fd, &pid, sizeof(pid)) != sizeof(pid))
        co_warn("cannot notify the master", "error=\"%s\"", strerror(errno));
}

/* Undo what the master set up that a child must not inherit. */
static void reset_process_state(void)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* a child must not outlive its master: graceful stop when it dies */
    prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
}

static void watch_signals(struct child_rt *rt, struct ev_loop *loop)
{
    ev_signal_init(&rt->sig_term, on_term, SIGTERM);
    ev_signal_init(&rt->sig_int, on_int, SIGINT);
    ev_signal_init(&rt->sig_usr1, on_usr1, SIGUSR1);
    ev_signal_init(&rt->sig_hup, on_hup, SIGHUP);
    ev_signal *all[] = { &rt->sig_term, &rt->sig_int, &rt->sig_usr1, &rt->sig_hup };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        all[i]->data = rt;
        ev_signal_start(loop, all[i]);
        ev_unref(loop); /* signal watchers alone do not keep the loop alive */
    }
}

static void unwatch_signals(struct child_rt *rt, struct ev_loop *loop)
{
    ev_signal *all[] = { &rt->sig_term, &rt->sig_int, &rt->sig_usr1, &rt->sig_hup };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        ev_ref(loop);
        ev_signal_stop(loop, all[i]);
    }
}

int child_run(struct child_ctx *ctx, const struct child_ops *ops)
{
    struct child_rt rt = { .ctx = ctx, .ops = ops };

    reset_process_state();
    co_log_set_role(child_kind_name(ctx->kind));
    if (ctx->kind == CHILD_SCHED)
        co_proctitle_set("callorchd: scheduler");
    else if (ctx->kind == CHILD_EVENTS)
        co_proctitle_set("callorchd: events");
    else
        co_proctitle_set("callorchd: %s worker %d", child_kind_name(ctx->kind), ctx->slot);
    if (getppid() == 1) /* the master died before PDEATHSIG was armed */
        return 0;

    /* The inherited default loop belongs to the master: its epoll set and
     * signal pipe are shared with it.  Drop it and start a loop of our own. */
    ev_loop_destroy(EV_DEFAULT);
    ctx->loop = ev_default_loop(EVFLAG_AUTO);
    if (ctx->loop == NULL) {
        co_error("cannot create event loop", NULL);
        return CHILD_EXIT_FATAL;
    }
    watch_signals(&rt, ctx->loop);

    int rc = ops->start(ctx, &rt.state);
    if (rc != 0) {
        co_error("child failed to start", "kind=%s slot=%d status=%d", child_kind_name(ctx->kind),
                 ctx->slot, rc);
        unwatch_signals(&rt, ctx->loop);
        return rc;
    }
    co_info("child started", "kind=%s slot=%d generation=%u", child_kind_name(ctx->kind), ctx->slot,
            ctx->generation);
    ev_run(ctx->loop, 0);
    ops->cleanup(rt.state);
    unwatch_signals(&rt, ctx->loop);
    co_info("child exiting", "kind=%s slot=%d", child_kind_name(ctx->kind), ctx->slot);
    return 0;
}
