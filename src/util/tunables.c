/*
 * tunables.c — co_tunables with the production values (see tunables.h).
 */
#include "util/tunables.h"

struct co_tunables co_tunables = {
    .republish_grace = 10.0,
    .respawn_min = 0.1,
    .respawn_max = 30.0,
    .respawn_stable = 10.0,
    .lease_margin = 60.0,
    .pg_queue_timeout = 5.0,
    .pg_backoff_max = 5.0,
    .redis_backoff_max = 5.0,
};
