/*
 * config.h — the callorch.ini loader.
 *
 * Owns: the one declarative table of sections and keys (DESIGN.md section 6),
 * their defaults, units and ranges, and the immutable struct co_config that
 * every other module reads.  A config is built whole and validated before it
 * is used; a reload builds a new one and swaps it, or keeps the old one.
 */
#ifndef CO_CONFIG_H
#define CO_CONFIG_H

#include <stddef.h>

#include "compliance/window.h"
#include "util/log.h"

#define CO_MAX_LISTEN 16
#define CO_MAX_HTTP_WORKERS 64        /* [http] workers' upper bound (the key table's range) */
#define CO_MAX_CALLBACK_KEYS 2        /* current + previous, for rotation */
#define CO_MAX_CALLBACK_KEY_BYTES 128 /* decoded HMAC key or api-key token */

enum co_callback_auth { CO_AUTH_HMAC = 0, CO_AUTH_API_KEY };

/* [compliance] unknown_timezone: what a number without zone data gets. */
enum co_unknown_tz { CO_UNKNOWN_TZ_UTC = 0, CO_UNKNOWN_TZ_SKIP };

/* The outcomes that [retry] has a rule for (DESIGN.md section 9), in the
 * order of co_outcome_names. */
enum co_outcome {
    CO_OUTCOME_FAILED,
    CO_OUTCOME_BUSY,
    CO_OUTCOME_NO_ANSWER,
    CO_OUTCOME_VOICEMAIL,
    CO_OUTCOME_REJECTED,
    CO_OUTCOME_INVALID_NUMBER,
    CO_OUTCOME_TIMEOUT, /* no webhook within call_timeout */
    CO_OUTCOME_N
};
#define CO_RETRY_NEVER (-1.0)  /* retry rule "never" */
#define CO_RETRY_BACKOFF (0.0) /* retry rule "backoff": the exponential rule */

struct co_listen {
    char host[256]; /* numeric or name; "[::1]" is stored as "::1" */
    char port[8];
};

struct co_kv {  /* an "rdkafka.<property>" pass-through */
    char *name; /* <property>, without the "rdkafka." prefix */
    char *value;
};

struct co_config {
    char *file; /* path it was loaded from */

    /* [daemon] */
    char *user;
    char *pid_file;
    char *control_socket;
    enum co_log_level log_level;
    char *log_target;        /* "stderr", "syslog" or a file path */
    double shutdown_timeout; /* seconds */

    /* [http] */
    struct co_listen listen[CO_MAX_LISTEN];
    int n_listen;
    int workers;
    int max_connections;
    size_t max_body;           /* bytes */
    size_t max_metadata_bytes; /* bytes */
    double idle_timeout;       /* seconds */
    char *public_base_url;
    char **api_keys; /* NULL-terminated; n_api_keys == 0: no auth */
    int n_api_keys;

    /* [postgres] */
    char *pg_conninfo;
    int pg_pool_size;

    /* [redis] */
    char *redis_host;
    int redis_port;
    char *redis_password; /* "" = none */
    int redis_db;
    char *redis_key_prefix;

    /* [kafka] */
    char *kafka_brokers;
    char *kafka_topic;
    char *kafka_group_id;
    int kafka_consumers;
    struct co_kv *rdkafka_props;
    int n_rdkafka_props;

    /* [dispatch] */
    int max_concurrent_calls;
    int max_attempts;
    double backoff_base; /* seconds */
    double backoff_max;
    double call_timeout;
    double scheduler_interval;
    double reconcile_interval; /* Redis leases checked against PostgreSQL */

    /* [provider] */
    char *provider_url;
    char *provider_api_key;
    double provider_timeout;
    char *provider_status_url; /* "" = no status lookups; else holds {reference} */
    enum co_callback_auth callback_auth;
    char *callback_secret;
    double signature_tolerance;
    int max_calls_per_second; /* starts in any second, all daemons; 0 = unpaced */

    /* [compliance] */
    char *calling_hours; /* as written; "" = any time of day */
    char *calling_days;
    struct window calling_window; /* both parsed, at load time */
    enum co_unknown_tz unknown_timezone;
    int max_attempts_per_number; /* 0 = no cap */
    double attempts_period;      /* seconds */
    char *timezone_prefixes;     /* the tzprefix data file */

    /* [retry]: each outcome's rule as written, and parsed at load time into
     * seconds: CO_RETRY_NEVER, CO_RETRY_BACKOFF or a fixed delay > 0 */
    char *retry_rule[CO_OUTCOME_N];
    double retry_delay[CO_OUTCOME_N];

    /* [retention], seconds; finished_calls 0 = keep forever */
    double retain_webhook_events;
    double retain_idempotency_keys;
    double retain_finished_calls;

    /* [events] (DESIGN.md section 10): client events */
    char *events_url;      /* "" = none: only calls and campaigns with their own URL */
    char *events_secret;   /* "" or one or two comma-separated whsec_<base64> */
    double events_timeout; /* seconds, one delivery try */
    double events_max_age; /* seconds an event is retried after it was created */

    /*
     * callback_secret split at commas and checked at load time, so the
     * webhook code never parses it: with hmac the base64-decoded HMAC keys
     * (after "whsec_"), with api-key the tokens as written.  The first one
     * is the current secret; a second one is accepted during a rotation.
     */
    unsigned char callback_keys[CO_MAX_CALLBACK_KEYS][CO_MAX_CALLBACK_KEY_BYTES];
    size_t callback_key_len[CO_MAX_CALLBACK_KEYS];
    int n_callback_keys;
};

/*
 * Load and validate PATH.  On success returns 0 and sets *out (free with
 * co_config_free).  On failure returns -1, leaves *out unchanged and writes
 * "file:line: message" (or "file: message" when no line applies) into err.
 * Only the first error is reported.
 */
int co_config_load(const char *path, struct co_config **out, char *err, size_t errlen);

/* Load from an in-memory string; NAME is used in messages.  For tests. */
int co_config_load_string(const char *name, const char *text, struct co_config **out, char *err,
                          size_t errlen);

void co_config_free(struct co_config *cfg);

/*
 * A reload applies every key except those the key table marks as needing a
 * restart (callorch.ini(5) says which).  Calls FN(ARG, "section.key",
 * running value, configured value) for each of those whose value differs
 * between RUNNING and LOADED (a secret's values shown as "(secret)");
 * returns how many differ.
 */
typedef void co_config_change_fn(void *arg, const char *key, const char *running,
                                 const char *configured);
int co_config_restart_changes(const struct co_config *running, const struct co_config *loaded,
                              co_config_change_fn *fn, void *arg);

/* Unit parsers, exported for tests.  Return 0 or -1 (with a reason in err). */
int co_parse_duration(const char *s, double *seconds, char *err, size_t errlen);
int co_parse_size(const char *s, size_t *bytes, char *err, size_t errlen);

const char *co_log_level_name(enum co_log_level level);

/* "FAILED", "BUSY", ... (the webhook status of each enum co_outcome; TIMEOUT
 * for the reclaim) to its outcome; -1 for any other text. */
int co_outcome_from_status(const char *status);

/* The [retry] rule of an outcome: CO_RETRY_NEVER, CO_RETRY_BACKOFF or a
 * delay in seconds. */
double co_retry_rule(const struct co_config *cfg, enum co_outcome outcome);

#endif
