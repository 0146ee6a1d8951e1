/*
 * conn.c — connection health and reconnect backoff (see conn.h).
 */
#include <auto-config.h>

#include "net/conn.h"

#include <time.h>
#include <unistd.h>

bool conn_status_update(struct conn_status *s, bool ready)
{
    enum conn_health now = ready       ? CONN_HEALTH_UP
                           : s->failed ? CONN_HEALTH_DOWN
                                       : CONN_HEALTH_CONNECTING;

    if (now == s->health)
        return false;
    s->health = now;
    return true;
}

void conn_backoff_init(struct conn_backoff *b, double min, double max)
{
    /* Seeded per process and per connection; the multiplication spreads
     * seeds that differ in a few low bits (neighbouring structs). */
    uint32_t seed = (uint32_t)time(NULL) ^ (uint32_t)getpid() << 16 ^ (uint32_t)(uintptr_t)b;

    b->min = min;
    b->max = max;
    b->last = 0;
    b->rnd = seed * 2654435761u;
    if (b->rnd == 0)
        b->rnd = 1;
}

/* Uniform in [0, 1) (xorshift32). */
static double backoff_random(struct conn_backoff *b)
{
    uint32_t x = b->rnd;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b->rnd = x;
    return (double)x / 4294967296.0;
}

double conn_backoff_next(struct conn_backoff *b)
{
    double d = b->last > 0 ? b->last * 2 : b->min;

    if (d > b->max)
        d = b->max;
    b->last = d;
    return d * (0.5 + 0.5 * backoff_random(b));
}

void conn_backoff_reset(struct conn_backoff *b)
{
    b->last = 0;
}
