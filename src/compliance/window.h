/*
 * window.h — calling windows in the recipient's local time (DESIGN.md
 * section 9): parsing "08:00-21:00" and "mon-fri", checking an IANA zone
 * name against the system tzdata, and answering "is the window open now in
 * this zone" and "when, at or after now, is it next open in all these
 * zones at once" to the second.
 *
 * Owns: struct window, its parsers and formatter, and the process's TZ
 * environment variable, and a per-process cache of each zone's UTC
 * offsets over the next days.  Local time comes from the system tzdata
 * through glibc (TZ=":Zone", tzset(), localtime_r()), so DST and rule
 * changes (Mexico 2022, ...) are whatever /usr/share/zoneinfo says; no ICU.
 * A zone is checked and its offsets read once, then answers come from the
 * cache without switching TZ (window.c says how), so a scheduler can ask
 * about many calls in many zones cheaply.  The rest of callorch keeps to
 * UTC (gmtime_r), so the TZ switching is invisible to it; not for threads
 * (setenv, and the cache is unlocked).
 * Leaves to its callers which window and which zones apply to a call
 * (config, the call's fields, compliance/tzprefix.h) and what to do with a
 * number without zones.
 *
 * Semantics.  A window is open at an instant when the recipient's wall
 * clock then reads a time of day in [start, end) on one of the window's
 * days.  A window whose end is before its start crosses midnight
 * (22:00-06:00): the part after midnight belongs to the day it started,
 * so "fri 22:00-06:00" is open from Friday 22:00 to Saturday 06:00 and a
 * mon-fri night window is open on Saturday morning but not on Monday
 * morning.  Empty hours mean the whole day, on the window's days.
 * Wall-clock rules across DST: on a spring-forward day a start time inside
 * the gap (02:30 in New York) opens at the first instant after the gap
 * (03:00 EDT); on a fall-back day a start time that occurs twice opens at
 * its first occurrence; and since only the wall clock counts, a window
 * that ends inside the repeated hour opens again when the clock goes back
 * into it.
 *
 * Functions returning int give 0 (or 1/0 for a yes/no) and -1 with the
 * reason in (err, errlen) (util/err.h); nothing exits.  Instants are unix
 * seconds from the years 1900 to 9999.
 */
#ifndef CO_WINDOW_H
#define CO_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define WINDOW_DAY_SECS 86400
#define WINDOW_ALL_DAYS 0x7fu                /* bit d = weekday d, 0 = Sunday (tm_wday) */
#define WINDOW_HORIZON (8 * WINDOW_DAY_SECS) /* window_next_open() looks this far */
#define WINDOW_ZONE_MAX 255                  /* longest zone name accepted */

struct window {
    int start;     /* seconds after local midnight, 0 .. 86340 */
    int end;       /* 60 .. 86400; < start: crosses midnight */
    unsigned days; /* WINDOW_ALL_DAYS bits; never 0 */
};

/* A window open all day, every day (what empty hours and mon-sun give). */
void window_always(struct window *w);

/* Parse HOURS ("08:00-21:00"; "24:00" allowed as an end; NULL or "" = the
 * whole day) into w->start and w->end.  0, or -1 saying what is wrong. */
int window_parse_hours(const char *hours, struct window *w, char *err, size_t errlen);

/* Parse DAYS ("mon-fri", "mon,wed,fri", "sat-sun,wed", "fri-mon" wraps;
 * names are the first three letters, any case) into *days.  0, or -1. */
int window_parse_days(const char *days, unsigned *out, char *err, size_t errlen);

/* One day name ("mon") to its weekday (1), or -1 (for JSON arrays). */
int window_day_index(const char *name);

/* Both at once: a whole window from config or a call's fields. */
int window_parse(const char *hours, const char *days, struct window *w, char *err, size_t errlen);

/* Write "08:00-21:00" ("" for the whole day) and "mon,tue,..." into the
 * caller's buffers (16 and 28 bytes are always enough). */
void window_format(const struct window *w, char *hours, size_t hlen, char *days, size_t dlen);

/* Check ZONE ("America/New_York") against the system tzdata: a plain name
 * (no "..", no leading '/', letters, digits and "_+-/") naming a TZif file
 * under $TZDIR or /usr/share/zoneinfo.  0, or -1 naming the problem. */
int window_zone_valid(const char *zone, char *err, size_t errlen);

/* 1 when W is open at NOW in ZONE, 0 when closed, -1 (zone invalid). */
int window_is_open(const struct window *w, const char *zone, time_t now, char *err, size_t errlen);

/* The first instant at or after NOW, to the second, at which W is open in
 * every one of the NZONES zones at once.  1 and *at; 0 when there is none
 * before NOW + WINDOW_HORIZON (never); -1 when a zone is invalid or NZONES
 * is 0. */
int window_next_open(const struct window *w, const char *const *zones, size_t nzones, time_t now,
                     time_t *at, char *err, size_t errlen);

/* Forget every cached zone (after a tzdata upgrade, after setting TZ
 * yourself, at exit for valgrind).  The next question about a zone checks
 * its name and reads its offsets again. */
void window_cache_clear(void);

#endif
