/*
 * tap_ev.h — libev helpers for the C unit tests that drive a loop:
 * run_loop_until() runs LOOP until a condition holds or a deadline passes.
 * Header-only, like tap.h.
 */
#ifndef CO_TAP_EV_H
#define CO_TAP_EV_H

#include <ev.h>

struct tap_wait {
    int (*cond)(void *);
    void *arg;
};

static inline void tap_wait_check(struct ev_loop *l, ev_check *w, int revents)
{
    struct tap_wait *wt = w->data;

    if (wt->cond(wt->arg))
        ev_break(l, EVBREAK_ONE);
}

static inline void tap_wait_deadline(struct ev_loop *l, ev_timer *w, int revents)
{
    ev_break(l, EVBREAK_ONE);
}

static inline void tap_wait_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    /* only here so that the loop wakes up to re-test the condition */
}

/* Run LOOP until COND(ARG) holds or SECONDS pass; returns COND. */
static inline int run_loop_until(struct ev_loop *loop, int (*cond)(void *), void *arg,
                                 double seconds)
{
    struct tap_wait wt = { cond, arg };
    ev_check check;
    ev_timer deadline, tick;

    if (cond(arg))
        return 1;
    ev_check_init(&check, tap_wait_check);
    check.data = &wt;
    ev_timer_init(&deadline, tap_wait_deadline, seconds, 0.);
    ev_timer_init(&tick, tap_wait_tick, 0.01, 0.01);
    ev_check_start(loop, &check);
    ev_timer_start(loop, &deadline);
    ev_timer_start(loop, &tick);
    ev_run(loop, 0);
    ev_check_stop(loop, &check);
    ev_timer_stop(loop, &deadline);
    ev_timer_stop(loop, &tick);
    return cond(arg);
}

#endif
