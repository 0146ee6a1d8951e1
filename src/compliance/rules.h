/*
 * rules.h — which zones and which calling window apply to one call, and
 * whether it may be dialled now (DESIGN.md section 9).
 *
 * Owns: the policy that joins config ([compliance]), a call's own fields
 * (timezone, callingWindow) and the prefix table: a number's zones (a
 * country-level prefix with several zones counts as no zone data: the
 * whole of the US is not "open in all 42 zones" any more usefully than
 * "unknown"), the unknown_timezone rule, the callingWindow JSON shape
 * (parsed, checked and written back in one normal form), and the verdict
 * "dial now" or "hold until T".  Leaves the time arithmetic to
 * compliance/window.h, the table to compliance/tzprefix.h, and storing
 * the decision to the callers (API at create and PATCH, dispatcher at
 * dial time).
 */
#ifndef CO_RULES_H
#define CO_RULES_H

#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "compliance/tzprefix.h"
#include "compliance/window.h"
#include "util/config.h"

#define RULES_MAX_ZONES 64           /* more than any prefix in the data has */
#define RULES_SKIP_RECHECK (60 * 60) /* unknown_timezone = skip: look again after */

/* The zones the prefix data gives E164, into ZONES (at most MAX; they point
 * into the table).  Returns how many: 0 for no zone data (no prefix, or a
 * country-level prefix with more than one zone), -1 for a malformed E164. */
int rules_number_zones(const struct tzprefix *t, const char *e164, const char **zones, size_t max);

/* Parse a callingWindow object {"start":"09:00","end":"20:00","days":["mon",
 * ...]} ("days" optional: every day; "start"/"end" both or neither: the
 * whole day) into *W.  0, or -1 with the reason in err (for a 400 naming
 * "callingWindow"). */
int rules_window_from_json(const json_t *obj, struct window *w, char *err, size_t errlen);

/* The normal form of W as a new JSON object (what is stored and shown). */
json_t *rules_window_to_json(const struct window *w);

enum rules_verdict {
    RULES_ERROR = -1, /* a zone is not in the system tzdata (err says which) */
    RULES_DIAL = 0,   /* the window is open now in every zone */
    RULES_HOLD = 1    /* not now: *until is the earliest moment it may be */
};

/* May a call be dialled at NOW?  W: the call's own window, or NULL for
 * [compliance]; ZONES/NZONES: the call's zones (its timezone, else its
 * number's), none = no zone data, which [compliance] unknown_timezone
 * decides (utc: the window in UTC; skip: held, looked at again after
 * RULES_SKIP_RECHECK).  A window that never opens in all zones at once
 * within WINDOW_HORIZON holds until NOW + WINDOW_HORIZON. */
enum rules_verdict rules_check(const struct co_config *cfg, const struct window *w,
                               const char *const *zones, size_t nzones, time_t now, time_t *until,
                               char *err, size_t errlen);

#endif
