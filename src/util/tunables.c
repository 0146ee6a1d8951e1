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
};
