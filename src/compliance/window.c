/*
 * window.c — calling windows in local time (see window.h).
 *
 * The local time of an instant is localtime_r() under TZ=":Zone".  To find
 * the next opening the search walks forward from now assuming the zone's
 * UTC offset stays what it is: the wall clock then advances second for
 * second, so the next opening is the next wall-clock start on one of the
 * window's days.  Each step is at most a day and is checked: if the offset
 * at the step's end differs, a bisection on tm_gmtoff finds the first
 * second of the new offset (the DST or rule change), and the walk goes on
 * from there with the wall clock as it is after the jump.  That is what
 * puts an opening inside a spring-forward gap at the first second after
 * it.  For several zones the search takes the latest of their next
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
#define CHECKED_MAX 64               /* zone names remembered as valid */
#define SEARCH_STEPS_MAX 4096        /* a bound on the walk, never reached */

static const char *const day_names[7] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat" };

/* The zone TZ is set to now ("" before the first switch), and the names
 * already found valid (round-robin). */
static char tz_current[WINDOW_ZONE_MAX + 1];
static char tz_checked[CHECKED_MAX][WINDOW_ZONE_MAX + 1];
static unsigned tz_checked_next;

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
    if (!(s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' && s[2] == ':' &&
          s[3] >= '0' && s[3] <= '9' && s[4] >= '0' && s[4] <= '9'))
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
        co_seterr(err, errlen, "hours \"%s\": the start \"%.5s\" is not a time of day "
                  "from 00:00 to 23:59", hours, hours);
        return -1;
    }
    int end = parse_hhmm(hours + 6, 24);
    if (end < 0) {
        co_seterr(err, errlen, "hours \"%s\": the end \"%.5s\" is not a time of day "
                  "from 00:00 to 24:00", hours, hours + 6);
        return -1;
    }
    if (end == 0)
        end = WINDOW_DAY_SECS;  /* "22:00-00:00": until midnight */
    if (start == end) {
        co_seterr(err, errlen, "hours \"%s\": the start and the end are the same time "
                  "(leave the hours empty for any time of day)", hours);
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
            co_seterr(err, errlen, "days \"%.60s\": \"%.*s\" is not a day "
                      "(sun, mon, tue, wed, thu, fri, sat)", days, (int)(b_end - a), a);
            return -1;
        }
        if (dash) {
            to = day_index_n(dash + 1, (size_t)(z - dash - 1));
            if (to < 0) {
                co_seterr(err, errlen, "days \"%.60s\": \"%.*s\" is not a day "
                          "(sun, mon, tue, wed, thu, fri, sat)", days, (int)(z - dash - 1), dash + 1);
                return -1;
            }
        }
        for (int d = from;; d = (d + 1) % 7) {  /* a range may wrap: fri-mon */
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
        int d = (i + 1) % 7;  /* Monday first */
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
    if (zone[0] == '/' || zone[len - 1] == '/' || strstr(zone, "//") != NULL) {
        co_seterr(err, errlen, "time zone \"%s\" is not a zone name (like America/New_York)", zone);
        return -1;
    }
    for (const char *p = zone; *p; p++) {
        if ((*p == '.' && (p == zone || p[-1] == '/')) ||
            !((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '+' || *p == '-' || *p == '/' || *p == '.')) {
            co_seterr(err, errlen, "time zone \"%s\" is not a zone name (like America/New_York)",
                      zone);
            return -1;
        }
    }
    if (strncmp(zone, "right/", 6) == 0) {
        co_seterr(err, errlen, "time zone \"%s\": the right/ zones count leap seconds, "
                  "use the plain name", zone);
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
        co_seterr(err, errlen, "unknown time zone \"%s\" (%s: %s)", zone, path,
                  errno == ENOENT ? "not in the system tzdata" : strerror(errno));
        return -1;
    }
    struct stat st;
    char magic[4];
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
             read(fd, magic, sizeof magic) == (ssize_t)sizeof magic &&
             memcmp(magic, "TZif", 4) == 0;
    close(fd);
    if (!ok) {
        co_seterr(err, errlen, "unknown time zone \"%s\" (%s is not a TZif zone file)", zone, path);
        return -1;
    }
    return 0;
}

/* Point TZ at ZONE (checked once per name, switched only when it changes). */
static int tz_use(const char *zone, char *err, size_t errlen)
{
    if (zone == NULL)
        return window_zone_valid(zone, err, errlen);
    if (strcmp(zone, tz_current) == 0)
        return 0;
    bool checked = false;
    for (unsigned i = 0; i < CHECKED_MAX && !checked; i++)
        checked = tz_checked[i][0] != '\0' && strcmp(tz_checked[i], zone) == 0;
    if (!checked) {
        if (window_zone_valid(zone, err, errlen) != 0)
            return -1;
        snprintf(tz_checked[tz_checked_next], sizeof tz_checked[0], "%s", zone);
        tz_checked_next = (tz_checked_next + 1) % CHECKED_MAX;
    }
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

/* The wall clock at T under the current TZ; false if localtime_r fails. */
static bool local_at(time_t t, struct tm *lt)
{
    return localtime_r(&t, lt) != NULL;
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
    return WINDOW_DAY_SECS;  /* unreachable while days != 0 */
}

/* Under the current TZ: the first second at or after T, and not after
 * LIMIT, at which W is open.  1 and *at, 0 (none), -1 (localtime failed). */
static int next_open_here(const struct window *w, time_t t, time_t limit, time_t *at,
                          char *err, size_t errlen)
{
    for (int steps = 0; steps < SEARCH_STEPS_MAX; steps++) {
        if (t > limit)
            return 0;
        struct tm lt, lu;
        if (!local_at(t, &lt))
            goto fail;
        if (open_at(w, &lt)) {
            *at = t;
            return 1;
        }
        long step = secs_to_next_start(w, &lt);
        if (step > WINDOW_DAY_SECS)
            step = WINDOW_DAY_SECS;
        time_t u = t + step;
        if (!local_at(u, &lu))
            goto fail;
        if (lu.tm_gmtoff == lt.tm_gmtoff) {
            t = u;
            continue;
        }
        /* The offset changed in (t, u]: go on from its first second. */
        time_t lo = t, hi = u;
        while (hi - lo > 1) {
            time_t mid = lo + (hi - lo) / 2;
            struct tm lm;
            if (!local_at(mid, &lm))
                goto fail;
            if (lm.tm_gmtoff == lt.tm_gmtoff)
                lo = mid;
            else
                hi = mid;
        }
        t = hi;
    }
    co_seterr(err, errlen, "time zone \"%s\": no answer after %d steps", tz_current,
              SEARCH_STEPS_MAX);
    return -1;
fail:
    co_seterr(err, errlen, "time zone \"%s\": localtime_r failed", tz_current);
    return -1;
}

int window_is_open(const struct window *w, const char *zone, time_t now, char *err, size_t errlen)
{
    struct tm lt;
    if (tz_use(zone, err, errlen) != 0)
        return -1;
    if (!local_at(now, &lt)) {
        co_seterr(err, errlen, "time zone \"%s\": localtime_r failed", zone);
        return -1;
    }
    return open_at(w, &lt) ? 1 : 0;
}

int window_next_open(const struct window *w, const char *const *zones, size_t nzones, time_t now,
                     time_t *at, char *err, size_t errlen)
{
    if (nzones == 0) {
        co_seterr(err, errlen, "no time zone to evaluate the window in");
        return -1;
    }
    time_t limit = now + WINDOW_HORIZON, t = now;
    for (int pass = 0; pass < SEARCH_STEPS_MAX; pass++) {
        bool moved = false;
        for (size_t i = 0; i < nzones; i++) {
            time_t u;
            if (tz_use(zones[i], err, errlen) != 0)
                return -1;
            int r = next_open_here(w, t, limit, &u, err, errlen);
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
