/*
 * tzprefix.h — the time-zone prefix table: which IANA zones a phone number
 * may be in (DESIGN.md section 9, "Time zones").
 *
 * Owns: loading the data file that tools/tzprefix-gen writes from
 * libphonenumber's prefix data (installed as CO_TZPREFIX_FILE,
 * /usr/share/callorch/tzprefix.tsv: "prefix<TAB>zone[,zone...]" lines,
 * sorted by prefix, '#' lines ignored) into one read-only table, and the
 * longest-prefix lookup of an E.164 number in it.  Leaves to the caller
 * what to do with a number it does not know, or with a match that is only
 * the whole country (see tzprefix_match.country_level), and the zones'
 * local time (compliance/window.h).
 *
 * The table is immutable once loaded: load it once (before forking, or in
 * each child), look up from anywhere, free it once.  Errors come back
 * through (err, errlen) (util/err.h); nothing here exits.
 */
#ifndef CO_TZPREFIX_H
#define CO_TZPREFIX_H

#include <stdbool.h>
#include <stddef.h>

#ifndef CO_TZPREFIX_FILE
#define CO_TZPREFIX_FILE "/usr/share/callorch/tzprefix.tsv"
#endif

#define TZPREFIX_DIGITS_MAX 15 /* E.164: at most 15 digits after '+' */

struct tzprefix;

/* What a lookup found.  The pointers belong to the table (valid until
 * tzprefix_free); the zone names are as the data spells them, which may be
 * an old alias such as "Asia/Calcutta" (a link in the system tzdata). */
struct tzprefix_match {
    const char *prefix; /* the matching prefix: digits, NUL-terminated */
    size_t prefix_len;
    const char *const *zones; /* nzones zone names, as the data lists them */
    size_t nzones;
    bool country_level; /* no shorter prefix of it is in the table:
                                    the entry for the whole calling code */
};

/* Read PATH into a new table (*out).  0, or -1 with the reason, naming the
 * file and line, in err. */
int tzprefix_load(const char *path, struct tzprefix **out, char *err, size_t errlen);

/* Release a table (NULL is fine). */
void tzprefix_free(struct tzprefix *t);

/* Number of prefixes in the table. */
size_t tzprefix_count(const struct tzprefix *t);

/* Look E164 ("+15551234567") up by longest matching prefix.  1 and *m
 * filled; 0 when no prefix matches (*m zeroed); -1 when E164 is not '+'
 * and 1 to 15 digits (the reason in err). */
int tzprefix_lookup(const struct tzprefix *t, const char *e164, struct tzprefix_match *m, char *err,
                    size_t errlen);

#endif
