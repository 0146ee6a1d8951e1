/*
 * timeutil.h — durations between the config's seconds and other units.
 *
 * Owns: the one conversion of seconds (double, as the config holds them) to
 * whole milliseconds, as the SQL functions and statements take them.
 */
#ifndef CO_TIMEUTIL_H
#define CO_TIMEUTIL_H

/* SECONDS as milliseconds, rounded to the nearest. */
static inline long long co_ms(double seconds)
{
    return (long long)(seconds * 1000.0 + 0.5);
}

#endif
