/*
 * rules.c — a call's zones, window and verdict (see rules.h).
 */
#include "compliance/rules.h"

#include <stdio.h>
#include <string.h>

#include "util/err.h"

int rules_number_zones(const struct tzprefix *t, const char *e164, const char **zones, size_t max)
{
    struct tzprefix_match m;
    char why[128];
    int rc = t != NULL ? tzprefix_lookup(t, e164, &m, why, sizeof why) : 0;
    if (rc <= 0)
        return rc;
    if (m.nzones == 0 || m.nzones > max || (m.country_level && m.nzones > 1))
        return 0;
    for (size_t i = 0; i < m.nzones; i++)
        zones[i] = m.zones[i];
    return (int)m.nzones;
}

/* The "HH:MM-HH:MM" text of start and end, checked by window_parse_hours. */
static int window_hours_from_json(const json_t *obj, struct window *w, char *err, size_t errlen)
{
    const json_t *start = json_object_get(obj, "start"), *end = json_object_get(obj, "end");
    char hours[32];
    if (start == NULL && end == NULL)
        return window_parse_hours(NULL, w, err, errlen);
    if (!json_is_string(start) || !json_is_string(end)) {
        co_seterr(err, errlen, "\"start\" and \"end\" must both be \"HH:MM\" strings");
        return -1;
    }
    if (strlen(json_string_value(start)) > 5 || strlen(json_string_value(end)) > 5) {
        co_seterr(err, errlen, "\"start\" and \"end\" must be \"HH:MM\"");
        return -1;
    }
    snprintf(hours, sizeof hours, "%s-%s", json_string_value(start), json_string_value(end));
    return window_parse_hours(hours, w, err, errlen);
}

static int window_days_from_json(const json_t *days, struct window *w, char *err, size_t errlen)
{
    size_t i;
    const json_t *d;
    w->days = 0;
    if (days == NULL) {
        w->days = WINDOW_ALL_DAYS;
        return 0;
    }
    if (!json_is_array(days) || json_array_size(days) == 0) {
        co_seterr(err, errlen, "\"days\" must be a non-empty array of day names");
        return -1;
    }
    json_array_foreach(days, i, d)
    {
        int day = json_is_string(d) ? window_day_index(json_string_value(d)) : -1;
        if (day < 0) {
            co_seterr(err, errlen, "\"days\"[%zu] is not a day name (\"mon\" ... \"sun\")", i);
            return -1;
        }
        w->days |= 1u << day;
    }
    return 0;
}

int rules_window_from_json(const json_t *obj, struct window *w, char *err, size_t errlen)
{
    const char *key;
    const json_t *v;
    if (!json_is_object(obj)) {
        co_seterr(err, errlen, "must be an object {\"start\",\"end\",\"days\"}");
        return -1;
    }
    json_object_foreach((json_t *)obj, key, v)
    {
        if (strcmp(key, "start") != 0 && strcmp(key, "end") != 0 && strcmp(key, "days") != 0) {
            co_seterr(err, errlen, "unknown member (only \"start\", \"end\" and \"days\")");
            return -1;
        }
    }
    if (window_hours_from_json(obj, w, err, errlen) < 0)
        return -1;
    return window_days_from_json(json_object_get(obj, "days"), w, err, errlen);
}

json_t *rules_window_to_json(const struct window *w)
{
    static const char *const names[7] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat" };
    char start[16], end[16];
    json_t *days = json_array();
    snprintf(start, sizeof start, "%02d:%02d", w->start / 3600, w->start % 3600 / 60);
    snprintf(end, sizeof end, "%02d:%02d", w->end / 3600, w->end % 3600 / 60);
    for (int i = 1; i <= 7; i++) /* monday first, as people write weeks */
        if (w->days & (1u << (i % 7)))
            json_array_append_new(days, json_string(names[i % 7]));
    return json_pack("{s:s,s:s,s:o}", "start", start, "end", end, "days", days);
}

enum rules_verdict rules_check(const struct co_config *cfg, const struct window *w,
                               const char *const *zones, size_t nzones, time_t now, time_t *until,
                               char *err, size_t errlen)
{
    static const char *const utc[] = { "UTC" };
    time_t at;
    if (w == NULL)
        w = &cfg->calling_window;
    if (nzones == 0) {
        if (cfg->unknown_timezone == CO_UNKNOWN_TZ_SKIP) {
            *until = now + RULES_SKIP_RECHECK;
            return RULES_HOLD;
        }
        zones = utc;
        nzones = 1;
    }
    int rc = window_next_open(w, zones, nzones, now, &at, err, errlen);
    if (rc < 0)
        return RULES_ERROR;
    if (rc == 0) {
        *until = now + WINDOW_HORIZON;
        return RULES_HOLD;
    }
    if (at <= now)
        return RULES_DIAL;
    *until = at;
    return RULES_HOLD;
}
