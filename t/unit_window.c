/*
 * unit_window.c — TAP tests for src/compliance/window.c (calling windows in
 * the recipient's local time) and src/compliance/tzprefix.c (the zones of
 * a number, by longest prefix) and src/compliance/rules.c (which zones and
 * window apply to a call, and the verdict "dial now" or "hold until").
 *
 * Every instant is fixed, in unix seconds computed with
 * `date -u -d '2026-03-08 07:00 UTC' +%s`; the current time is never read.
 * Local time comes from the system tzdata (/usr/share/zoneinfo).  The
 * prefix data is the generated data/tzprefix.tsv of the build tree:
 * $CALLORCH_TZPREFIX, else $CALLORCH_BUILDDIR/data/tzprefix.tsv (set by
 * make check), else data/tzprefix.tsv from the current directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compliance/rules.h"
#include "compliance/tzprefix.h"
#include "compliance/window.h"
#include "tap.h"

#define H(h, m) ((h)*3600 + (m)*60)
#define SUN (1u << 0)
#define MON (1u << 1)
#define WED (1u << 3)
#define FRI (1u << 5)
#define SAT (1u << 6)

static char err[256];

/* W from HOURS and DAYS, or bail (the parsers have their own tests). */
static struct window win(const char *hours, const char *days)
{
    struct window w;
    if (window_parse(hours, days, &w, err, sizeof err) != 0)
        bail("window_parse(%s, %s): %s", hours, days, err);
    return w;
}

/* window_next_open in one zone; -1 for never, -2 for an error. */
static long long next1(const struct window *w, const char *zone, time_t now)
{
    time_t at = 0;
    const char *zones[1] = { zone };
    int r = window_next_open(w, zones, 1, now, &at, err, sizeof err);
    return r == 1 ? (long long)at : r == 0 ? -1 : -2;
}

static long long next_n(const struct window *w, const char *const *zones, size_t n, time_t now)
{
    time_t at = 0;
    int r = window_next_open(w, zones, n, now, &at, err, sizeof err);
    return r == 1 ? (long long)at : r == 0 ? -1 : -2;
}

static int is_open(const struct window *w, const char *zone, time_t now)
{
    return window_is_open(w, zone, now, err, sizeof err);
}

static void test_parse(void)
{
    struct window w;
    unsigned days = 0;

    ok(window_parse_hours("08:00-21:00", &w, err, sizeof err) == 0 && w.start == H(8, 0) &&
           w.end == H(21, 0),
       "08:00-21:00 parses");
    ok(window_parse_hours("", &w, err, sizeof err) == 0 && w.start == 0 && w.end == 86400,
       "empty hours: the whole day");
    ok(window_parse_hours(NULL, &w, err, sizeof err) == 0 && w.start == 0 && w.end == 86400,
       "no hours: the whole day");
    ok(window_parse_hours("22:00-06:00", &w, err, sizeof err) == 0 && w.start == H(22, 0) &&
           w.end == H(6, 0),
       "22:00-06:00 parses (crosses midnight)");
    ok(window_parse_hours("08:30-24:00", &w, err, sizeof err) == 0 && w.end == 86400,
       "24:00 is an end");
    ok(window_parse_hours("20:00-00:00", &w, err, sizeof err) == 0 && w.end == 86400,
       "00:00 as an end means midnight");

    is_int(-1, window_parse_hours("8:00-21:00", &w, err, sizeof err), "8:00-21:00 refused");
    like(err, "\"8:00-21:00\" are not HH:MM-HH:MM", "  and the message says the format");
    is_int(-1, window_parse_hours("25:00-21:00", &w, err, sizeof err), "25:00 refused");
    like(err, "the start \"25:00\" is not a time of day", "  and the message names the start");
    is_int(-1, window_parse_hours("08:60-21:00", &w, err, sizeof err), "08:60 refused");
    like(err, "the start \"08:60\"", "  and the message names the start");
    is_int(-1, window_parse_hours("08:00-24:30", &w, err, sizeof err), "24:30 refused");
    like(err, "the end \"24:30\" is not a time of day", "  and the message names the end");
    is_int(-1, window_parse_hours("24:00-06:00", &w, err, sizeof err), "24:00 is no start");
    like(err, "the start \"24:00\"", "  and the message names the start");
    is_int(-1, window_parse_hours("08:00-08:00", &w, err, sizeof err), "an empty span refused");
    like(err, "the start and the end are the same time", "  and the message says why");
    is_int(-1, window_parse_hours("08:00 21:00", &w, err, sizeof err), "no dash refused");

    ok(window_parse_days("mon-fri", &days, err, sizeof err) == 0 && days == 0x3e, "mon-fri");
    ok(window_parse_days("mon,wed,fri", &days, err, sizeof err) == 0 && days == (MON | WED | FRI),
       "mon,wed,fri");
    ok(window_parse_days("mon-sun", &days, err, sizeof err) == 0 && days == WINDOW_ALL_DAYS,
       "mon-sun is every day");
    ok(window_parse_days("fri-mon", &days, err, sizeof err) == 0 && days == (FRI | SAT | SUN | MON),
       "fri-mon wraps over the weekend");
    ok(window_parse_days(" Sat , sun ", &days, err, sizeof err) == 0 && days == (SAT | SUN),
       "any case, spaces around items");
    is_int(-1, window_parse_days("mon-fxi", &days, err, sizeof err), "mon-fxi refused");
    like(err, "\"fxi\" is not a day", "  and the message names the bad day");
    is_int(-1, window_parse_days("monday", &days, err, sizeof err), "monday refused");
    like(err, "\"monday\" is not a day", "  and the message names it");
    is_int(-1, window_parse_days("mon,,tue", &days, err, sizeof err), "an empty item refused");
    like(err, "an empty item", "  and the message says so");
    is_int(-1, window_parse_days("", &days, err, sizeof err), "no days refused");
    like(err, "no days given", "  and the message says so");
    is_int(3, window_day_index("wed"), "window_day_index(wed)");
    is_int(-1, window_day_index("wednesday"), "window_day_index(wednesday) is -1");

    char hours[16], dl[28];
    w = win("09:05-17:30", "sat-mon,wed");
    window_format(&w, hours, sizeof hours, dl, sizeof dl);
    is_string("09:05-17:30", hours, "window_format: hours");
    is_string("mon,wed,sat,sun", dl, "window_format: days, Monday first");
    window_always(&w);
    window_format(&w, hours, sizeof hours, dl, sizeof dl);
    ok(hours[0] == '\0' && strcmp(dl, "mon,tue,wed,thu,fri,sat,sun") == 0,
       "window_format of window_always: empty hours, every day");
}

static void test_zones(void)
{
    is_int(0, window_zone_valid("America/New_York", err, sizeof err), "America/New_York is a zone");
    is_int(0, window_zone_valid("Asia/Calcutta", err, sizeof err), "Asia/Calcutta (an alias) too");
    is_int(0, window_zone_valid("Etc/GMT+5", err, sizeof err), "Etc/GMT+5 too");
    is_int(-1, window_zone_valid("America/Atlantis", err, sizeof err), "America/Atlantis is not");
    like(err, "unknown time zone \"America/Atlantis\"", "  and the message names it");
    is_int(-1, window_zone_valid("../../etc/passwd", err, sizeof err), "../../etc/passwd refused");
    like(err, "a part starting with '.'", "  as not a zone name");
    is_int(-1, window_zone_valid("America/../Europe/Paris", err, sizeof err),
           "a .. inside refused");
    is_int(-1, window_zone_valid("/etc/localtime", err, sizeof err), "a leading / refused");
    like(err, "\"/etc/localtime\" is not a zone name", "  as not a zone name");
    is_int(-1, window_zone_valid("America/New York", err, sizeof err), "a space refused");
    like(err, "character other than", "  naming the characters allowed");
    is_int(-1, window_zone_valid("", err, sizeof err), "an empty name refused");
    is_int(-1, window_zone_valid("America", err, sizeof err), "a directory refused");
    like(err, "not a zone file in the system tzdata", "  as not a zone file");
    is_int(-1, window_zone_valid("zone.tab", err, sizeof err), "zone.tab (not TZif) refused");
    like(err, "not a zone file in the system tzdata", "  as not a zone file");
    is_int(-1, window_zone_valid("right/America/New_York", err, sizeof err),
           "right/ (leap seconds) refused");

    struct window w = win("08:00-21:00", "mon-sun");
    is_int(-1, is_open(&w, "Mars/Olympus_Mons", 1772953200), "is_open in an unknown zone: -1");
    like(err, "unknown time zone \"Mars/Olympus_Mons\"", "  with the message");
    const char *zones[2] = { "America/New_York", "Nowhere/City" };
    is_int(-2, next_n(&w, zones, 2, 1772953200), "next_open with an unknown zone: -1");
    like(err, "\"Nowhere/City\"", "  naming the zone");
    is_int(-2, next_n(&w, zones, 0, 1772953200), "next_open with no zones: -1");
    is_int(-1, is_open(&w, "UTC", (time_t)253402300800LL), "is_open in the year 10000: -1");
    like(err, "outside the years 1900 to 9999", "  with the message");
    is_int(-2, next1(&w, "UTC", (time_t)-2208988801LL), "next_open in 1899: -1");
}

static void test_new_york_dst(void)
{
    const char *ny = "America/New_York";
    struct window w = win("02:30-21:00", "mon-sun");

    /* Spring forward, Sunday 2026-03-08: 01:59:59 EST is 06:59:59Z, the next
     * second is 03:00:00 EDT (07:00:00Z); 02:30 does not exist that day. */
    is_int(1772953200, next1(&w, ny, 1772946000),
           "NY spring-forward: 02:30 (in the gap) opens at 03:00 EDT, the first second after it");
    is_int(0, is_open(&w, ny, 1772953199), "  closed at 01:59:59 EST");
    is_int(1, is_open(&w, ny, 1772953200), "  open at 03:00:00 EDT");
    w = win("08:00-21:00", "mon-sun");
    is_int(1772971200, next1(&w, ny, 1772946000), "  08:00 that day is 12:00Z (EDT, UTC-4)");
    is_int(1772888400, next1(&w, ny, 1772888400 - 3600), "  08:00 the day before is 13:00Z (EST)");

    /* Fall back, Sunday 2026-11-01: 01:59:59 EDT (05:59:59Z) is followed by
     * 01:00:00 EST (06:00:00Z); 01:00-01:59 happens twice. */
    w = win("01:30-21:00", "mon-sun");
    is_int(1793511000, next1(&w, ny, 1793505600),
           "NY fall-back: 01:30 (twice that day) opens at its first occurrence, 01:30 EDT");
    w = win("08:00-21:00", "mon-sun");
    is_int(1793538000, next1(&w, ny, 1793498400), "  08:00 that day is 13:00Z (EST, UTC-5)");
    is_int(1, is_open(&w, ny, 1793584799), "  open at 20:59:59 EST");
    is_int(0, is_open(&w, ny, 1793584800), "  closed at 21:00:00 EST (02:00Z next day)");
    w = win("00:30-01:30", "mon-sun");
    is_int(0, is_open(&w, ny, 1793511900), "  00:30-01:30 is closed at 01:45 EDT");
    is_int(1793512800, next1(&w, ny, 1793511900),
           "  and opens again when the clock goes back to 01:00 EST");
}

static void test_other_zones(void)
{
    struct window w = win("08:00-21:00", "mon-sun");
    const char *hnl = "Pacific/Honolulu";

    /* Honolulu: UTC-10 all year. */
    is_int(1, is_open(&w, hnl, 1782864000), "Honolulu: 2026-06-30 14:00 HST is open");
    is_int(0, is_open(&w, hnl, 1782892800), "Honolulu: 22:00 HST is closed");
    is_int(1782928800, next1(&w, hnl, 1782892800), "  and opens at 08:00 HST = 18:00Z (July)");
    is_int(1768500000, next1(&w, hnl, 1768471200), "  18:00Z in January too (no DST)");

    /* Kolkata: UTC+05:30, no DST. */
    w = win("09:00-18:00", "mon-sun");
    is_int(1772940600, next1(&w, "Asia/Kolkata", 1772928000), "Kolkata: 09:00 IST is 03:30Z");
    is_int(1, is_open(&w, "Asia/Kolkata", 1772972999), "  open at 17:59:59 IST (12:29:59Z)");
    is_int(0, is_open(&w, "Asia/Kolkata", 1772973000), "  closed at 18:00:00 IST (12:30:00Z)");

    /* Mexico City stopped DST after October 2022 (tzdata 2022f): summer
     * 2023 is UTC-6, summer 2022 was UTC-5. */
    w = win("08:00-21:00", "mon-sun");
    const char *mx = "America/Mexico_City";
    is_int(1688220000, next1(&w, mx, 1688191200),
           "Mexico City 2023-07-01: 08:00 is 14:00Z (UTC-6)");
    is_int(0, is_open(&w, mx, 1688219999), "  closed at 13:59:59Z");
    is_int(1656680400, next1(&w, mx, 1656655200), "  2022-07-01 (still DST): 08:00 was 13:00Z");
}

static void test_windows(void)
{
    const char *hnl = "Pacific/Honolulu";

    /* Friday only, 22:00-06:00: Fri 2026-01-16 22:00 HST (08:00Z Sat) to
     * Sat 06:00 HST (16:00Z); the morning part belongs to Friday. */
    struct window w = win("22:00-06:00", "fri");
    is_int(0, is_open(&w, hnl, 1768636799), "across midnight: closed at Fri 21:59:59");
    is_int(1, is_open(&w, hnl, 1768636800), "  open at Fri 22:00");
    is_int(1, is_open(&w, hnl, 1768665599), "  open at Sat 05:59:59 (Friday's night)");
    is_int(0, is_open(&w, hnl, 1768665600), "  closed at Sat 06:00");
    is_int(0, is_open(&w, hnl, 1768575600), "  closed at Fri 05:00 (Thursday's night)");
    is_int(1769241600, next1(&w, hnl, 1768669200), "  from Sat 07:00: next Fri 22:00 HST");
    w = win("22:00-06:00", "mon-fri");
    is_int(0, is_open(&w, hnl, 1768827600), "mon-fri nights: closed Mon 03:00 (Sunday is off)");
    is_int(1, is_open(&w, hnl, 1768636800 + H(5, 0)), "  open Sat 03:00");

    /* Closed days: Saturday 2026-01-17 19:00 EST -> Monday 08:00 EST. */
    w = win("08:00-21:00", "mon-fri");
    is_int(1768827600, next1(&w, "America/New_York", 1768694400),
           "mon-fri: from Saturday 19:00 EST, Monday 08:00 EST (13:00Z)");
    is_int(1768827600, next1(&w, "America/New_York", 1768827600), "  at the opening itself: now");

    /* Empty hours: every instant of the allowed days. */
    w = win("", "mon-fri");
    is_int(1768798800, next1(&w, "America/New_York", 1768694400),
           "empty hours, mon-fri: from Saturday, Monday 00:00 EST");
    window_always(&w);
    is_int(1768694400, next1(&w, "Asia/Kolkata", 1768694400), "window_always: open now");
}

static void test_multi_zone(void)
{
    struct window w = win("08:00-21:00", "mon-sun");

    /* New York 13:00-02:00Z, Los Angeles 16:00-05:00Z (January). */
    const char *ny_la[2] = { "America/New_York", "America/Los_Angeles" };
    is_int(1768492800, next_n(&w, ny_la, 2, 1768471200),
           "NY + LA: from 10:00Z, 16:00Z (when LA opens too)");
    const char *la_ny[2] = { "America/Los_Angeles", "America/New_York" };
    is_int(1768492800, next_n(&w, la_ny, 2, 1768471200),
           "  the order of the zones does not matter");
    is_int(1768471200 + H(9, 0), next_n(&w, ny_la, 2, 1768471200 + H(9, 0)),
           "  open at 19:00Z: now");
    /* NY 13:00-02:00Z, Kolkata 02:30-15:30Z: both from 13:00Z. */
    const char *ny_in[2] = { "America/New_York", "Asia/Kolkata" };
    is_int(1768827600, next_n(&w, ny_in, 2, 1768827600 - H(10, 0)), "NY + Kolkata: 13:00Z");
    is_int(1768827600 + 86400, next_n(&w, ny_in, 2, 1768827600 + H(2, 30)),
           "  from 15:30Z (Kolkata closes): the next day 13:00Z");
    /* Honolulu 19:00-20:00Z, Kolkata 03:30-04:30Z: never together. */
    w = win("09:00-10:00", "mon-sun");
    const char *hnl_in[2] = { "Pacific/Honolulu", "Asia/Kolkata" };
    is_int(-1, next_n(&w, hnl_in, 2, 1768471200), "Honolulu + Kolkata 09:00-10:00: never");
}

static struct tzprefix *load_prefixes(void);

static void test_prefix(void)
{
    struct tzprefix *t = load_prefixes();
    ok(tzprefix_count(t) > 1000, "the prefix table loads (%zu prefixes)", tzprefix_count(t));

    struct tzprefix_match m;
    is_int(1, tzprefix_lookup(t, "+12015551234", &m, err, sizeof err), "+1 201 (New Jersey) found");
    ok(m.nzones == 1 && strcmp(m.zones[0], "America/New_York") == 0 && !m.country_level &&
           strcmp(m.prefix, "1201") == 0,
       "  prefix 1201: America/New_York");
    is_int(1, tzprefix_lookup(t, "+12082015555", &m, err, sizeof err), "+1 208 201 found");
    ok(m.prefix_len == 7 && m.nzones == 1 && strcmp(m.zones[0], "America/Denver") == 0,
       "  the longest prefix wins: 1208201, America/Denver");
    is_int(1, tzprefix_lookup(t, "+12082995555", &m, err, sizeof err), "+1 208 299 found");
    ok(m.prefix_len == 5 && m.nzones == 2 && strcmp(m.zones[0], "America/Boise") == 0 &&
           strcmp(m.zones[1], "America/Los_Angeles") == 0,
       "  12082: Boise and Los Angeles");
    is_int(1, tzprefix_lookup(t, "+19075551234", &m, err, sizeof err), "+1 907 (Alaska) found");
    ok(m.nzones == 2 && strcmp(m.zones[0], "America/Adak") == 0 &&
           strcmp(m.zones[1], "America/Anchorage") == 0,
       "  Adak and Anchorage");
    /* Anchorage 17:00-06:00Z, Adak 18:00-07:00Z (January): both from 18:00Z. */
    struct window w = win("08:00-21:00", "mon-sun");
    is_int(1768500000, next_n(&w, m.zones, m.nzones, 1768478400),
           "  a +1 907 number: next_open from 12:00Z is 18:00Z (Adak opens last)");
    is_int(1, tzprefix_lookup(t, "+919876543210", &m, err, sizeof err), "+91 found");
    ok(m.nzones == 1 && strcmp(m.zones[0], "Asia/Calcutta") == 0 && m.country_level,
       "  India: Asia/Calcutta, country level");
    is_int(0, window_zone_valid(m.zones[0], err, sizeof err), "  and the system tzdata has it");
    is_int(1, tzprefix_lookup(t, "+15551234567", &m, err, sizeof err), "+1 555 found");
    ok(m.prefix_len == 1 && m.country_level && m.nzones > 20,
       "  only by the country code 1: %zu zones, country level", m.nzones);
    is_int(0, tzprefix_lookup(t, "+80012345678", &m, err, sizeof err), "+800 (freephone): none");
    ok(m.zones == NULL && m.nzones == 0, "  and the match is empty");
    is_int(0, tzprefix_lookup(t, "+999123", &m, err, sizeof err), "+999: none");
    is_int(-1, tzprefix_lookup(t, "15551234567", &m, err, sizeof err), "no '+': refused");
    like(err, "must start with '+'", "  with the message");
    is_int(-1, tzprefix_lookup(t, "+1555abc", &m, err, sizeof err), "letters: refused");
    like(err, "1 to 15 digits", "  with the message");
    is_int(-1, tzprefix_lookup(t, "+1234567890123456", &m, err, sizeof err), "16 digits: refused");
    tzprefix_free(t);

    /* Load errors, each naming the file (and line). */
    t = (struct tzprefix *)&t;
    is_int(-1, tzprefix_load("/nonexistent/tzprefix.tsv", &t, err, sizeof err),
           "a missing file: -1");
    ok(t == NULL, "  and *out is NULL");
    like(err, "/nonexistent/tzprefix.tsv: No such file", "  the message names the file");
    static const struct {
        const char *text, *msg;
    } bad[] = {
        { "# c\n1\tA/B\n1\tA/C\n", ":3: prefix 1 is not after 1" },
        { "12\tA/B\n1\tA/C\n", ":2: prefix 1 is not after 12" },
        { "1 A/B\n", ":1: no tab" },
        { "1x\tA/B\n", ":1: prefix \"1x\" is not 1 to 15 digits" },
        { "1\tA/B,,C/D\n", ":1: \"\" is not a zone name" },
        { "1\t../etc\n", ":1: \"../etc\" is not a zone name" },
        { "# nothing\n", ": no prefixes" },
    };
    char tmpl[] = "/tmp/unit_window.XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0)
        bail("mkstemp failed");
    close(fd);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(tmpl, "w");
        if (f == NULL)
            bail("cannot write %s", tmpl);
        fputs(bad[i].text, f);
        fclose(f);
        is_int(-1, tzprefix_load(tmpl, &t, err, sizeof err), "bad file %zu refused", i + 1);
        like(err, bad[i].msg, "  %s", bad[i].msg);
    }
    FILE *f = fopen(tmpl, "w");
    if (f == NULL)
        bail("cannot write %s", tmpl);
    fputs("1\tA/B\r\n12\tC/D,E/F\r\n", f);
    fclose(f);
    ok(tzprefix_load(tmpl, &t, err, sizeof err) == 0 &&
           tzprefix_lookup(t, "+123", &m, err, sizeof err) == 1 && m.nzones == 2 &&
           strcmp(m.zones[1], "E/F") == 0 && !m.country_level,
       "CRLF lines load");
    tzprefix_free(t);
    unlink(tmpl);
}

/* The rule, written again from window.h for the cross-check: open at
 * wall clock LT? */
static int ref_open(const struct window *w, const struct tm *lt)
{
    int sod = lt->tm_hour * 3600 + lt->tm_min * 60 + lt->tm_sec;
    int today = (w->days >> lt->tm_wday) & 1, yesterday = (w->days >> ((lt->tm_wday + 6) % 7)) & 1;
    if (w->start < w->end)
        return today && sod >= w->start && sod < w->end;
    return (today && sod >= w->start) || (yesterday && sod < w->end);
}

#define REF_MINUTES (WINDOW_HORIZON / 60 + 2)

/* The first open second at or after NOW by brute force: localtime_r() of
 * every minute of the horizon in each zone (windows start and end on whole
 * minutes, offsets are whole minutes, so the state is constant within a
 * UTC minute).  -1 for never.  Sets TZ itself. */
static long long ref_next_open(const struct window *w, const char *const *zones, size_t n,
                               time_t now)
{
    static unsigned char all[REF_MINUTES];
    time_t m0 = now - now % 60;
    memset(all, 1, sizeof all);
    for (size_t i = 0; i < n; i++) {
        char tz[300];
        snprintf(tz, sizeof tz, ":%s", zones[i]);
        setenv("TZ", tz, 1);
        tzset();
        for (long k = 0; k < REF_MINUTES; k++) {
            time_t t = m0 + k * 60;
            struct tm lt;
            localtime_r(&t, &lt);
            all[k] &= (unsigned char)ref_open(w, &lt);
        }
    }
    window_cache_clear(); /* TZ was changed behind the module's back */
    for (long k = 0; k < REF_MINUTES; k++) {
        time_t t = k == 0 ? now : m0 + k * 60;
        if (t > now + WINDOW_HORIZON)
            break;
        if (all[k])
            return t;
    }
    return -1;
}

/* Random windows, zones and instants (2022-2028, a fixed seed), each
 * answer checked against the brute force; CALLORCH_WINDOW_CHECKS=N for
 * more than 40.  The zones include half- and
 * quarter-hour offsets, a 30-minute DST (Lord Howe), southern-hemisphere
 * DST, Morocco's Ramadan changes and zones that moved their rules. */
static void test_cross_check(void)
{
    static const char *const pool[] = {
        "America/New_York",    "America/Los_Angeles", "America/Mexico_City", "America/St_Johns",
        "America/Santiago",    "Pacific/Honolulu",    "Asia/Kolkata",        "Asia/Kathmandu",
        "Australia/Lord_Howe", "Australia/Adelaide",  "Pacific/Chatham",     "Europe/London",
        "Africa/Casablanca",   "Asia/Gaza",           "America/Havana",      "Europe/Kyiv",
    };
    const size_t npool = sizeof pool / sizeof pool[0];
    unsigned long long seed = 0x9e3779b97f4a7c15ull;
    const char *env = getenv("CALLORCH_WINDOW_CHECKS"); /* more, by hand */
    int checks = env && atoi(env) > 0 ? atoi(env) : 40, bad = 0, opened = 0, never = 0;
    for (int c = 0; c < checks; c++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        unsigned long long r = seed >> 11;
        struct window w;
        w.start = (int)(r % 96) * 900;
        r /= 96;
        w.end = (int)(r % 96 + 1) * 900;
        r /= 96;
        if (w.end == w.start)
            w.end = (w.end + 3600) % 86400 ? (w.end + 3600) % 86400 : 86400;
        w.days = (unsigned)(r % 127 + 1);
        r /= 127;
        size_t n = 1 + r % 3;
        r /= 3;
        const char *zones[3];
        for (size_t i = 0; i < n; i++) {
            zones[i] = pool[r % npool];
            r /= npool;
        }
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        time_t now = 1640995200 + (time_t)((seed >> 20) % (6ull * 365 * 86400));
        long long want = ref_next_open(&w, zones, n, now);
        long long got = next_n(&w, zones, n, now);
        if (got != want) {
            bad++;
            diag("window %d-%d days %#x, %zu zones from %s, now %lld: got %lld, brute force %lld",
                 w.start, w.end, w.days, n, zones[0], (long long)now, got, want);
        }
        if (want < 0)
            never++;
        else if (want != now)
            opened++;
    }
    is_int(0, bad,
           "next_open agrees with a minute-by-minute localtime_r scan in %d random cases "
           "(%d opening later, %d never)",
           checks, opened, never);
}


/* The prefix table of test_prefix(), loaded again. */
static struct tzprefix *load_prefixes(void)
{
    const char *path = getenv("CALLORCH_TZPREFIX");
    char buf[4096];
    if (path == NULL || path[0] == '\0') {
        const char *bd = getenv("CALLORCH_BUILDDIR");
        snprintf(buf, sizeof buf, "%s/data/tzprefix.tsv", bd && bd[0] ? bd : ".");
        path = buf;
    }
    struct tzprefix *t = NULL;
    if (tzprefix_load(path, &t, err, sizeof err) != 0)
        bail("tzprefix_load: %s", err);
    return t;
}

/* A config with [compliance] from INI_TAIL (the secret is required). */
static struct co_config *rules_config(const char *compliance)
{
    char text[1024];
    struct co_config *cfg = NULL;
    snprintf(text, sizeof text,
             "[provider]\ncallback_secret = whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"
             "[compliance]\n%s",
             compliance);
    if (co_config_load_string("rules.ini", text, &cfg, err, sizeof err) != 0)
        bail("config: %s", err);
    return cfg;
}

static void test_rules_zones(void)
{
    struct tzprefix *t = load_prefixes();
    const char *z[RULES_MAX_ZONES];
    is_int(0, rules_number_zones(t, "+15551234567", z, RULES_MAX_ZONES),
           "rules: +1 555 (only the country code, many zones): no zone data");
    is_int(2, rules_number_zones(t, "+19075551234", z, RULES_MAX_ZONES), "rules: +1 907: 2 zones");
    ok(strcmp(z[0], "America/Adak") == 0 && strcmp(z[1], "America/Anchorage") == 0,
       "  Adak and Anchorage");
    is_int(1, rules_number_zones(t, "+919876543210", z, RULES_MAX_ZONES),
           "rules: +91 (country level, one zone) counts");
    is_int(0, rules_number_zones(t, "+80012345678", z, RULES_MAX_ZONES), "rules: +800: none");
    is_int(0, rules_number_zones(NULL, "+12015551234", z, RULES_MAX_ZONES),
           "rules: no table: none");
    is_int(-1, rules_number_zones(t, "12015551234", z, RULES_MAX_ZONES), "rules: not E.164: -1");
    tzprefix_free(t);
}

static void window_json_case(const char *json, const char *want_err)
{
    json_error_t je;
    json_t *v = json_loads(json, JSON_DECODE_ANY, &je);
    struct window w;
    int rc = rules_window_from_json(v, &w, err, sizeof err);
    if (want_err == NULL) {
        json_t *back = rules_window_to_json(&w);
        char *txt = json_dumps(back, JSON_COMPACT);
        ok(rc == 0, "callingWindow %s accepted (as %s)", json, txt ? txt : "?");
        free(txt);
        json_decref(back);
    } else {
        is_int(-1, rc, "callingWindow %s refused", json);
        like(err, want_err, "  with the message");
    }
    json_decref(v);
}

static void test_rules_window_json(void)
{
    window_json_case("{\"start\":\"09:00\",\"end\":\"20:00\",\"days\":[\"mon\",\"fri\"]}", NULL);
    window_json_case("{\"start\":\"22:00\",\"end\":\"06:00\"}", NULL);
    window_json_case("{\"days\":[\"sat\"]}", NULL);
    window_json_case("{\"start\":\"25:00\",\"end\":\"06:00\"}", "not a time of day");
    window_json_case("{\"start\":\"09:00\"}", "must both be");
    window_json_case("{\"start\":9,\"end\":10}", "must both be");
    window_json_case("{\"start\":\"09:00\",\"end\":\"10:00\",\"days\":[\"funday\"]}",
                     "is not a day name");
    window_json_case("{\"start\":\"09:00\",\"end\":\"10:00\",\"days\":[]}", "non-empty array");
    window_json_case("{\"start\":\"09:00\",\"end\":\"10:00\",\"hours\":1}", "unknown member");
    window_json_case("[1]", "must be an object");
    window_json_case("{\"start\":\"09:00:00\",\"end\":\"10:00\"}", "HH:MM");

    struct window w;
    json_t *v =
        json_loads("{\"start\":\"09:30\",\"end\":\"24:00\",\"days\":[\"sun\",\"mon\"]}", 0, NULL);
    rules_window_from_json(v, &w, err, sizeof err);
    json_t *back = rules_window_to_json(&w);
    char *txt = json_dumps(back, JSON_COMPACT);
    is_string("{\"start\":\"09:30\",\"end\":\"24:00\",\"days\":[\"mon\",\"sun\"]}", txt,
              "the normal form: monday first, 24:00 kept");
    free(txt);
    json_decref(back);
    json_decref(v);
}

static void test_rules_check(void)
{
    time_t until = 0;
    /* 2026-01-15 12:00Z, a Thursday */
    const time_t noon = 1768478400;
    struct co_config *cfg = rules_config("calling_hours = 08:00-21:00\n");
    const char *ny[] = { "America/New_York" }; /* 07:00 EST: closed until 13:00Z */
    is_int(RULES_HOLD, rules_check(cfg, NULL, ny, 1, noon, &until, err, sizeof err),
           "New York at 07:00: hold");
    is_int(noon + 3600, until, "  until 08:00 EST (13:00Z)");
    const char *none[1] = { NULL };
    is_int(RULES_DIAL, rules_check(cfg, NULL, none, 0, noon, &until, err, sizeof err),
           "no zone data, unknown_timezone utc: the window in UTC, open at 12:00Z");
    struct window own = win("13:00-14:00", "mon-sun");
    is_int(RULES_HOLD, rules_check(cfg, &own, none, 0, noon, &until, err, sizeof err),
           "the call's own window overrides the config's");
    is_int(noon + 3600, until, "  until 13:00Z");
    const char *bad[] = { "Mars/Olympus" };
    is_int(RULES_ERROR, rules_check(cfg, NULL, bad, 1, noon, &until, err, sizeof err),
           "a zone the tzdata lacks: error");
    co_config_free(cfg);

    cfg = rules_config("calling_hours =\nunknown_timezone = skip\n");
    is_int(RULES_HOLD, rules_check(cfg, NULL, none, 0, noon, &until, err, sizeof err),
           "no zone data, unknown_timezone skip: hold even at any hour");
    is_int(noon + RULES_SKIP_RECHECK, until, "  looked at again later");
    is_int(RULES_DIAL, rules_check(cfg, NULL, ny, 1, noon, &until, err, sizeof err),
           "empty calling_hours with a zone: any time");
    co_config_free(cfg);

    cfg = rules_config("calling_hours = 09:00-10:00\n");
    const char *far[] = { "Pacific/Honolulu", "Asia/Kolkata" };
    is_int(RULES_HOLD, rules_check(cfg, NULL, far, 2, noon, &until, err, sizeof err),
           "zones whose windows never meet: hold");
    is_int(noon + WINDOW_HORIZON, until, "  for the horizon, then looked at again");
    co_config_free(cfg);
}

int main(void)
{
    test_parse();
    test_zones();
    test_new_york_dst();
    test_other_zones();
    test_windows();
    test_multi_zone();
    test_prefix();
    test_cross_check();
    test_rules_zones();
    test_rules_window_json();
    test_rules_check();
    window_cache_clear();
    return done_testing();
}
