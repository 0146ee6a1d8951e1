/*
 * tzprefix.c — the time-zone prefix table (see tzprefix.h).
 *
 * The file is read whole into one buffer and split in place: each entry's
 * prefix and zone names point into it, so a table is three allocations
 * (text, entries, zone pointers).  Entries stay in file order, which the
 * loader checks is strictly ascending (strcmp order, which for digit
 * strings puts a prefix before its extensions), and each entry knows its
 * parent: the longest shorter prefix of it in the table.  A lookup is one
 * binary search for the last entry not after the number, then a walk up
 * its parents to the first one that is a prefix of the number: the
 * longest matching prefix lies between that one and the number in sort
 * order, so it is a prefix of that entry, on its parent chain.
 */
#include "compliance/tzprefix.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/err.h"

#define TZPREFIX_FILE_MAX (64u * 1024 * 1024) /* a sanity bound, not a real limit */

struct tzp_entry {
    const char *prefix;
    uint32_t zfirst; /* index of its first zone in zones[] */
    uint16_t nzones;
    uint8_t len;
    int32_t parent; /* index of the longest shorter prefix, -1 */
};

struct tzprefix {
    char *text; /* the file, split in place */
    struct tzp_entry *e;
    size_t n;
    const char **zones; /* all entries' zone names, entry after entry */
    size_t nz;
};

/* Read the whole of PATH into a NUL-terminated heap buffer. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        co_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        co_seterr(err, errlen, "%s: not a regular file", path);
        fclose(f);
        return NULL;
    }
    if ((uintmax_t)st.st_size > TZPREFIX_FILE_MAX) {
        co_seterr(err, errlen, "%s: larger than %u bytes", path, TZPREFIX_FILE_MAX);
        fclose(f);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    if (buf == NULL) {
        co_seterr(err, errlen, "%s: out of memory", path);
        fclose(f);
        return NULL;
    }
    size_t got = fread(buf, 1, size, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || got != size) {
        co_seterr(err, errlen, "%s: read error", path);
        free(buf);
        return NULL;
    }
    buf[size] = '\0';
    *len = size;
    return buf;
}

/* A zone name as the data may hold it: letters, digits, "_+-", '/'-separated
 * non-empty parts, not starting with '/' or '.'.  Existence in the system
 * tzdata is window_zone_valid()'s business, at use. */
static bool zone_name_ok(const char *z)
{
    if (*z == '\0' || *z == '/' || *z == '.' || strlen(z) > 255)
        return false;
    for (const char *p = z; *p; p++) {
        if (*p == '/' && (p[1] == '/' || p[1] == '\0'))
            return false;
        if (*p == '.' && p[1] == '.')
            return false;
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '+' || *p == '-' || *p == '/' || *p == '.'))
            return false;
    }
    return true;
}

/* Compare table prefix E with the LEN digits at KEY, in strcmp order. */
static int entry_cmp(const struct tzp_entry *e, const char *key, size_t len)
{
    size_t m = e->len < len ? e->len : len;
    int c = memcmp(e->prefix, key, m);
    if (c != 0)
        return c;
    return (e->len > len) - (e->len < len);
}

/* Split the text into entries and zone pointers; counts first, then fill. */
static int parse(struct tzprefix *t, size_t len, const char *path, char *err, size_t errlen)
{
    size_t lines = 1, commas = 0;
    for (size_t i = 0; i < len; i++) {
        if (t->text[i] == '\n')
            lines++;
        else if (t->text[i] == ',')
            commas++;
    }
    t->e = calloc(lines, sizeof *t->e);
    t->zones = calloc(lines + commas, sizeof *t->zones);
    if (t->e == NULL || t->zones == NULL) {
        co_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }

    char *p = t->text;
    unsigned lineno = 0;
    while (*p != '\0') {
        char *nl = strchr(p, '\n');
        char *next = nl ? nl + 1 : p + strlen(p);
        if (nl)
            *nl = '\0';
        lineno++;
        if (*p == '#' || *p == '\0') {
            p = next;
            continue;
        }
        char *tab = strchr(p, '\t');
        if (tab == NULL) {
            co_seterr(err, errlen, "%s:%u: no tab between prefix and zones", path, lineno);
            return -1;
        }
        *tab = '\0';
        size_t plen = (size_t)(tab - p);
        if (plen == 0 || plen > TZPREFIX_DIGITS_MAX || strspn(p, "0123456789") != plen) {
            co_seterr(err, errlen, "%s:%u: prefix \"%s\" is not 1 to %d digits", path, lineno, p,
                      TZPREFIX_DIGITS_MAX);
            return -1;
        }
        if (t->n > 0 && strcmp(t->e[t->n - 1].prefix, p) >= 0) {
            co_seterr(err, errlen,
                      "%s:%u: prefix %s is not after %s (the file must be sorted, "
                      "each prefix once)",
                      path, lineno, p, t->e[t->n - 1].prefix);
            return -1;
        }
        struct tzp_entry *e = &t->e[t->n];
        e->prefix = p;
        e->len = (uint8_t)plen;
        e->zfirst = (uint32_t)t->nz;
        char *z = tab + 1;
        for (;;) {
            char *comma = strchr(z, ',');
            if (comma)
                *comma = '\0';
            size_t zl = strlen(z);
            if (zl > 0 && z[zl - 1] == '\r')
                z[zl - 1] = '\0';
            if (!zone_name_ok(z)) {
                co_seterr(err, errlen, "%s:%u: \"%s\" is not a zone name", path, lineno, z);
                return -1;
            }
            if (e->nzones == UINT16_MAX) {
                co_seterr(err, errlen, "%s:%u: too many zones", path, lineno);
                return -1;
            }
            t->zones[t->nz++] = z;
            e->nzones++;
            if (comma == NULL)
                break;
            z = comma + 1;
        }
        t->n++;
        p = next;
    }
    if (t->n == 0) {
        co_seterr(err, errlen, "%s: no prefixes", path);
        return -1;
    }
    /* Parents in one pass: in sort order a prefix comes before the entries
     * it starts, and the entries in between start with it too, so the
     * chain of prefixes of the current entry is a stack. */
    int32_t *stack = malloc(t->n * sizeof *stack);
    if (stack == NULL) {
        co_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t depth = 0;
    for (size_t i = 0; i < t->n; i++) {
        struct tzp_entry *e = &t->e[i];
        while (depth > 0) {
            const struct tzp_entry *top = &t->e[stack[depth - 1]];
            if (top->len < e->len && memcmp(top->prefix, e->prefix, top->len) == 0)
                break;
            depth--;
        }
        e->parent = depth > 0 ? stack[depth - 1] : -1;
        stack[depth++] = (int32_t)i;
    }
    free(stack);
    return 0;
}

int tzprefix_load(const char *path, struct tzprefix **out, char *err, size_t errlen)
{
    *out = NULL;
    struct tzprefix *t = calloc(1, sizeof *t);
    if (t == NULL) {
        co_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t len = 0;
    t->text = read_file(path, &len, err, errlen);
    if (t->text == NULL) {
        free(t);
        return -1;
    }
    if (memchr(t->text, '\0', len) != NULL) {
        co_seterr(err, errlen, "%s: contains a NUL byte", path);
        tzprefix_free(t);
        return -1;
    }
    if (parse(t, len, path, err, errlen) != 0) {
        tzprefix_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void tzprefix_free(struct tzprefix *t)
{
    if (t == NULL)
        return;
    free(t->zones);
    free(t->e);
    free(t->text);
    free(t);
}

size_t tzprefix_count(const struct tzprefix *t)
{
    return t->n;
}

int tzprefix_lookup(const struct tzprefix *t, const char *e164, struct tzprefix_match *m, char *err,
                    size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (e164 == NULL || e164[0] != '+') {
        co_seterr(err, errlen, "not an E.164 number: it must start with '+'");
        return -1;
    }
    const char *digits = e164 + 1;
    size_t nd = strspn(digits, "0123456789");
    if (nd == 0 || nd > TZPREFIX_DIGITS_MAX || digits[nd] != '\0') {
        co_seterr(err, errlen, "not an E.164 number: '+' must be followed by 1 to %d digits",
                  TZPREFIX_DIGITS_MAX);
        return -1;
    }
    size_t lo = 0, hi = t->n; /* the first entry after the number: lo */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (entry_cmp(&t->e[mid], digits, nd) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return 0;
    const struct tzp_entry *e = &t->e[lo - 1];
    size_t common = 0;
    while (common < e->len && common < nd && e->prefix[common] == digits[common])
        common++;
    while (e->len > common) {
        if (e->parent < 0)
            return 0;
        e = &t->e[e->parent];
    }
    m->prefix = e->prefix;
    m->prefix_len = e->len;
    m->zones = &t->zones[e->zfirst];
    m->nzones = e->nzones;
    m->country_level = e->parent < 0;
    return 1;
    return 0;
}
