/*
 * config.c — the callorch.ini loader.
 *
 * Owns: the one table of sections and keys (DESIGN.md section 6) with their
 * types, defaults, ranges and checks; the unit parsers (durations, sizes);
 * the line-counting reader that lets every error name "file:line"; and the
 * checks that need the whole file (required keys, keys that depend on each
 * other).  inih does the lexing; everything else happens here.
 *
 * A load builds a fresh struct co_config: defaults first, parsed from their
 * strings by the same code as the file's values, then the file on top, then
 * the cross-key checks.  Any error frees it, so a caller either gets a whole
 * valid config or none (a reload keeps the old one).
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* getline(); -std=c11 hides POSIX otherwise */
#endif
#include "util/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <librdkafka/rdkafka.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "compliance/tzprefix.h"
#include "util/err.h"
#include "util/strbuf.h"
#include "util/webhook_sig.h"

/* Durations above this are typos, not intent (about 31 years). */
#define CO_DURATION_MAX 1e9
#define CO_MIN_CALLBACK_KEY_BYTES 16
#define CO_MAX_FILE_BYTES (1024 * 1024)

enum key_type { KT_STRING, KT_INT, KT_DURATION, KT_SIZE, KT_ENUM, KT_LISTEN, KT_KEYLIST };

#define KF_SECRET 0x1  /* never echo the value in a message; wipe it on free */
#define KF_RESTART 0x2 /* used at start only: a reload leaves it as it was */

/* Extra validation of a string value; writes a reason into err on failure. */
typedef int (*check_fn)(const char *value, char *err, size_t errlen);

struct key {
    const char *section;
    const char *name;
    enum key_type type;
    const char *def;            /* default, parsed like a file value; NULL: required */
    const char *min, *max;      /* inclusive range in the key's own units */
    size_t off;                 /* field in struct co_config */
    size_t off_n;               /* KT_LISTEN, KT_KEYLIST: the count field */
    const char *const *choices; /* KT_ENUM: names, index = value */
    check_fn check;             /* KT_STRING */
    unsigned flags;
};

static int check_nonempty(const char *v, char *err, size_t n);
static int check_abs_path(const char *v, char *err, size_t n);
static int check_socket_path(const char *v, char *err, size_t n);
static int check_log_target(const char *v, char *err, size_t n);
static int check_url(const char *v, char *err, size_t n);
static int check_topic(const char *v, char *err, size_t n);
static int check_status_url(const char *v, char *err, size_t n);
static int check_hours(const char *v, char *err, size_t n);
static int check_days(const char *v, char *err, size_t n);
static int check_retry_rule(const char *v, char *err, size_t n);
static int check_optional_url(const char *v, char *err, size_t n);
static int check_events_secret(const char *v, char *err, size_t n);
static void derive_rules(struct co_config *cfg);

static const char *const log_level_names[] = { "error", "warn", "info", "debug", NULL };
static const char *const auth_names[] = { "hmac", "api-key", NULL };
static const char *const unknown_tz_names[] = { "utc", "skip", NULL };

/* Enums are stored through an int pointer. */
_Static_assert(sizeof(enum co_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum co_callback_auth) == sizeof(int), "enum size");
_Static_assert(sizeof(enum co_unknown_tz) == sizeof(int), "enum size");

#define OFF(f) offsetof(struct co_config, f)
#define STR(s, k, d, f, chk, fl)                                                           \
    {                                                                                      \
        .section = s, .name = k, .type = KT_STRING, .def = d, .off = OFF(f), .check = chk, \
        .flags = fl                                                                        \
    }
#define NUM(t, s, k, d, lo, hi, f)                                                        \
    {                                                                                     \
        .section = s, .name = k, .type = t, .def = d, .min = lo, .max = hi, .off = OFF(f) \
    }
#define ENUM(s, k, d, f, names)                                                             \
    {                                                                                       \
        .section = s, .name = k, .type = KT_ENUM, .def = d, .off = OFF(f), .choices = names \
    }
#define LIST(t, s, k, d, f, fn, fl)                                                                \
    {                                                                                              \
        .section = s, .name = k, .type = t, .def = d, .off = OFF(f), .off_n = OFF(fn), .flags = fl \
    }

/*
 * The contract of DESIGN.md section 6; ranges are documented in
 * etc/callorch.ini and callorch.ini(5).  Flags: KF_SECRET, and KF_RESTART
 * for a key that only a restart applies (a reload warns that it changed);
 * every other key a reload applies.
 */
static const struct key keys[] = {
    STR("daemon", "user", "callorch", user, check_nonempty, KF_RESTART),
    STR("daemon", "pid_file", "/run/callorch/callorchd.pid", pid_file, check_abs_path, KF_RESTART),
    STR("daemon", "control_socket", "/run/callorch/control.sock", control_socket, check_socket_path,
        KF_RESTART),
    ENUM("daemon", "log_level", "info", log_level, log_level_names),
    STR("daemon", "log_target", "stderr", log_target, check_log_target, 0),
    NUM(KT_DURATION, "daemon", "shutdown_timeout", "30s", "1ms", "1h", shutdown_timeout),

    LIST(KT_LISTEN, "http", "listen", "127.0.0.1:8080", listen, n_listen, 0),
    NUM(KT_INT, "http", "workers", "2", "1", "64", workers),
    NUM(KT_INT, "http", "max_connections", "1024", "1", "1000000", max_connections),
    NUM(KT_SIZE, "http", "max_body", "64KiB", "1KiB", "64MiB", max_body),
    NUM(KT_SIZE, "http", "max_metadata_bytes", "16KiB", "1B", "64MiB", max_metadata_bytes),
    NUM(KT_DURATION, "http", "idle_timeout", "30s", "1ms", "1h", idle_timeout),
    STR("http", "public_base_url", "http://127.0.0.1:8080", public_base_url, check_url, 0),
    LIST(KT_KEYLIST, "http", "api_keys", "", api_keys, n_api_keys, KF_SECRET),

    STR("postgres", "conninfo", "dbname=callorch", pg_conninfo, check_nonempty, KF_SECRET),
    NUM(KT_INT, "postgres", "pool_size", "4", "1", "64", pg_pool_size),

    STR("redis", "host", "127.0.0.1", redis_host, check_nonempty, 0),
    NUM(KT_INT, "redis", "port", "6379", "1", "65535", redis_port),
    STR("redis", "password", "", redis_password, NULL, KF_SECRET),
    NUM(KT_INT, "redis", "db", "0", "0", "1023", redis_db),
    STR("redis", "key_prefix", "callorch:", redis_key_prefix, NULL, 0),

    STR("kafka", "brokers", "127.0.0.1:9092", kafka_brokers, check_nonempty, 0),
    STR("kafka", "topic", "calls", kafka_topic, check_topic, 0),
    STR("kafka", "group_id", "callorch-dispatch", kafka_group_id, check_nonempty, 0),
    NUM(KT_INT, "kafka", "consumers", "2", "0", "64", kafka_consumers),

    NUM(KT_INT, "dispatch", "max_concurrent_calls", "30", "1", "1000000", max_concurrent_calls),
    NUM(KT_INT, "dispatch", "max_attempts", "3", "1", "100", max_attempts),
    NUM(KT_DURATION, "dispatch", "backoff_base", "30s", "1ms", "24h", backoff_base),
    NUM(KT_DURATION, "dispatch", "backoff_max", "15m", "1ms", "168h", backoff_max),
    NUM(KT_DURATION, "dispatch", "call_timeout", "15m", "1s", "24h", call_timeout),
    NUM(KT_DURATION, "dispatch", "scheduler_interval", "1s", "10ms", "1h", scheduler_interval),
    NUM(KT_DURATION, "dispatch", "reconcile_interval", "10s", "10ms", "1h", reconcile_interval),

    STR("provider", "url", "http://127.0.0.1:9090/api/v1/calls", provider_url, check_url, 0),
    STR("provider", "api_key", "", provider_api_key, NULL, KF_SECRET),
    NUM(KT_DURATION, "provider", "timeout", "10s", "1ms", "1h", provider_timeout),
    STR("provider", "status_url", "", provider_status_url, check_status_url, 0),
    ENUM("provider", "callback_auth", "hmac", callback_auth, auth_names),
    STR("provider", "callback_secret", NULL, callback_secret, NULL, KF_SECRET),
    NUM(KT_DURATION, "provider", "signature_tolerance", "5m", "1s", "24h", signature_tolerance),
    NUM(KT_INT, "provider", "max_calls_per_second", "0", "0", "100000", max_calls_per_second),

    STR("compliance", "calling_hours", "08:00-21:00", calling_hours, check_hours, 0),
    STR("compliance", "calling_days", "mon-sun", calling_days, check_days, 0),
    ENUM("compliance", "unknown_timezone", "utc", unknown_timezone, unknown_tz_names),
    NUM(KT_INT, "compliance", "max_attempts_per_number", "0", "0", "1000", max_attempts_per_number),
    NUM(KT_DURATION, "compliance", "attempts_period", "24h", "1s", "3650d", attempts_period),
    STR("compliance", "timezone_prefixes", CO_TZPREFIX_FILE, timezone_prefixes, check_abs_path,
        KF_RESTART),

    STR("retry", "failed", "backoff", retry_rule[CO_OUTCOME_FAILED], check_retry_rule, 0),
    STR("retry", "busy", "10m", retry_rule[CO_OUTCOME_BUSY], check_retry_rule, 0),
    STR("retry", "no_answer", "2h", retry_rule[CO_OUTCOME_NO_ANSWER], check_retry_rule, 0),
    STR("retry", "voicemail", "24h", retry_rule[CO_OUTCOME_VOICEMAIL], check_retry_rule, 0),
    STR("retry", "rejected", "never", retry_rule[CO_OUTCOME_REJECTED], check_retry_rule, 0),
    STR("retry", "invalid_number", "never", retry_rule[CO_OUTCOME_INVALID_NUMBER], check_retry_rule,
        0),
    STR("retry", "timeout", "backoff", retry_rule[CO_OUTCOME_TIMEOUT], check_retry_rule, 0),

    NUM(KT_DURATION, "retention", "webhook_events", "7d", "1s", "3650d", retain_webhook_events),
    NUM(KT_DURATION, "retention", "idempotency_keys", "24h", "1s", "3650d",
        retain_idempotency_keys),
    NUM(KT_DURATION, "retention", "finished_calls", "0", "0", "3650d", retain_finished_calls),

    STR("events", "url", "", events_url, check_optional_url, 0),
    STR("events", "secret", "", events_secret, check_events_secret, KF_SECRET),
    NUM(KT_DURATION, "events", "timeout", "5s", "100ms", "5m", events_timeout),
    NUM(KT_DURATION, "events", "max_age", "24h", "1m", "30d", events_max_age),
};
#define N_KEYS (sizeof keys / sizeof keys[0])

#define RDKAFKA_PREFIX "rdkafka."

/* State of one load: the input, the line counter, the first error. */
struct load {
    const char *name;
    FILE *fp;         /* file input, or */
    const char *text; /* string input */
    size_t pos;
    char buf[4096]; /* current line of a file, cut at its size */
    size_t total;   /* bytes of the file read so far */
    int line;       /* physical line the parser is on */
    int read_errno; /* set when reading the file failed */
    int err_line;   /* line of the first error; 0 with failed: no line */
    bool failed;
    char err[512];    /* first error, without the "file:line: " prefix */
    int seen[N_KEYS]; /* line each key was set on, 0: default */
    struct co_config *cfg;
    rd_kafka_conf_t *rdconf; /* scratch conf to validate rdkafka.* early */
};

/* --------------------------------------------------------------- errors -- */

/* Record the first error of a load, at LINE (0: none applies); returns -1. */
static int fail_at(struct load *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_at(struct load *ld, int line, const char *fmt, ...)
{
    va_list ap;
    if (ld->failed)
        return -1;
    ld->failed = true;
    ld->err_line = line;
    va_start(ap, fmt);
    vsnprintf(ld->err, sizeof ld->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* ------------------------------------------------------- unit parsers -- */

static const char *skip_space(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

/* Length of S without trailing whitespace. */
static size_t trimmed_len(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    return n;
}

/*
 * Parse the unsigned decimal at *S ("12" or "1.5"); advance *S past it.
 * Digits are accumulated by hand so the result does not depend on the
 * locale's decimal point, as strtod's would.
 */
static int parse_decimal(const char **s, bool allow_fraction, double *out, char *err, size_t n)
{
    const char *p = *s, *first;
    double v = 0, frac = 0, scale = 1;

    while (*p == '0' && isdigit((unsigned char)p[1]))
        p++; /* leading zeros do not count towards the limit below */
    for (first = p; isdigit((unsigned char)*p); p++)
        v = v * 10 + (*p - '0');
    if (p == *s) {
        co_seterr(err, n, "is not a number");
        return -1;
    }
    if (p - first > 15) { /* beyond what a double holds exactly */
        co_seterr(err, n, "is too large");
        return -1;
    }
    if (*p == '.') {
        if (!allow_fraction || !isdigit((unsigned char)p[1])) {
            co_seterr(err, n, allow_fraction ? "is not a number" : "is not a whole number");
            return -1;
        }
        /* one division at the end, so "0.3" is the double nearest 0.3 */
        for (p++; isdigit((unsigned char)*p); p++)
            if (scale < 1e15)
                frac = frac * 10 + (*p - '0'), scale *= 10;
    }
    *out = v + frac / scale;
    *s = p;
    return 0;
}

/* Leading checks shared by the unit parsers: empty or negative input. */
static int unit_prologue(const char **s, char *err, size_t n)
{
    *s = skip_space(*s);
    if (**s == '\0') {
        co_seterr(err, n, "is empty");
        return -1;
    }
    if (**s == '-') {
        co_seterr(err, n, "is negative");
        return -1;
    }
    return 0;
}

/* Copy the unit suffix at S (whitespace-trimmed) into U. */
static void unit_suffix(const char *s, char *u, size_t usize)
{
    size_t len;
    s = skip_space(s);
    len = trimmed_len(s);
    if (len >= usize)
        len = usize - 1;
    memcpy(u, s, len);
    u[len] = '\0';
}

int co_parse_duration(const char *s, double *seconds, char *err, size_t errlen)
{
    /* divisor for ms, so "100ms" is exactly the double nearest 0.1 */
    static const struct {
        const char *name;
        double mult, div;
    } units[] = {
        { "", 1, 1 },   { "ms", 1, 1000 }, { "s", 1, 1 },
        { "m", 60, 1 }, { "h", 3600, 1 },  { "d", 86400, 1 },
    };
    char u[24];
    double v;

    if (unit_prologue(&s, err, errlen) < 0 || parse_decimal(&s, true, &v, err, errlen) < 0)
        return -1;
    unit_suffix(s, u, sizeof u);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(u, units[i].name) != 0)
            continue;
        v = v * units[i].mult / units[i].div;
        if (v > CO_DURATION_MAX) {
            co_seterr(err, errlen, "is too large");
            return -1;
        }
        *seconds = v;
        return 0;
    }
    co_seterr(err, errlen, "has a bad unit \"%s\" (use ms, s, m, h or d)", u);
    return -1;
}

int co_parse_size(const char *s, size_t *bytes, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        size_t mult;
    } units[] = {
        { "", 1 },
        { "B", 1 },
        { "KiB", (size_t)1 << 10 },
        { "MiB", (size_t)1 << 20 },
        { "GiB", (size_t)1 << 30 },
    };
    char u[24];
    double v;

    if (unit_prologue(&s, err, errlen) < 0 || parse_decimal(&s, false, &v, err, errlen) < 0)
        return -1;
    unit_suffix(s, u, sizeof u);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(u, units[i].name) != 0)
            continue;
        /* v is a whole number below 10^15, exact in both double and size_t */
        if ((size_t)v > SIZE_MAX / units[i].mult) {
            co_seterr(err, errlen, "is too large");
            return -1;
        }
        *bytes = (size_t)v * units[i].mult;
        return 0;
    }
    co_seterr(err, errlen, "has a bad unit \"%s\" (use B, KiB, MiB or GiB)", u);
    return -1;
}

/* Parse a whole decimal integer, no unit. */
static int parse_int(const char *s, long long *out, char *err, size_t n)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *skip_space(end) != '\0' || isspace((unsigned char)*s)) {
        co_seterr(err, n, "is not an integer");
        return -1;
    }
    if (errno == ERANGE) {
        co_seterr(err, n, "is too large");
        return -1;
    }
    *out = v;
    return 0;
}

const char *co_log_level_name(enum co_log_level level)
{
    if ((unsigned)level < sizeof log_level_names / sizeof log_level_names[0] - 1)
        return log_level_names[level];
    return "unknown";
}

/* ---------------------------------------------------- string checks -- */

static int check_nonempty(const char *v, char *err, size_t n)
{
    if (*v != '\0')
        return 0;
    co_seterr(err, n, "must not be empty");
    return -1;
}

static int check_abs_path(const char *v, char *err, size_t n)
{
    /* the daemon chdirs to /, so a relative path would move under it */
    if (v[0] == '/')
        return 0;
    co_seterr(err, n, "\"%s\" is not an absolute path", v);
    return -1;
}

static int check_socket_path(const char *v, char *err, size_t n)
{
    if (check_abs_path(v, err, n) < 0)
        return -1;
    if (strlen(v) < sizeof(((struct sockaddr_un *)0)->sun_path))
        return 0;
    co_seterr(err, n, "\"%s\" is too long for a unix socket (at most %zu bytes)", v,
              sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    return -1;
}

static int check_log_target(const char *v, char *err, size_t n)
{
    if (strcmp(v, "stderr") == 0 || strcmp(v, "syslog") == 0 || v[0] == '/')
        return 0;
    co_seterr(err, n, "\"%s\" is not stderr, syslog or an absolute file path", v);
    return -1;
}

static int check_url(const char *v, char *err, size_t n)
{
    const char *host = NULL;
    if (strncmp(v, "http://", 7) == 0)
        host = v + 7;
    else if (strncmp(v, "https://", 8) == 0)
        host = v + 8;
    if (host == NULL || *host == '\0' || *host == '/') {
        co_seterr(err, n, "\"%s\" is not an http:// or https:// URL with a host", v);
        return -1;
    }
    if (strpbrk(v, " \t") != NULL) {
        co_seterr(err, n, "\"%s\" contains whitespace", v);
        return -1;
    }
    return 0;
}

/* Empty, or an http(s) URL. */
static int check_optional_url(const char *v, char *err, size_t n)
{
    return v[0] == '\0' ? 0 : check_url(v, err, n);
}

/* Empty, or one or two "whsec_<base64>" secrets (the second one signs too,
 * during a rotation).  The reason never quotes the value. */
static int check_events_secret(const char *v, char *err, size_t n)
{
    struct webhook_keys k;
    int rc = v[0] == '\0' ? 0 : webhook_keys_parse(v, &k, err, n);
    webhook_keys_clear(&k);
    return rc;
}

/* Optional (empty: no status lookups); else an http(s) URL template that
 * holds "{reference}" (DESIGN.md section 5, "Unknown outcomes"). */
static int check_status_url(const char *v, char *err, size_t n)
{
    if (v[0] == '\0')
        return 0;
    if (check_url(v, err, n) < 0)
        return -1;
    if (strstr(v, "{reference}") == NULL) {
        co_seterr(err, n, "\"%s\" does not contain {reference}", v);
        return -1;
    }
    return 0;
}

/* Kafka's own rule for topic names. */
static int check_topic(const char *v, char *err, size_t n)
{
    size_t len = strlen(v);
    if (len == 0 || len > 249 || strcmp(v, ".") == 0 || strcmp(v, "..") == 0 ||
        strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != len) {
        co_seterr(err, n, "\"%s\" is not a Kafka topic name (1-249 of [A-Za-z0-9._-])", v);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------ key setters -- */

static void *field(struct co_config *cfg, size_t off)
{
    return (char *)cfg + off;
}

static void free_secret(char *s)
{
    if (s != NULL)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

static void free_list(char **list, bool secret)
{
    if (list == NULL)
        return;
    for (char **p = list; *p != NULL; p++)
        secret ? free_secret(*p) : free(*p);
    free(list);
}

static int set_string(struct co_config *cfg, const struct key *k, const char *v, char *err,
                      size_t n)
{
    char **slot = field(cfg, k->off);
    if (k->check != NULL && k->check(v, err, n) < 0)
        return -1;
    char *copy = strdup(v);
    if (copy == NULL) {
        co_seterr(err, n, "out of memory");
        return -1;
    }
    (k->flags & KF_SECRET) ? free_secret(*slot) : free(*slot);
    *slot = copy;
    return 0;
}

/* Parse V as K's numeric type, as a double for the range check. */
static int parse_number(const struct key *k, const char *v, double *out, char *err, size_t n)
{
    long long i;
    size_t z;
    switch (k->type) {
    case KT_INT:
        if (parse_int(v, &i, err, n) < 0)
            return -1;
        *out = (double)i;
        return 0;
    case KT_SIZE:
        if (co_parse_size(v, &z, err, n) < 0)
            return -1;
        *out = (double)z;
        return 0;
    default: return co_parse_duration(v, out, err, n);
    }
}

static int set_number(struct co_config *cfg, const struct key *k, const char *v, char *err,
                      size_t n)
{
    double d, lo, hi;
    char why[128];

    if (parse_number(k, v, &d, why, sizeof why) < 0) {
        co_seterr(err, n, "\"%s\" %s", v, why);
        return -1;
    }
    /* the bounds are strings in the table, read by the same parser */
    if (parse_number(k, k->min, &lo, why, sizeof why) < 0 ||
        parse_number(k, k->max, &hi, why, sizeof why) < 0) {
        co_seterr(err, n, "bad range in the key table: %s", why);
        return -1;
    }
    if (d < lo || d > hi) {
        co_seterr(err, n, "\"%s\" is out of range (%s..%s)", v, k->min, k->max);
        return -1;
    }
    if (k->type == KT_INT)
        *(int *)field(cfg, k->off) = (int)d;
    else if (k->type == KT_SIZE)
        *(size_t *)field(cfg, k->off) = (size_t)d;
    else
        *(double *)field(cfg, k->off) = d;
    return 0;
}

static int set_enum(struct co_config *cfg, const struct key *k, const char *v, char *err, size_t n)
{
    char names[128] = "";
    for (int i = 0; k->choices[i] != NULL; i++) {
        if (strcmp(v, k->choices[i]) == 0) {
            *(int *)field(cfg, k->off) = i;
            return 0;
        }
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? " | " : "",
                 k->choices[i]);
    }
    co_seterr(err, n, "\"%s\" is not one of %s", v, names);
    return -1;
}

/*
 * Cut the comma-separated list at *S into its next trimmed item in ITEM;
 * advance *S and set *MORE when a comma follows (so "a," has an empty last
 * item).  Returns the item's length, or -1 when it does not fit.
 */
static int next_item(const char **s, char *item, size_t size, bool *more)
{
    const char *p = skip_space(*s);
    const char *comma = strchr(p, ',');
    size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
    *s = comma != NULL ? comma + 1 : p + len;
    *more = comma != NULL;
    while (len > 0 && isspace((unsigned char)p[len - 1]))
        len--;
    if (len >= size)
        return -1;
    memcpy(item, p, len);
    item[len] = '\0';
    return (int)len;
}

/* Check and store the port of a listen item: decimal 1..65535. */
static int parse_port(const char *item, const char *p, struct co_listen *out, char *err, size_t n)
{
    size_t len = strlen(p);
    long port = 0;
    if (len == 0 || len > 5 || strspn(p, "0123456789") != len) {
        co_seterr(err, n, "\"%s\" has no valid port (host:port, port 1..65535)", item);
        return -1;
    }
    port = strtol(p, NULL, 10);
    if (port < 1 || port > 65535) {
        co_seterr(err, n, "\"%s\" has a port out of range (1..65535)", item);
        return -1;
    }
    snprintf(out->port, sizeof out->port, "%ld", port);
    return 0;
}

#define HOST_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_"

/* One "host:port" or "[v6]:port". */
static int parse_listen_item(const char *item, struct co_listen *out, char *err, size_t n)
{
    const char *host = item, *end, *port;
    unsigned char v6[16];

    if (*item == '[') {
        host = item + 1;
        end = strchr(host, ']');
        if (end == NULL || end[1] != ':') {
            co_seterr(err, n, "\"%s\" is not [IPv6]:port", item);
            return -1;
        }
        port = end + 2;
    } else {
        end = strrchr(item, ':');
        if (end == NULL) {
            co_seterr(err, n, "\"%s\" has no port (host:port)", item);
            return -1;
        }
        if (memchr(item, ':', (size_t)(end - item)) != NULL) {
            co_seterr(err, n, "\"%s\": put an IPv6 address in brackets, as in [::1]:8080", item);
            return -1;
        }
        port = end + 1;
    }
    if (end == host || (size_t)(end - host) >= sizeof out->host) {
        co_seterr(err, n, "\"%s\" has an empty or too long host", item);
        return -1;
    }
    memcpy(out->host, host, (size_t)(end - host));
    out->host[end - host] = '\0';
    if (*item == '[' && inet_pton(AF_INET6, out->host, v6) != 1) {
        co_seterr(err, n, "\"%s\" is not an IPv6 address in brackets", item);
        return -1;
    }
    if (*item != '[' && strspn(out->host, HOST_CHARS) != strlen(out->host)) {
        co_seterr(err, n, "\"%s\" has a host that is not a name or an IPv4 address", item);
        return -1;
    }
    return parse_port(item, port, out, err, n);
}

/* Is ITEM (just parsed into TMP[COUNT]) already in TMP? */
static bool listen_dup(const struct co_listen *tmp, int count)
{
    for (int i = 0; i < count; i++)
        if (strcmp(tmp[i].host, tmp[count].host) == 0 && strcmp(tmp[i].port, tmp[count].port) == 0)
            return true;
    return false;
}

static int set_listen(struct co_config *cfg, const struct key *k, const char *v, char *err,
                      size_t n)
{
    struct co_listen tmp[CO_MAX_LISTEN];
    char item[300];
    int count = 0, len;
    bool more = true;

    while (more) {
        if ((len = next_item(&v, item, sizeof item, &more)) <= 0) {
            co_seterr(err, n, "address %d is %s (host:port, comma-separated)", count + 1,
                      len == 0 ? "empty" : "too long");
            return -1;
        }
        if (count == CO_MAX_LISTEN) {
            co_seterr(err, n, "more than %d addresses", CO_MAX_LISTEN);
            return -1;
        }
        if (parse_listen_item(item, &tmp[count], err, n) < 0)
            return -1;
        if (listen_dup(tmp, count)) {
            co_seterr(err, n, "\"%s\" is listed twice", item);
            return -1;
        }
        count++;
    }
    memcpy(field(cfg, k->off), tmp, sizeof tmp[0] * (size_t)count);
    *(int *)field(cfg, k->off_n) = count;
    return 0;
}

/* Append a copy of ITEM to the NULL-terminated *LIST of *COUNT entries. */
static int list_push(char ***list, int *count, const char *item)
{
    char **grown = realloc(*list, sizeof *grown * (size_t)(*count + 2));
    if (grown == NULL)
        return -1;
    *list = grown;
    if ((grown[*count] = strdup(item)) == NULL)
        return -1; /* the list is still NULL-terminated */
    grown[++*count] = NULL;
    return 0;
}

/* Split V into a new NULL-terminated list of tokens; "" is an empty list. */
static char **split_tokens(const char *v, int *count, char *err, size_t n)
{
    char **list = calloc(1, sizeof *list);
    char item[256];
    int len = 0;
    bool more = *skip_space(v) != '\0', failed = list == NULL;

    *count = 0;
    while (!failed && more) {
        len = next_item(&v, item, sizeof item, &more);
        if (len <= 0 || strpbrk(item, " \t") != NULL) {
            co_seterr(err, n, "item %d is %s", *count + 1,
                      len == 0  ? "empty"
                      : len < 0 ? "too long"
                                : "not a single token");
            failed = true;
        } else if (list_push(&list, count, item) < 0) {
            co_seterr(err, n, "out of memory");
            failed = true;
        }
    }
    OPENSSL_cleanse(item, sizeof item);
    if (!failed)
        return list;
    if (list == NULL)
        co_seterr(err, n, "out of memory");
    free_list(list, true);
    return NULL;
}

static int set_keylist(struct co_config *cfg, const struct key *k, const char *v, char *err,
                       size_t n)
{
    int count;
    char **list = split_tokens(v, &count, err, n);
    if (list == NULL)
        return -1;
    free_list(*(char ***)field(cfg, k->off), true);
    *(char ***)field(cfg, k->off) = list;
    *(int *)field(cfg, k->off_n) = count;
    return 0;
}

/* Parse V into K's field of CFG; on error write the reason (no prefix). */
static int set_key(struct co_config *cfg, const struct key *k, const char *v, char *err, size_t n)
{
    switch (k->type) {
    case KT_STRING: return set_string(cfg, k, v, err, n);
    case KT_ENUM: return set_enum(cfg, k, v, err, n);
    case KT_LISTEN: return set_listen(cfg, k, v, err, n);
    case KT_KEYLIST: return set_keylist(cfg, k, v, err, n);
    default: return set_number(cfg, k, v, err, n);
    }
}

/* ------------------------------------------------------- the handler -- */

static const struct key *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static bool section_known(const char *section)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].section, section) == 0)
            return true;
    return false;
}

static bool has_control_char(const char *s)
{
    for (; *s != '\0'; s++)
        if (iscntrl((unsigned char)*s))
            return true;
    return false;
}

/* Properties the daemon sets itself from its own keys. */
static const char *rdkafka_owned(const char *prop)
{
    if (strcmp(prop, "bootstrap.servers") == 0 || strcmp(prop, "metadata.broker.list") == 0)
        return "brokers";
    if (strcmp(prop, "group.id") == 0)
        return "group_id";
    return NULL;
}

/*
 * [kafka] rdkafka.<property> = value: kept for librdkafka, and tried on a
 * scratch conf now so that a typo fails "callorchd -t", not a kafka child.
 */
static int add_rdkafka(struct load *ld, const char *name, const char *value)
{
    const char *prop = name + strlen(RDKAFKA_PREFIX), *own;
    struct co_config *cfg = ld->cfg;
    char why[256];

    if (*prop == '\0')
        return fail_at(ld, ld->line, "[kafka] %s: empty librdkafka property name", name);
    if ((own = rdkafka_owned(prop)) != NULL)
        return fail_at(ld, ld->line, "[kafka] %s: set [kafka] %s instead", name, own);
    for (int i = 0; i < cfg->n_rdkafka_props; i++)
        if (strcmp(cfg->rdkafka_props[i].name, prop) == 0)
            return fail_at(ld, ld->line, "[kafka] %s: duplicate key", name);
    if (ld->rdconf == NULL && (ld->rdconf = rd_kafka_conf_new()) == NULL)
        return fail_at(ld, ld->line, "out of memory");
    /* setting plugin.library.paths loads the plugins: leave that to the kafka child */
    if (strcmp(prop, "plugin.library.paths") != 0 &&
        rd_kafka_conf_set(ld->rdconf, prop, value, why, sizeof why) != RD_KAFKA_CONF_OK)
        return fail_at(ld, ld->line, "[kafka] %s: librdkafka: %s", name, why);

    struct co_kv *grown =
        realloc(cfg->rdkafka_props, sizeof *grown * (size_t)(cfg->n_rdkafka_props + 1));
    if (grown == NULL)
        return fail_at(ld, ld->line, "out of memory");
    cfg->rdkafka_props = grown;
    grown[cfg->n_rdkafka_props].name = strdup(prop);
    grown[cfg->n_rdkafka_props].value = strdup(value);
    cfg->n_rdkafka_props++; /* counted even half-built, so free sees it */
    if (grown[cfg->n_rdkafka_props - 1].name == NULL ||
        grown[cfg->n_rdkafka_props - 1].value == NULL)
        return fail_at(ld, ld->line, "out of memory");
    return 0;
}

/* Store one key = value of the file. */
static int on_key_value(struct load *ld, const char *section, const char *name, const char *value)
{
    char why[400];
    const struct key *k;

    if (*section == '\0')
        return fail_at(ld, ld->line,
                       "\"%s\" is outside any section (add a [section] line above it)", name);
    if (!section_known(section))
        return fail_at(ld, ld->line, "unknown section [%s]", section);
    if (has_control_char(value))
        return fail_at(ld, ld->line, "[%s] %s: value contains a control character", section, name);
    if (strcmp(section, "kafka") == 0 && strncmp(name, RDKAFKA_PREFIX, strlen(RDKAFKA_PREFIX)) == 0)
        return add_rdkafka(ld, name, value);
    if ((k = find_key(section, name)) == NULL)
        return fail_at(ld, ld->line, "unknown key \"%s\" in [%s]", name, section);
    if (ld->seen[k - keys] != 0)
        return fail_at(ld, ld->line, "[%s] %s: duplicate key (first set on line %d)", section, name,
                       ld->seen[k - keys]);
    ld->seen[k - keys] = ld->line;
    if (*value == '\0' && k->type != KT_STRING && k->type != KT_KEYLIST)
        return fail_at(ld, ld->line, "[%s] %s: empty value", section, name);
    int rc = set_key(ld->cfg, k, value, why, sizeof why);
    /* a reason that quotes a secret would put it in the logs */
    if (rc < 0 && (k->flags & KF_SECRET) && *value != '\0' && strstr(why, value) != NULL)
        snprintf(why, sizeof why, "invalid value");
    if (rc < 0)
        fail_at(ld, ld->line, "[%s] %s: %s", section, name, why);
    OPENSSL_cleanse(why, sizeof why);
    return rc;
}

/* inih's handler: never stops the parse, the first error is kept in LD. */
static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct load *ld = user;
    if (!ld->failed)
        (void)on_key_value(ld, section, name, value);
    return 1;
}

/* -------------------------------------------------------- the reader -- */

/*
 * Next line of the file into ld->buf, cut at its size (longer lines are
 * errors anyway).  The size cap keeps "-c /dev/zero" from spinning forever.
 */
static bool next_file_line(struct load *ld, const char **line, size_t *len)
{
    size_t n = 0;
    int c;

    while ((c = getc(ld->fp)) != EOF && c != '\n') {
        if (++ld->total > CO_MAX_FILE_BYTES) {
            fail_at(ld, ld->line + 1, "file is larger than %d bytes", CO_MAX_FILE_BYTES);
            return false;
        }
        if (n < sizeof ld->buf)
            ld->buf[n++] = (char)c;
    }
    if (c == EOF && ferror(ld->fp))
        ld->read_errno = errno;
    if (c == EOF && n == 0)
        return false;
    *line = ld->buf;
    *len = n;
    return true;
}

/* Next physical line of the input, without its newline; false at the end. */
static bool next_line(struct load *ld, const char **line, size_t *len)
{
    const char *p, *nl;

    if (ld->fp != NULL)
        return next_file_line(ld, line, len);
    p = ld->text + ld->pos;
    if (*p == '\0')
        return false;
    nl = strchr(p, '\n');
    *line = p;
    *len = nl != NULL ? (size_t)(nl - p) + 1 : strlen(p);
    ld->pos += *len;
    if (*len > 0 && (*line)[*len - 1] == '\n')
        (*len)--;
    return true;
}

/*
 * A "[section]" line: inih only reports sections through their keys, so an
 * unknown section with no keys would otherwise pass unnoticed.
 */
static int check_section_line(struct load *ld, const char *line)
{
    const char *end = strchr(line, ']');
    if (line[0] != '[' || end == NULL)
        return 0; /* a key line, or a syntax error inih reports */
    const char *rest = skip_space(end + 1);
    if (*rest != '\0' && *rest != ';' && *rest != '#')
        return fail_at(ld, ld->line, "unexpected text after \"]\"");
    char name[64];
    size_t len = (size_t)(end - line - 1);
    snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), line + 1);
    return section_known(name) ? 0 : fail_at(ld, ld->line, "unknown section [%s]", name);
}

/*
 * inih's ini_reader, counting lines so the handler knows where it is.  Each
 * line is handed over without leading whitespace: inih would take an
 * indented line for the continuation of the previous value, which no key
 * here wants.  A line too long for inih's buffer is an error, not split.
 */
static char *reader(char *dst, int num, void *stream)
{
    struct load *ld = stream;
    const char *line;
    size_t len;

    if (!next_line(ld, &line, &len))
        return NULL;
    ld->line++;
    if (ld->line == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
        line += 3, len -= 3; /* UTF-8 BOM: "[section]" must come first */
    if (memchr(line, '\0', len) != NULL) {
        fail_at(ld, ld->line, "line contains a NUL byte");
        len = 0;
    }
    while (len > 0 && isspace((unsigned char)*line))
        line++, len--;
    while (len > 0 && isspace((unsigned char)line[len - 1]))
        len--;
    if (len + 1 > (size_t)num) {
        fail_at(ld, ld->line, "line too long (at most %d characters)", num - 1);
        len = 0;
    }
    memcpy(dst, line, len);
    dst[len] = '\0';
    (void)check_section_line(ld, dst);
    return dst;
}

/* --------------------------------------------------- whole-file checks -- */

/* Check one callback_secret item for AUTH mode and store its key. */
static int store_callback_key(struct co_config *cfg, const char *item, int i, char *err, size_t n)
{
    int len;
    if (cfg->callback_auth == CO_AUTH_HMAC) {
        if (strncmp(item, "whsec_", 6) != 0) {
            co_seterr(err, n, "secret %d does not start with \"whsec_\"", i + 1);
            return -1;
        }
        if ((len = webhook_secret_decode(item, strlen(item), cfg->callback_keys[i],
                                         CO_MAX_CALLBACK_KEY_BYTES)) < 0) {
            co_seterr(err, n, "secret %d is not valid base64 after \"whsec_\" (or over %d bytes)",
                      i + 1, CO_MAX_CALLBACK_KEY_BYTES);
            return -1;
        }
    } else {
        len = (int)strlen(item);
        if (strpbrk(item, " \t") != NULL) {
            co_seterr(err, n, "token %d contains whitespace", i + 1);
            return -1;
        }
        if (len > CO_MAX_CALLBACK_KEY_BYTES) {
            co_seterr(err, n, "token %d is longer than %d characters", i + 1,
                      CO_MAX_CALLBACK_KEY_BYTES);
            return -1;
        }
        memcpy(cfg->callback_keys[i], item, (size_t)len);
    }
    if (len < CO_MIN_CALLBACK_KEY_BYTES) {
        co_seterr(err, n, "%s %d is %d %s, at least %d are needed",
                  cfg->callback_auth == CO_AUTH_HMAC ? "secret" : "token", i + 1, len,
                  cfg->callback_auth == CO_AUTH_HMAC ? "bytes once decoded" : "characters",
                  CO_MIN_CALLBACK_KEY_BYTES);
        return -1;
    }
    cfg->callback_key_len[i] = (size_t)len;
    return 0;
}

/* Split callback_secret (1 or 2 items) into cfg->callback_keys. */
static int parse_callback_secret(struct co_config *cfg, char *err, size_t n)
{
    const char *v = cfg->callback_secret;
    char item[CO_MAX_CALLBACK_KEY_BYTES * 2];
    int rc = 0, len;
    bool more = true;

    cfg->n_callback_keys = 0;
    while (rc == 0 && more) {
        if (cfg->n_callback_keys == CO_MAX_CALLBACK_KEYS) {
            co_seterr(err, n, "more than %d secrets (current, previous)", CO_MAX_CALLBACK_KEYS);
            rc = -1;
        } else if ((len = next_item(&v, item, sizeof item, &more)) <= 0) {
            co_seterr(err, n, "secret %d is %s", cfg->n_callback_keys + 1,
                      len ? "too long" : "empty");
            rc = -1;
        } else if ((rc = store_callback_key(cfg, item, cfg->n_callback_keys, err, n)) == 0) {
            cfg->n_callback_keys++;
        }
    }
    OPENSSL_cleanse(item, sizeof item);
    return rc;
}

/*
 * The placeholder values of the shipped etc/callorch.ini (DESIGN.md section
 * 6): public, so a configuration that still holds one is refused.  The
 * package's postinst replaces the same strings on a first installation.
 */
static const struct {
    const char *section, *name, *value, *what;
} placeholders[] = {
    { "http", "api_keys", "PLACEHOLDER-CHANGE-ME-client-api-key", "key" },
    { "provider", "callback_secret", "whsec_PLACEHOLDERxCHANGExMExPLACEHOLDERxCHANGExMEx",
      "secret" },
};

/* True when one comma-separated item of the list V is exactly PLACEHOLDER. */
static bool holds_placeholder(const char *v, const char *placeholder)
{
    char item[256];
    bool more = v != NULL && *v != '\0', found = false;
    while (!found && more)
        found = next_item(&v, item, sizeof item, &more) >= 0 && strcmp(item, placeholder) == 0;
    OPENSSL_cleanse(item, sizeof item);
    return found;
}

static int key_line(const struct load *ld, const char *section, const char *name)
{
    const struct key *k = find_key(section, name);
    return k != NULL ? ld->seen[k - keys] : 0;
}

static int max_line(int a, int b)
{
    return a > b ? a : b;
}

/* Checks that need the whole file: required keys, keys bound to others. */
static int check_whole(struct load *ld)
{
    struct co_config *cfg = ld->cfg;
    char why[256];

    if (cfg->callback_secret == NULL)
        return fail_at(ld, 0, "[provider] callback_secret is required");
    for (size_t i = 0; i < sizeof placeholders / sizeof placeholders[0]; i++) {
        const struct key *k = find_key(placeholders[i].section, placeholders[i].name);
        bool found = false;
        if (k->type == KT_KEYLIST) {
            char **list = *(char ***)field(cfg, k->off);
            for (int j = 0; !found && j < *(int *)field(cfg, k->off_n); j++)
                found = strcmp(list[j], placeholders[i].value) == 0;
        } else {
            found = holds_placeholder(*(char **)field(cfg, k->off), placeholders[i].value);
        }
        if (found)
            return fail_at(ld, ld->seen[k - keys],
                           "[%s] %s: still the shipped placeholder; set your own %s", k->section,
                           k->name, placeholders[i].what);
    }
    if (parse_callback_secret(cfg, why, sizeof why) < 0)
        return fail_at(ld,
                       max_line(key_line(ld, "provider", "callback_secret"),
                                key_line(ld, "provider", "callback_auth")),
                       "[provider] callback_secret (callback_auth = %s): %s",
                       auth_names[cfg->callback_auth], why);
    if (cfg->max_metadata_bytes > cfg->max_body)
        return fail_at(
            ld,
            max_line(key_line(ld, "http", "max_metadata_bytes"), key_line(ld, "http", "max_body")),
            "[http] max_metadata_bytes (%zu) is larger than max_body (%zu)",
            cfg->max_metadata_bytes, cfg->max_body);
    if (cfg->backoff_max < cfg->backoff_base)
        return fail_at(ld,
                       max_line(key_line(ld, "dispatch", "backoff_max"),
                                key_line(ld, "dispatch", "backoff_base")),
                       "[dispatch] backoff_max (%gs) is smaller than backoff_base (%gs)",
                       cfg->backoff_max, cfg->backoff_base);
    if (cfg->events_url[0] != '\0' && cfg->events_secret[0] == '\0')
        return fail_at(ld,
                       max_line(key_line(ld, "events", "url"), key_line(ld, "events", "secret")),
                       "[events] secret is required when [events] url is set");
    derive_rules(cfg);
    /* webhookUrl is public_base_url + "/api/v1/...": no doubled slash */
    size_t len = strlen(cfg->public_base_url);
    while (len > 0 && cfg->public_base_url[len - 1] == '/')
        cfg->public_base_url[--len] = '\0';
    return 0;
}

/* ------------------------------------------------ compliance and retry -- */

static int check_hours(const char *v, char *err, size_t n)
{
    struct window w;
    return window_parse_hours(v, &w, err, n);
}

static int check_days(const char *v, char *err, size_t n)
{
    unsigned days;
    return window_parse_days(v, &days, err, n);
}

/* "never", "backoff" or a duration of at least 1 s: *seconds as in
 * co_retry_rule(). */
static int parse_retry_rule(const char *v, double *seconds, char *err, size_t n)
{
    if (strcmp(v, "never") == 0) {
        *seconds = CO_RETRY_NEVER;
        return 0;
    }
    if (strcmp(v, "backoff") == 0) {
        *seconds = CO_RETRY_BACKOFF;
        return 0;
    }
    if (co_parse_duration(v, seconds, err, n) < 0 || *seconds < 1 || *seconds > 3650 * 86400.) {
        co_seterr(err, n, "\"%s\" is not \"never\", \"backoff\" or a duration from 1s to 3650d", v);
        return -1;
    }
    return 0;
}

static int check_retry_rule(const char *v, char *err, size_t n)
{
    double s;
    return parse_retry_rule(v, &s, err, n);
}

static const char *const outcome_statuses[CO_OUTCOME_N] = {
    "FAILED", "BUSY", "NO_ANSWER", "VOICEMAIL", "REJECTED", "INVALID_NUMBER", "TIMEOUT",
};

int co_outcome_from_status(const char *status)
{
    for (int i = 0; status != NULL && i < CO_OUTCOME_N; i++)
        if (strcmp(status, outcome_statuses[i]) == 0)
            return i;
    return -1;
}

double co_retry_rule(const struct co_config *cfg, enum co_outcome outcome)
{
    return cfg->retry_delay[outcome];
}

/* The parsed forms of [compliance] and [retry]: their checks passed, so
 * these parse. */
static void derive_rules(struct co_config *cfg)
{
    char why[256];
    if (window_parse(cfg->calling_hours, cfg->calling_days, &cfg->calling_window, why, sizeof why) <
        0)
        window_always(&cfg->calling_window);
    for (int i = 0; i < CO_OUTCOME_N; i++)
        if (parse_retry_rule(cfg->retry_rule[i], &cfg->retry_delay[i], why, sizeof why) < 0)
            cfg->retry_delay[i] = CO_RETRY_BACKOFF;
}

/* ----------------------------------------------------------- loading -- */

static void apply_defaults(struct load *ld)
{
    char why[256];
    for (size_t i = 0; i < N_KEYS && !ld->failed; i++)
        if (keys[i].def != NULL && set_key(ld->cfg, &keys[i], keys[i].def, why, sizeof why) < 0)
            fail_at(ld, 0, "built-in default of [%s] %s: %s", keys[i].section, keys[i].name, why);
}

/* Parse the input set up in LD; the config is in ld->cfg unless ld->failed. */
static void parse_input(struct load *ld)
{
    int rc = ini_parse_stream(reader, ld, handler, ld);
    if (rc > 0 && (!ld->failed || rc < ld->err_line)) {
        ld->failed = false; /* an earlier syntax error wins */
        fail_at(ld, rc, "syntax error: expected \"[section]\" or \"key = value\"");
    } else if (rc < 0) {
        fail_at(ld, 0, "out of memory");
    }
}

static void format_error(const struct load *ld, char *err, size_t errlen)
{
    if (ld->err_line > 0)
        co_seterr(err, errlen, "%s:%d: %s", ld->name, ld->err_line, ld->err);
    else
        co_seterr(err, errlen, "%s: %s", ld->name, ld->err);
}

/* Run a load whose input is set up in LD; common to files and strings. */
static int load(struct load *ld, struct co_config **out, char *err, size_t errlen)
{
    ld->cfg = calloc(1, sizeof *ld->cfg);
    if (ld->cfg == NULL || (ld->cfg->file = strdup(ld->name)) == NULL) {
        co_seterr(err, errlen, "%s: out of memory", ld->name);
        co_config_free(ld->cfg);
        return -1;
    }
    apply_defaults(ld);
    if (!ld->failed)
        parse_input(ld);
    if (!ld->failed && ld->read_errno != 0)
        fail_at(ld, 0, "cannot read: %s", strerror(ld->read_errno));
    if (!ld->failed)
        (void)check_whole(ld);
    if (ld->rdconf != NULL)
        rd_kafka_conf_destroy(ld->rdconf);
    OPENSSL_cleanse(ld->buf, sizeof ld->buf);
    if (ld->failed) {
        format_error(ld, err, errlen);
        co_config_free(ld->cfg);
        return -1;
    }
    *out = ld->cfg;
    return 0;
}

int co_config_load(const char *path, struct co_config **out, char *err, size_t errlen)
{
    struct load ld = { .name = path };
    int rc;

    if ((ld.fp = fopen(path, "re")) == NULL) {
        co_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    rc = load(&ld, out, err, errlen);
    fclose(ld.fp);
    return rc;
}

int co_config_load_string(const char *name, const char *text, struct co_config **out, char *err,
                          size_t errlen)
{
    struct load ld = { .name = name, .text = text };
    return load(&ld, out, err, errlen);
}

/* KEY's value in CFG as text, lists joined with commas: to compare and show. */
static void value_text(const struct co_config *cfg, const struct key *k, struct strbuf *b)
{
    const void *f = (const char *)cfg + k->off;
    int n = k->off_n != 0 ? *(const int *)(const void *)((const char *)cfg + k->off_n) : 0;

    switch (k->type) {
    case KT_STRING: strbuf_adds(b, *(char *const *)f); break;
    case KT_INT: strbuf_addf(b, "%d", *(const int *)f); break;
    case KT_ENUM: strbuf_adds(b, k->choices[*(const int *)f]); break;
    case KT_DURATION: strbuf_addf(b, "%gs", *(const double *)f); break;
    case KT_SIZE: strbuf_addf(b, "%zuB", *(const size_t *)f); break;
    case KT_LISTEN:
        for (int i = 0; i < n; i++)
            strbuf_addf(b, "%s%s:%s", i ? "," : "", ((const struct co_listen *)f)[i].host,
                        ((const struct co_listen *)f)[i].port);
        break;
    case KT_KEYLIST:
        for (int i = 0; i < n; i++)
            strbuf_addf(b, "%s%s", i ? "," : "", (*(char **const *)f)[i]);
        break;
    }
}

int co_config_restart_changes(const struct co_config *running, const struct co_config *loaded,
                              co_config_change_fn *fn, void *arg)
{
    int changed = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        if (!(k->flags & KF_RESTART))
            continue;
        struct strbuf was = { 0 }, now = { 0 };
        value_text(running, k, &was);
        value_text(loaded, k, &now);
        if (was.failed || now.failed || strcmp(was.p ? was.p : "", now.p ? now.p : "") != 0) {
            char name[64];
            snprintf(name, sizeof name, "%s.%s", k->section, k->name);
            bool hide = k->flags & KF_SECRET;
            fn(arg, name,
               hide    ? "(secret)"
               : was.p ? was.p
                       : "",
               hide    ? "(secret)"
               : now.p ? now.p
                       : "");
            changed++;
        }
        strbuf_free(&was);
        strbuf_free(&now);
    }
    return changed;
}

void co_config_free(struct co_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        bool secret = keys[i].flags & KF_SECRET;
        if (keys[i].type == KT_STRING)
            secret ? free_secret(*(char **)field(cfg, keys[i].off))
                   : free(*(char **)field(cfg, keys[i].off));
        else if (keys[i].type == KT_KEYLIST)
            free_list(*(char ***)field(cfg, keys[i].off), secret);
    }
    for (int i = 0; i < cfg->n_rdkafka_props; i++) {
        free(cfg->rdkafka_props[i].name);
        free_secret(cfg->rdkafka_props[i].value); /* may be sasl.password */
    }
    free(cfg->rdkafka_props);
    free(cfg->file);
    OPENSSL_cleanse(cfg, sizeof *cfg);
    free(cfg);
}
