/*
 * window.c — calling windows in local time (see window.h).
 *
 * The local time of an instant is localtime_r() under TZ=":Zone", but not
 * for every question: a zone's UTC offsets over the next WINDOW_HORIZON
 * and two days are read once (the offset sampled every three hours, each
 * change bisected to its first second) and kept in a table by zone name.
 * After that the wall clock at any instant in that span is gmtime_r() of
 * the instant plus its offset: no TZ switch, no file read.  An entry is
 * rebuilt when a question reaches past its span (about once a day per
 * zone for a scheduler whose "now" moves forward), which is also when a
 * tzdata upgrade on disk takes effect; window_cache_clear() forgets all.
 * An offset that changes and changes back within one three-hour sample
 * would be missed; in the system tzdata from 2000 to 2040 the closest two
 * changes of one zone are more than six days apart.
 *
 * To find the next opening the search walks forward from now: while the
 * offset holds, the wall clock advances second for second, so the next
 * opening is the next wall-clock start on one of the window's days; if the
 * offset changes before that, the walk goes on from the first second of
 * the new offset, with the wall clock as it is after the jump.  That is
 * what puts an opening inside a spring-forward gap at the first second
 * after it.  For several zones the search takes the latest of their next
 * openings until all of them are open at the same second.
 */
#include "compliance/window.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/err.h"

#define ZONEINFO_DIR "/usr/share/zoneinfo"
#define SEARCH_STEPS_MAX 4096  /* a bound on the walk, never reached */
#define ZONE_SAMPLE (3 * 3600) /* offsets sampled this often when caching */
#define ZONE_COVER (WINDOW_HORIZON + 2 * WINDOW_DAY_SECS) /* a cache entry's span */
#define ZONE_SEG_MAX 16                                   /* offsets kept per entry */
#define TIME_MIN (-2208988800LL)                          /* 1900-01-01T00:00:00Z */
#define TIME_MAX 253402300799LL                           /* 9999-12-31T23:59:59Z */
#define ZONE_TABLE_MIN 64 /* first size of the zone table (a power of 2) */

static const char *const day_names[7] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat" };

/* One zone's UTC offsets over [from, to): seg[i].off from seg[i].start
 * (seg[0].start == from) until the next segment's start, or to. */
struct zone {
    char name[WINDOW_ZONE_MAX + 1]; /* "" = an empty slot */
    time_t from, to;
    int nseg; /* 0 = not built */
    struct {
        time_t start;
        long off;
    } seg[ZONE_SEG_MAX];
};

/* The zone TZ is set to now ("" before the first switch), and the zone
 * cache: an open-addressing table of checked names, never more than half
 * full. */
static char tz_current[WINDOW_ZONE_MAX + 1];
static struct zone *zones;
static size_t zones_cap, zones_n;

void window_always(struct window *w)
{
    w->start = 0;
    w->end = WINDOW_DAY_SECS;
    w->days = WINDOW_ALL_DAYS;
}

/* "HH:MM" at S (exactly 5 characters) to seconds; MAX_HOUR is 23 or 24
 * (24 only as 24:00).  -1 when malformed. */
static int parse_hhmm(const char *s, int max_hour)
{
    if (!(s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' && s[2] == ':' && s[3] >= '0' &&
          s[3] <= '9' && s[4] >= '0' && s[4] <= '9'))
        return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0');
    int m = (s[3] - '0') * 10 + (s[4] - '0');
    if (m > 59 || h > max_hour || (h == 24 && m != 0))
        return -1;
    return h * 3600 + m * 60;
}

int window_parse_hours(const char *hours, struct window *w, char *err, size_t errlen)
{
    if (hours == NULL || hours[0] == '\0') {
        w->start = 0;
        w->end = WINDOW_DAY_SECS;
        return 0;
    }
    if (strlen(hours) != 11 || hours[5] != '-') {
        co_seterr(err, errlen, "hours \"%.40s\" are not HH:MM-HH:MM (e.g. 08:00-21:00)", hours);
        return -1;
    }
    int start = parse_hhmm(hours, 23);
    if (start < 0) {
        co_seterr(err, errlen,
                  "hours \"%s\": the start \"%.5s\" is not a time of day "
                  "from 00:00 to 23:59",
                  hours, hours);
        return -1;
    }
    int end = parse_hhmm(hours + 6, 24);
    if (end < 0) {
        co_seterr(err, errlen,
                  "hours \"%s\": the end \"%.5s\" is not a time of day "
                  "from 00:00 to 24:00",
                  hours, hours + 6);
        return -1;
    }
    if (end == 0)
        end = WINDOW_DAY_SECS; /* "22:00-00:00": until midnight */
    if (start == end) {
        co_seterr(err, errlen,
                  "hours \"%s\": the start and the end are the same time "
                  "(leave the hours empty for any time of day)",
                  hours);
        return -1;
    }
    w->start = start;
    w->end = end;
    return 0;
}

int window_day_index(const char *name)
{
    for (int d = 0; d < 7; d++)
        if (strlen(name) == 3 && strncasecmp(name, day_names[d], 3) == 0)
            return d;
    return -1;
}

/* The weekday named by the LEN characters at S, or -1. */
static int day_index_n(const char *s, size_t len)
{
    char name[4];
    if (len != 3)
        return -1;
    memcpy(name, s, 3);
    name[3] = '\0';
    return window_day_index(name);
}

int window_parse_days(const char *days, unsigned *out, char *err, size_t errlen)
{
    unsigned set = 0;
    if (days == NULL || days[strspn(days, " \t")] == '\0') {
        co_seterr(err, errlen, "no days given (e.g. mon-fri, mon,wed,fri or mon-sun)");
        return -1;
    }
    const char *p = days;
    for (;;) {
        size_t len = strcspn(p, ",");
        const char *a = p, *z = p + len;
        while (a < z && (*a == ' ' || *a == '\t'))
            a++;
        while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
            z--;
        if (a == z) {
            co_seterr(err, errlen, "days \"%.60s\": an empty item between commas", days);
            return -1;
        }
        const char *dash = memchr(a, '-', (size_t)(z - a));
        const char *b_end = dash ? dash : z;
        int from = day_index_n(a, (size_t)(b_end - a)), to = from;
        if (from < 0) {
            co_seterr(err, errlen,
                      "days \"%.60s\": \"%.*s\" is not a day "
                      "(sun, mon, tue, wed, thu, fri, sat)",
                      days, (int)(b_end - a), a);
            return -1;
        }
        if (dash) {
            to = day_index_n(dash + 1, (size_t)(z - dash - 1));
            if (to < 0) {
                co_seterr(err, errlen,
                          "days \"%.60s\": \"%.*s\" is not a day "
                          "(sun, mon, tue, wed, thu, fri, sat)",
                          days, (int)(z - dash - 1), dash + 1);
                return -1;
            }
        }
        for (int d = from;; d = (d + 1) % 7) { /* a range may wrap: fri-mon */
            set |= 1u << d;
            if (d == to)
                break;
        }
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    *out = set;
    return 0;
}

int window_parse(const char *hours, const char *days, struct window *w, char *err, size_t errlen)
{
    struct window tmp;
    if (window_parse_hours(hours, &tmp, err, errlen) != 0 ||
        window_parse_days(days, &tmp.days, err, errlen) != 0)
        return -1;
    *w = tmp;
    return 0;
}

void window_format(const struct window *w, char *hours, size_t hlen, char *days, size_t dlen)
{
    if (w->start == 0 && w->end == WINDOW_DAY_SECS)
        snprintf(hours, hlen, "%s", "");
    else
        snprintf(hours, hlen, "%02d:%02d-%02d:%02d", w->start / 3600, w->start / 60 % 60,
                 w->end / 3600, w->end / 60 % 60);
    size_t used = 0;
    if (dlen > 0)
        days[0] = '\0';
    for (int i = 0; i < 7; i++) {
        int d = (i + 1) % 7; /* Monday first */
        if (!(w->days & (1u << d)))
            continue;
        int n = snprintf(days + used, dlen > used ? dlen - used : 0, "%s%s", used ? "," : "",
                         day_names[d]);
        if (n > 0)
            used += (size_t)n;
        if (used >= dlen)
            break;
    }
}

/* The characters and shapes a zone name may have, before touching the disk. */
static int zone_name_check(const char *zone, char *err, size_t errlen)
{
    size_t len = zone ? strlen(zone) : 0;
    if (len == 0) {
        co_seterr(err, errlen, "empty time zone name");
        return -1;
    }
    if (len > WINDOW_ZONE_MAX) {
        co_seterr(err, errlen, "time zone name longer than %d characters", WINDOW_ZONE_MAX);
        return -1;
    }
    for (const char *p = zone; *p; p++) {
        if ((*p == '.' && (p == zone || p[-1] == '/')) ||
            !((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '+' || *p == '-' || *p == '/' || *p == '.')) {
            co_seterr(err, errlen,
                      "time zone name with a character other than letters, "
                      "digits and \"_+-/\" (or a part starting with '.')");
            return -1;
        }
    }
    if (zone[0] == '/' || zone[len - 1] == '/' || strstr(zone, "//") != NULL) {
        co_seterr(err, errlen, "time zone \"%s\" is not a zone name (like America/New_York)", zone);
        return -1;
    }
    if (strncmp(zone, "right/", 6) == 0) {
        co_seterr(err, errlen,
                  "time zone \"%s\": the right/ zones count leap seconds, "
                  "use the plain name",
                  zone);
        return -1;
    }
    return 0;
}

int window_zone_valid(const char *zone, char *err, size_t errlen)
{
    if (zone_name_check(zone, err, errlen) != 0)
        return -1;
    const char *dir = getenv("TZDIR");
    if (dir == NULL || dir[0] == '\0')
        dir = ZONEINFO_DIR;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, zone) >= sizeof path) {
        co_seterr(err, errlen, "time zone \"%s\": path too long", zone);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            co_seterr(err, errlen, "unknown time zone \"%s\" (not in the system tzdata)", zone);
        else
            co_seterr(err, errlen, "time zone \"%s\": %s: %s", zone, path, strerror(errno));
        return -1;
    }
    struct stat st;
    char magic[4];
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
             read(fd, magic, sizeof magic) == (ssize_t)sizeof magic &&
             memcmp(magic, "TZif", 4) == 0;
    close(fd);
    if (!ok) {
        co_seterr(err, errlen, "unknown time zone \"%s\" (not a zone file in the system tzdata)",
                  zone);
        return -1;
    }
    return 0;
}

/* Point TZ at ZONE, already checked; setenv + tzset only when it changes. */
static int tz_switch(const char *zone, char *err, size_t errlen)
{
    if (strcmp(zone, tz_current) == 0)
        return 0;
    char val[WINDOW_ZONE_MAX + 2];
    snprintf(val, sizeof val, ":%s", zone);
    if (setenv("TZ", val, 1) != 0) {
        co_seterr(err, errlen, "setenv TZ: %s", strerror(errno));
        tz_current[0] = '\0';
        return -1;
    }
    tzset();
    snprintf(tz_current, sizeof tz_current, "%s", zone);
    return 0;
}

/* The UTC offset at T under the current TZ, in *off; false on failure. */
static bool offset_at(time_t t, long *off)
{
    struct tm lt;
    if (localtime_r(&t, &lt) == NULL)
        return false;
    *off = lt.tm_gmtoff;
    return true;
}

/* Fill Z's segments for [t, t + ZONE_COVER) from the zone's rules: sample
 * the offset every ZONE_SAMPLE seconds, bisect each change to its first
 * second.  A span with more than ZONE_SEG_MAX offsets is cut short (the
 * walk rebuilds from its end). */
static int zone_build(struct zone *z, time_t t, char *err, size_t errlen)
{
    if (tz_switch(z->name, err, errlen) != 0)
        return -1;
    long cur;
    if (!offset_at(t, &cur))
        goto fail;
    z->nseg = 1;
    z->seg[0].start = t;
    z->seg[0].off = cur;
    time_t prev = t, end = t + ZONE_COVER;
    while (prev < end) {
        time_t s = prev + ZONE_SAMPLE < end ? prev + ZONE_SAMPLE : end;
        long o;
        if (!offset_at(s, &o))
            goto fail;
        if (o == cur) {
            prev = s;
            continue;
        }
        time_t lo = prev, hi = s; /* offset(lo) == cur != offset(hi) */
        while (hi - lo > 1) {
            time_t mid = lo + (hi - lo) / 2;
            if (!offset_at(mid, &o))
                goto fail;
            if (o == cur)
                lo = mid;
            else
                hi = mid;
        }
        if (z->nseg == ZONE_SEG_MAX) {
            end = hi;
            break;
        }
        if (!offset_at(hi, &cur))
            goto fail;
        z->seg[z->nseg].start = hi;
        z->seg[z->nseg].off = cur;
        z->nseg++;
        prev = hi;
    }
    z->from = t;
    z->to = end;
    return 0;
fail:
    z->nseg = 0;
    z->from = z->to = 0;
    co_seterr(err, errlen, "time zone \"%s\": localtime_r failed", z->name);
    return -1;
}

static uint64_t zone_hash(const char *name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

/* The slot for NAME in the table (its entry, or the empty slot for it). */
static struct zone *zone_slot(struct zone *tab, size_t cap, const char *name)
{
    size_t i = (size_t)zone_hash(name) & (cap - 1);
    while (tab[i].name[0] != '\0' && strcmp(tab[i].name, name) != 0)
        i = (i + 1) & (cap - 1);
    return &tab[i];
}

/* Double the table (or make the first one). */
static int zone_grow(char *err, size_t errlen)
{
    size_t cap = zones_cap ? zones_cap * 2 : ZONE_TABLE_MIN;
    struct zone *tab = calloc(cap, sizeof *tab);
    if (tab == NULL) {
        co_seterr(err, errlen, "out of memory for the time zone cache");
        return -1;
    }
    for (size_t i = 0; i < zones_cap; i++)
        if (zones[i].name[0] != '\0')
            *zone_slot(tab, cap, zones[i].name) = zones[i];
    free(zones);
    zones = tab;
    zones_cap = cap;
    return 0;
}

/* ZONE's cached offsets, covering [t, until] (built or rebuilt from T when
 * they do not); a new name is checked against the tzdata first.  The
 * pointer is good until the next zone_get(). */
static struct zone *zone_get(const char *zone, time_t t, time_t until, char *err, size_t errlen)
{
    if (zone == NULL || zone[0] == '\0' || strlen(zone) > WINDOW_ZONE_MAX) {
        window_zone_valid(zone, err, errlen);
        return NULL;
    }
    struct zone *z = zones_cap ? zone_slot(zones, zones_cap, zone) : NULL;
    if (z == NULL || z->name[0] == '\0') {
        if (window_zone_valid(zone, err, errlen) != 0)
            return NULL;
        if ((zones_n + 1) * 2 > zones_cap && zone_grow(err, errlen) != 0)
            return NULL;
        z = zone_slot(zones, zones_cap, zone);
        snprintf(z->name, sizeof z->name, "%s", zone);
        z->nseg = 0;
        zones_n++;
    }
    if (z->nseg == 0 || t < z->from || until >= z->to) {
        if (zone_build(z, t, err, errlen) != 0)
            return NULL;
    }
    return z;
}

void window_cache_clear(void)
{
    free(zones);
    zones = NULL;
    zones_cap = zones_n = 0;
    tz_current[0] = '\0';
}

/* The wall clock at T (within Z's cover) in *lt, and the end of the span
 * of T's offset (a change of offset, or the end of the cover). */
static time_t zone_local(const struct zone *z, time_t t, struct tm *lt)
{
    int i = z->nseg - 1;
    while (i > 0 && z->seg[i].start > t)
        i--;
    time_t u = t + z->seg[i].off;
    gmtime_r(&u, lt);
    return i + 1 < z->nseg ? z->seg[i + 1].start : z->to;
}

/* Seconds after local midnight, leap seconds folded into the last second. */
static int sec_of_day(const struct tm *lt)
{
    int s = lt->tm_sec > 59 ? 59 : lt->tm_sec;
    return lt->tm_hour * 3600 + lt->tm_min * 60 + s;
}

/* The rule itself: is W open at wall clock LT? */
static bool open_at(const struct window *w, const struct tm *lt)
{
    int sod = sec_of_day(lt);
    bool today = w->days & (1u << lt->tm_wday);
    bool yesterday = w->days & (1u << ((lt->tm_wday + 6) % 7));
    if (w->start < w->end)
        return today && sod >= w->start && sod < w->end;
    return (today && sod >= w->start) || (yesterday && sod < w->end);
}

/* Wall-clock seconds from LT to the next start on one of W's days (> 0). */
static long secs_to_next_start(const struct window *w, const struct tm *lt)
{
    int sod = sec_of_day(lt);
    for (int k = 0; k <= 7; k++) {
        if (!(w->days & (1u << ((lt->tm_wday + k) % 7))))
            continue;
        long delta = (long)k * WINDOW_DAY_SECS + w->start - sod;
        if (delta > 0)
            return delta;
    }
    return WINDOW_DAY_SECS; /* unreachable while days != 0 */
}

/* In ZONE: the first second at or after T, and not after LIMIT, at which
 * W is open.  1 and *at, 0 (none), -1 (zone invalid, tzdata unreadable). */
static int next_open_in(const struct window *w, const char *zone, time_t t, time_t limit,
                        time_t *at, char *err, size_t errlen)
{
    const struct zone *z = NULL;
    for (int steps = 0; steps < SEARCH_STEPS_MAX; steps++) {
        if (t > limit)
            return 0;
        if (z == NULL || t >= z->to) {
            z = zone_get(zone, t, limit, err, errlen);
            if (z == NULL)
                return -1;
        }
        struct tm lt;
        time_t span_end = zone_local(z, t, &lt);
        if (open_at(w, &lt)) {
            *at = t;
            return 1;
        }
        /* The offset holds until span_end: the wall clock reaches the next
         * start then, unless the offset changes first. */
        time_t u = t + secs_to_next_start(w, &lt);
        t = u < span_end ? u : span_end;
    }
    co_seterr(err, errlen, "time zone \"%s\": no answer after %d steps", zone, SEARCH_STEPS_MAX);
    return -1;
}

/* NOW within years 1900 to 9999 (so that every instant the search looks
 * at has a calendar date); else -1 with the reason. */
static int time_ok(time_t now, char *err, size_t errlen)
{
    if ((long long)now < TIME_MIN || (long long)now > TIME_MAX - WINDOW_HORIZON - ZONE_COVER) {
        co_seterr(err, errlen, "instant %lld is outside the years 1900 to 9999", (long long)now);
        return -1;
    }
    return 0;
}

int window_is_open(const struct window *w, const char *zone, time_t now, char *err, size_t errlen)
{
    if (time_ok(now, err, errlen) != 0)
        return -1;
    const struct zone *z = zone_get(zone, now, now, err, errlen);
    if (z == NULL)
        return -1;
    struct tm lt;
    zone_local(z, now, &lt);
    return open_at(w, &lt) ? 1 : 0;
}

int window_next_open(const struct window *w, const char *const *zonev, size_t nzones, time_t now,
                     time_t *at, char *err, size_t errlen)
{
    if (nzones == 0) {
        co_seterr(err, errlen, "no time zone to evaluate the window in");
        return -1;
    }
    if (time_ok(now, err, errlen) != 0)
        return -1;
    time_t limit = now + WINDOW_HORIZON, t = now;
    for (int pass = 0; pass < SEARCH_STEPS_MAX; pass++) {
        bool moved = false;
        for (size_t i = 0; i < nzones; i++) {
            time_t u;
            int r = next_open_in(w, zonev[i], t, limit, &u, err, errlen);
            if (r <= 0)
                return r;
            if (u != t) {
                t = u;
                moved = true;
            }
        }
        if (!moved) {
            *at = t;
            return 1;
        }
    }
    co_seterr(err, errlen, "no common opening found after %d passes", SEARCH_STEPS_MAX);
    return -1;
}
