/*
 * unit_config.c — TAP tests of the callorch.ini loader (src/util/config.c):
 * every default, every kind of bad value with its "file:line" message, the
 * whole-file checks, the unit parsers and the shipped etc/callorch.ini.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* mkstemp, fdopen under -std=c11 */
#endif
#include "tap.h"
#include "util/config.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET "whsec_MfKQ9r7a3sX0cYwB2vLd8eZp1HkN5tUi"       /* 24 bytes */
#define SECRET2 "whsec_AAECAwQFBgcICQoLDA0ODw=="              /* 16 bytes, padded */
#define REQUIRED "[provider]\ncallback_secret = " SECRET "\n" /* lines 1-2 */

static char err[1024];

/* Load TEXT as "t.ini"; returns the config or NULL (message in err). */
static struct co_config *load(const char *text)
{
    struct co_config *cfg = NULL;
    err[0] = '\0';
    if (co_config_load_string("t.ini", text, &cfg, err, sizeof err) != 0)
        return NULL;
    return cfg;
}

/* TEXT must load; frees the config. */
static void good(const char *text, const char *what)
{
    struct co_config *cfg = load(text);
    ok(cfg != NULL, "accepted: %s", what);
    if (cfg == NULL)
        diag("  %s", err);
    co_config_free(cfg);
}

/* TEXT must fail with NEEDLE in the message (two assertions). */
static void bad(const char *text, const char *needle, const char *what)
{
    struct co_config *cfg = load(text);
    ok(cfg == NULL, "rejected: %s", what);
    like(err, needle, "  message names it: %s", needle);
    co_config_free(cfg);
}

/* [SECTION] KEY = VALUE after the required key; the key is on line 4. */
static void bad_kv(const char *section, const char *key, const char *value, const char *needle)
{
    char text[1024], what[512];
    snprintf(text, sizeof text, REQUIRED "[%s]\n%s = %s\n", section, key, value);
    snprintf(what, sizeof what, "[%s] %s = %s", section, key, value);
    bad(text, needle, what);
}

static void good_kv(const char *section, const char *key, const char *value)
{
    char text[1024], what[512];
    snprintf(text, sizeof text, REQUIRED "[%s]\n%s = %s\n", section, key, value);
    snprintf(what, sizeof what, "[%s] %s = %s", section, key, value);
    good(text, what);
}

static void test_defaults(void)
{
    struct co_config *c = load(REQUIRED);
    if (c == NULL)
        bail("minimal config rejected: %s", err);

    is_string("t.ini", c->file, "file name recorded");
    is_string("callorch", c->user, "[daemon] user");
    is_string("/run/callorch/callorchd.pid", c->pid_file, "[daemon] pid_file");
    is_string("/run/callorch/control.sock", c->control_socket, "[daemon] control_socket");
    is_int(CO_LOG_INFO, c->log_level, "[daemon] log_level");
    is_string("stderr", c->log_target, "[daemon] log_target");
    ok(c->shutdown_timeout == 30, "[daemon] shutdown_timeout 30s");

    is_int(1, c->n_listen, "[http] listen: one address");
    is_string("127.0.0.1", c->listen[0].host, "[http] listen host");
    is_string("8080", c->listen[0].port, "[http] listen port");
    is_int(2, c->workers, "[http] workers");
    is_int(1024, c->max_connections, "[http] max_connections");
    is_int(64 * 1024, (long long)c->max_body, "[http] max_body 64KiB");
    is_int(16 * 1024, (long long)c->max_metadata_bytes, "[http] max_metadata_bytes 16KiB");
    ok(c->idle_timeout == 30, "[http] idle_timeout 30s");
    is_string("http://127.0.0.1:8080", c->public_base_url, "[http] public_base_url");
    is_int(0, c->n_api_keys, "[http] api_keys empty: no auth");
    ok(c->api_keys != NULL && c->api_keys[0] == NULL,
       "[http] api_keys is an empty NULL-terminated array");

    is_string("dbname=callorch", c->pg_conninfo, "[postgres] conninfo");
    is_int(4, c->pg_pool_size, "[postgres] pool_size");

    is_string("127.0.0.1", c->redis_host, "[redis] host");
    is_int(6379, c->redis_port, "[redis] port");
    is_string("", c->redis_password, "[redis] password");
    is_int(0, c->redis_db, "[redis] db");
    is_string("callorch:", c->redis_key_prefix, "[redis] key_prefix");

    is_string("127.0.0.1:9092", c->kafka_brokers, "[kafka] brokers");
    is_string("calls", c->kafka_topic, "[kafka] topic");
    is_string("callorch-dispatch", c->kafka_group_id, "[kafka] group_id");
    is_int(2, c->kafka_consumers, "[kafka] consumers");
    is_int(0, c->n_rdkafka_props, "[kafka] no rdkafka.* properties");

    is_int(30, c->max_concurrent_calls, "[dispatch] max_concurrent_calls");
    is_int(3, c->max_attempts, "[dispatch] max_attempts");
    ok(c->backoff_base == 30, "[dispatch] backoff_base 30s");
    ok(c->backoff_max == 900, "[dispatch] backoff_max 15m");
    ok(c->call_timeout == 900, "[dispatch] call_timeout 15m");
    ok(c->scheduler_interval == 1, "[dispatch] scheduler_interval 1s");

    is_string("http://127.0.0.1:9090/api/v1/calls", c->provider_url, "[provider] url");
    is_string("", c->provider_api_key, "[provider] api_key");
    ok(c->provider_timeout == 10, "[provider] timeout 10s");
    is_int(CO_AUTH_HMAC, c->callback_auth, "[provider] callback_auth");
    is_string(SECRET, c->callback_secret, "[provider] callback_secret as written");
    ok(c->signature_tolerance == 300, "[provider] signature_tolerance 5m");
    is_int(1, c->n_callback_keys, "one callback key");
    is_int(24, (long long)c->callback_key_len[0], "callback key decoded to 24 bytes");
    ok(memcmp(c->callback_keys[0], "\x31\xf2\x90", 3) == 0, "callback key bytes decoded");
    co_config_free(c);
}

/* Replace every FROM in the malloc'd S by TO; returns the new string or NULL. */
static char *replace_all(char *s, const char *from, const char *to)
{
    char *at;
    while (s != NULL && (at = strstr(s, from)) != NULL) {
        size_t head = (size_t)(at - s), tail = strlen(at + strlen(from));
        char *t = malloc(head + strlen(to) + tail + 1);
        if (t != NULL) {
            memcpy(t, s, head);
            memcpy(t + head, to, strlen(to));
            memcpy(t + head + strlen(to), at + strlen(from), tail + 1);
        }
        free(s);
        s = t;
    }
    return s;
}

/* The text of PATH with its two placeholder secrets set, as an operator would. */
static char *shipped_with_secrets(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *s = NULL;
    long len;
    if (fp == NULL)
        return NULL;
    if (fseek(fp, 0, SEEK_END) == 0 && (len = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0 &&
        (s = malloc((size_t)len + 1)) != NULL) {
        s[fread(s, 1, (size_t)len, fp)] = '\0';
    }
    fclose(fp);
    s = replace_all(s, "PLACEHOLDER-CHANGE-ME-client-api-key", "k3y-0f-th1s-s1te");
    return replace_all(s, "whsec_PLACEHOLDERxCHANGExMExPLACEHOLDERxCHANGExMEx", SECRET);
}

/*
 * The shipped file is refused for its placeholder secrets; with them set,
 * its values are the built-in defaults.
 */
static void test_shipped_file(void)
{
    const char *srcdir = getenv("CALLORCH_SRCDIR");
    char here[4096] = "", path[4096] = "";
    /* __FILE__ is "<srcdir>/t/unit_config.c", relative to the build dir or absolute */
    const char *slash = strrchr(__FILE__, '/');
    if (slash != NULL)
        snprintf(here, sizeof here, "%.*s/../etc/callorch.ini", (int)(slash - __FILE__), __FILE__);
    const char *candidates[] = { here, "../etc/callorch.ini", "etc/callorch.ini" };
    struct co_config *c = NULL, *d = load(REQUIRED);

    if (srcdir != NULL)
        snprintf(path, sizeof path, "%s/etc/callorch.ini", srcdir);
    for (size_t i = 0; path[0] == '\0' && i < sizeof candidates / sizeof candidates[0]; i++)
        if (candidates[i][0] != '\0' && access(candidates[i], R_OK) == 0)
            snprintf(path, sizeof path, "%s", candidates[i]);
    if (path[0] == '\0')
        snprintf(path, sizeof path, "%s", candidates[1]); /* fails with a clear message */
    /* as shipped, the placeholder secrets are refused, naming key and line */
    is_int(-1, co_config_load(path, &c, err, sizeof err), "shipped %s is refused as is", path);
    like(err, ":35: [http] api_keys: still the shipped placeholder; set your own key",
         "  the message names the file, line and key");
    diag("e.g. %s", err);
    co_config_free(c);
    c = NULL;

    /* with the two placeholders replaced it loads, and the rest are defaults */
    char *text = shipped_with_secrets(path);
    ok(text != NULL, "read %s", path);
    if (text != NULL && co_config_load_string(path, text, &c, err, sizeof err) != 0)
        c = NULL;
    free(text);
    ok(c != NULL, "shipped file with its placeholders replaced loads");
    if (c == NULL || d == NULL) {
        diag("  %s", err);
        co_config_free(c);
        co_config_free(d);
        return;
    }
    is_int(1, c->n_api_keys, "shipped file sets one api key");
    ok(c->workers == d->workers && c->max_connections == d->max_connections &&
           c->max_body == d->max_body && c->max_metadata_bytes == d->max_metadata_bytes &&
           c->idle_timeout == d->idle_timeout && c->n_listen == d->n_listen &&
           strcmp(c->listen[0].host, d->listen[0].host) == 0 &&
           strcmp(c->public_base_url, d->public_base_url) == 0,
       "shipped [http] values are the defaults");
    ok(strcmp(c->user, d->user) == 0 && strcmp(c->pid_file, d->pid_file) == 0 &&
           strcmp(c->control_socket, d->control_socket) == 0 && c->log_level == d->log_level &&
           strcmp(c->log_target, d->log_target) == 0 && c->shutdown_timeout == d->shutdown_timeout,
       "shipped [daemon] values are the defaults");
    ok(strcmp(c->pg_conninfo, d->pg_conninfo) == 0 && c->pg_pool_size == d->pg_pool_size &&
           strcmp(c->redis_host, d->redis_host) == 0 && c->redis_port == d->redis_port &&
           strcmp(c->redis_password, d->redis_password) == 0 && c->redis_db == d->redis_db &&
           strcmp(c->redis_key_prefix, d->redis_key_prefix) == 0,
       "shipped [postgres] and [redis] values are the defaults");
    ok(strcmp(c->kafka_brokers, d->kafka_brokers) == 0 &&
           strcmp(c->kafka_topic, d->kafka_topic) == 0 &&
           strcmp(c->kafka_group_id, d->kafka_group_id) == 0 &&
           c->kafka_consumers == d->kafka_consumers && c->n_rdkafka_props == 0,
       "shipped [kafka] values are the defaults");
    ok(c->max_concurrent_calls == d->max_concurrent_calls && c->max_attempts == d->max_attempts &&
           c->backoff_base == d->backoff_base && c->backoff_max == d->backoff_max &&
           c->call_timeout == d->call_timeout && c->scheduler_interval == d->scheduler_interval,
       "shipped [dispatch] values are the defaults");
    ok(strcmp(c->provider_url, d->provider_url) == 0 &&
           strcmp(c->provider_api_key, d->provider_api_key) == 0 &&
           c->provider_timeout == d->provider_timeout && c->callback_auth == d->callback_auth &&
           c->signature_tolerance == d->signature_tolerance,
       "shipped [provider] values are the defaults");
    co_config_free(c);
    co_config_free(d);
}

static void test_bad_values(void)
{
    bad_kv("http", "workers", "abc", "t.ini:4: [http] workers: \"abc\" is not an integer");
    diag("e.g. %s", err);
    bad_kv("http", "workers", "0", "\"0\" is out of range (1..64)");
    bad_kv("http", "workers", "65", "\"65\" is out of range (1..64)");
    bad_kv("http", "workers", "-1", "out of range");
    bad_kv("http", "workers", "2x", "not an integer");
    bad_kv("http", "workers", "99999999999999999999", "too large");
    bad_kv("http", "workers", "", "t.ini:4: [http] workers: empty value");
    bad_kv("http", "max_connections", "1000001", "out of range (1..1000000)");
    bad_kv("postgres", "pool_size", "65", "out of range");
    bad_kv("redis", "port", "0", "out of range (1..65535)");
    bad_kv("redis", "port", "65536", "out of range");
    bad_kv("redis", "db", "1024", "out of range (0..1023)");
    bad_kv("kafka", "consumers", "65", "out of range (0..64)");
    bad_kv("dispatch", "max_attempts", "0", "out of range (1..100)");
    bad_kv("dispatch", "max_concurrent_calls", "0", "out of range");

    bad_kv("http", "idle_timeout", "5x", "[http] idle_timeout: \"5x\" has a bad unit \"x\"");
    diag("e.g. %s", err);
    bad_kv("http", "idle_timeout", "-5s", "is negative");
    bad_kv("http", "idle_timeout", "0", "out of range (1ms..1h)");
    bad_kv("http", "idle_timeout", "2h", "out of range");
    bad_kv("http", "idle_timeout", "s", "is not a number");
    bad_kv("dispatch", "scheduler_interval", "5ms", "out of range (10ms..1h)");
    bad_kv("dispatch", "scheduler_interval", "61m", "out of range");
    bad_kv("provider", "timeout", "1.s", "is not a number");

    bad_kv("http", "max_body", "64KB", "has a bad unit \"KB\"");
    diag("e.g. %s", err);
    bad_kv("http", "max_body", "1023", "out of range (1KiB..64MiB)");
    bad_kv("http", "max_body", "65MiB", "out of range");
    bad_kv("http", "max_body", "1.5KiB", "not a whole number");
    bad_kv("http", "max_body", "-1KiB", "is negative");

    bad_kv("daemon", "log_level", "verbose",
           "\"verbose\" is not one of error | warn | info | debug");
    diag("e.g. %s", err);
    bad_kv("daemon", "log_level", "INFO", "not one of");
    bad_kv("provider", "callback_auth", "basic", "not one of hmac | api-key");
    bad_kv("daemon", "log_target", "callorch.log", "not stderr, syslog or an absolute file path");
    bad_kv("daemon", "pid_file", "run/x.pid", "not an absolute path");
    bad_kv("daemon", "user", "", "[daemon] user: must not be empty");
    char longpath[200];
    snprintf(longpath, sizeof longpath, "/run/callorch/%0100d.sock", 0);
    bad_kv("daemon", "control_socket", longpath, "too long for a unix socket");

    bad_kv("http", "public_base_url", "ftp://example.com", "not an http:// or https:// URL");
    diag("e.g. %s", err);
    bad_kv("http", "public_base_url", "http://", "not an http:// or https:// URL");
    bad_kv("provider", "url", "127.0.0.1:9090/api/v1/calls", "[provider] url:");

    bad_kv("kafka", "topic", "calls/x", "not a Kafka topic name");
    bad_kv("kafka", "topic", "..", "not a Kafka topic name");
    bad_kv("kafka", "brokers", "", "[kafka] brokers: must not be empty");
    bad_kv("kafka", "group_id", "", "must not be empty");
    bad_kv("postgres", "conninfo", "", "[postgres] conninfo: must not be empty");
}

/* [compliance] and [retry] (DESIGN.md section 9): each bad value names
 * the key and why; the rules parse to co_retry_rule()'s seconds. */
static void test_compliance_retry(void)
{
    bad_kv("compliance", "calling_hours", "25:00-10:00",
           "t.ini:4: [compliance] calling_hours: hours \"25:00-10:00\": the start \"25:00\" is "
           "not a time of day from 00:00 to 23:59");
    bad_kv("compliance", "calling_days", "funday",
           "t.ini:4: [compliance] calling_days: days \"funday\": \"funday\" is not a day (sun, "
           "mon, tue, wed, thu, fri, sat)");
    bad_kv("compliance", "unknown_timezone", "maybe",
           "t.ini:4: [compliance] unknown_timezone: \"maybe\" is not one of utc | skip");
    bad_kv("compliance", "max_attempts_per_number", "-1",
           "t.ini:4: [compliance] max_attempts_per_number: \"-1\" is out of range (0..1000)");
    bad_kv("compliance", "attempts_period", "0s",
           "t.ini:4: [compliance] attempts_period: \"0s\" is out of range (1s..3650d)");
    bad_kv("retry", "busy", "sometimes",
           "t.ini:4: [retry] busy: \"sometimes\" is not \"never\", \"backoff\" or a "
           "duration from 1s to 3650d");
    bad_kv("retry", "failed", "0s",
           "t.ini:4: [retry] failed: \"0s\" is not \"never\", \"backoff\" or a duration "
           "from 1s to 3650d");
    good_kv("retry", "voicemail", "never");
    good_kv("retry", "timeout", "1s");

    struct co_config *cfg = load(REQUIRED "[retry]\nbusy = 2s\nvoicemail = never\n"
                                          "no_answer = backoff\n");
    ok(cfg != NULL, "retry rules: loaded");
    if (cfg == NULL)
        return;
    ok(co_retry_rule(cfg, CO_OUTCOME_BUSY) == 2.0, "retry rules: busy = 2s is 2 s");
    ok(co_retry_rule(cfg, CO_OUTCOME_VOICEMAIL) == CO_RETRY_NEVER, "retry rules: voicemail never");
    ok(co_retry_rule(cfg, CO_OUTCOME_NO_ANSWER) == CO_RETRY_BACKOFF,
       "retry rules: no_answer backoff");
    ok(co_retry_rule(cfg, CO_OUTCOME_REJECTED) == CO_RETRY_NEVER,
       "retry rules: rejected defaults to never");
    ok(co_retry_rule(cfg, CO_OUTCOME_INVALID_NUMBER) == CO_RETRY_NEVER,
       "retry rules: invalid_number defaults to never");
    ok(co_retry_rule(cfg, CO_OUTCOME_TIMEOUT) == CO_RETRY_BACKOFF,
       "retry rules: timeout defaults to backoff");
    is_int(CO_OUTCOME_INVALID_NUMBER, co_outcome_from_status("INVALID_NUMBER"),
           "outcome of status INVALID_NUMBER");
    is_int(CO_OUTCOME_TIMEOUT, co_outcome_from_status("TIMEOUT"), "outcome of TIMEOUT");
    is_int(-1, co_outcome_from_status("COMPLETED"), "COMPLETED has no retry rule");
    co_config_free(cfg);
}

static void test_listen(void)
{
    struct co_config *c =
        load(REQUIRED "[http]\nlisten = 127.0.0.1:8080, [::1]:8081 ,0.0.0.0:80,[::]:9\n");
    if (c != NULL) {
        is_int(4, c->n_listen, "listen: four addresses");
        is_string("::1", c->listen[1].host, "listen: IPv6 host without brackets");
        is_string("8081", c->listen[1].port, "listen: IPv6 port");
        is_string("0.0.0.0", c->listen[2].host, "listen: third host");
        is_string("80", c->listen[2].port, "listen: third port");
    } else {
        ok(0, "listen list loads: %s", err);
    }
    co_config_free(c);
    good_kv("http", "listen", "localhost:08080");
    bad_kv("http", "listen", "127.0.0.1", "\"127.0.0.1\" has no port");
    diag("e.g. %s", err);
    bad_kv("http", "listen", "::1:8080", "put an IPv6 address in brackets");
    bad_kv("http", "listen", "[::1:8080", "is not [IPv6]:port");
    bad_kv("http", "listen", "[::1]8080", "is not [IPv6]:port");
    bad_kv("http", "listen", "[nothost]:80", "is not an IPv6 address");
    bad_kv("http", "listen", ":8080", "empty or too long host");
    bad_kv("http", "listen", "h:0", "port out of range");
    bad_kv("http", "listen", "h:65536", "port out of range");
    bad_kv("http", "listen", "h:http", "no valid port");
    bad_kv("http", "listen", "my host:80", "not a name or an IPv4 address");
    bad_kv("http", "listen", "a:1,,b:2", "address 2 is empty");
    bad_kv("http", "listen", "a:1,", "address 2 is empty");
    bad_kv("http", "listen", "a:1, a:1", "listed twice");

    char text[1024] = REQUIRED "[http]\nlisten = h:1";
    for (int i = 2; i <= CO_MAX_LISTEN + 1; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), ",h:%d", i);
    bad(text, "more than 16 addresses", "17 listen addresses");
}

static void test_api_keys(void)
{
    struct co_config *c = load(REQUIRED "[http]\napi_keys = key-one , key-two,key-3\n");
    if (c != NULL) {
        is_int(3, c->n_api_keys, "api_keys: three keys");
        is_string("key-one", c->api_keys[0], "api_keys: trimmed");
        is_string("key-3", c->api_keys[2], "api_keys: last");
        ok(c->api_keys[3] == NULL, "api_keys: NULL-terminated");
    } else {
        ok(0, "api_keys list loads: %s", err);
    }
    co_config_free(c);

    c = load(REQUIRED "[http]\napi_keys =    ; no keys, a comment\n");
    ok(c != NULL && c->n_api_keys == 0 && c->api_keys[0] == NULL,
       "api_keys with only an inline comment is empty");
    co_config_free(c);

    bad_kv("http", "api_keys", "a,,b", "[http] api_keys: item 2 is empty");
    bad_kv("http", "api_keys", "a,", "item 2 is empty");
    bad_kv("http", "api_keys", "a b", "item 1 is not a single token");

    /* the shipped placeholder, alone or among real keys (DESIGN.md section 6) */
    bad_kv("http", "api_keys", "PLACEHOLDER-CHANGE-ME-client-api-key",
           "t.ini:4: [http] api_keys: still the shipped placeholder; set your own key");
    bad_kv("http", "api_keys", "mine-0123456789, PLACEHOLDER-CHANGE-ME-client-api-key",
           "t.ini:4: [http] api_keys: still the shipped placeholder");
    good(REQUIRED "[http]\napi_keys = PLACEHOLDER-CHANGE-ME-client-api-key-not\n",
         "an api key that only starts like the placeholder");
}

static void test_secrets(void)
{
    struct co_config *c = load("[provider]\ncallback_secret = " SECRET ", " SECRET2 "\n");
    ok(c != NULL && c->n_callback_keys == 2 && c->callback_key_len[1] == 16 &&
           memcmp(c->callback_keys[1], "\0\1\2\3\4\5\6\7\10\11\12\13\14\15\16\17", 16) == 0,
       "two secrets (rotation), the second padded base64");
    co_config_free(c);

    good("[provider]\ncallback_secret = whsec_AAECAwQFBgcICQoLDA0ODw\n", "unpadded base64");
    bad("[http]\nworkers = 2\n[provider]\n"
        "callback_secret = whsec_PLACEHOLDERxCHANGExMExPLACEHOLDERxCHANGExMEx\n",
        "t.ini:4: [provider] callback_secret: still the shipped placeholder; set your own secret",
        "the shipped placeholder callback_secret");
    diag("e.g. %s", err);
    bad("[provider]\ncallback_secret = " SECRET
        ", whsec_PLACEHOLDERxCHANGExMExPLACEHOLDERxCHANGExMEx\n",
        "t.ini:2: [provider] callback_secret: still the shipped placeholder",
        "the placeholder as the previous secret of a rotation");
    bad("[provider]\ncallback_auth = api-key\n"
        "callback_secret = whsec_PLACEHOLDERxCHANGExMExPLACEHOLDERxCHANGExMEx\n",
        "t.ini:3: [provider] callback_secret: still the shipped placeholder",
        "the placeholder with callback_auth = api-key");
    bad("", "t.ini: [provider] callback_secret is required", "missing callback_secret");
    diag("e.g. %s", err);
    bad("[provider]\ncallback_secret =\n", "secret 1 is empty", "empty callback_secret");
    bad("[provider]\ncallback_secret = " SECRET "," SECRET2 "," SECRET "\n",
        "t.ini:2: [provider] callback_secret (callback_auth = hmac): more than 2 secrets",
        "three secrets");
    bad("[provider]\ncallback_secret = MfKQ9r7a3sX0cYwB2vLd8eZp1HkN5tUi\n",
        "does not start with \"whsec_\"", "secret without whsec_");
    bad("[provider]\ncallback_secret = whsec_MfKQ9r7a3sX0c!wB2vLd8eZp1HkN5tUi\n",
        "not valid base64", "bad base64 character");
    bad("[provider]\ncallback_secret = whsec_AAECAwQFBgcICQoLDA0ODw=x\n", "not valid base64",
        "text after padding");
    bad("[provider]\ncallback_secret = whsec_AAECAwQFBgcICQoLDA0ODw=\n", "not valid base64",
        "wrong padding length");
    bad("[provider]\ncallback_secret = whsec_AAECAwQFBgcICQoLDA0ODx==\n", "not valid base64",
        "non-zero spare bits in the last base64 character");
    bad("[provider]\ncallback_secret = whsec_AAECAwQFBgcICQoLDA0O\n",
        "secret 1 is 15 bytes once decoded, at least 16", "secret of 15 bytes");
    diag("e.g. %s", err);
    bad("[provider]\ncallback_secret = " SECRET ",whsec_AAEC\n", "secret 2 is 3 bytes",
        "short second secret");
    ok(strstr(err, "MfKQ") == NULL, "secret value is not echoed in the message");

    c = load("[provider]\ncallback_secret = token-of-twenty-chars\ncallback_auth = api-key\n");
    ok(c != NULL && c->callback_auth == CO_AUTH_API_KEY && c->n_callback_keys == 1 &&
           c->callback_key_len[0] == 21 &&
           memcmp(c->callback_keys[0], "token-of-twenty-chars", 21) == 0,
       "api-key mode, set after the secret");
    co_config_free(c);
    bad("[provider]\ncallback_auth = api-key\ncallback_secret = short-token\n",
        "t.ini:3: [provider] callback_secret (callback_auth = api-key): token 1 is 11 characters",
        "api-key token too short");
    diag("e.g. %s", err);
    bad("[provider]\ncallback_secret = short-token-x\n[dispatch]\nmax_attempts = 2\n"
        "[provider]\ncallback_auth = api-key\n",
        "t.ini:6:", "secret checked against the mode set later; line of the later key");
}

static void test_structure(void)
{
    bad(REQUIRED "[http]\nworkerz = 2\n", "t.ini:4: unknown key \"workerz\" in [http]",
        "unknown key");
    diag("e.g. %s", err);
    bad(REQUIRED "[htpp]\nworkers = 2\n", "t.ini:3: unknown section [htpp]", "unknown section");
    bad(REQUIRED "\n[empty]\n", "t.ini:4: unknown section [empty]", "unknown section with no keys");
    bad("\xEF\xBB\xBF[nope]\n" REQUIRED, "t.ini:1: unknown section [nope]",
        "unknown section after a BOM");
    bad(REQUIRED "[http]\nworkers = 2\n; comment\nworkers = 3\n",
        "t.ini:6: [http] workers: duplicate key (first set on line 4)", "duplicate key");
    diag("e.g. %s", err);
    bad("workers = 2\n" REQUIRED, "t.ini:1: \"workers\" is outside any section",
        "key before any section");
    bad(REQUIRED "[http]\nworkers 2\n", "t.ini:4: syntax error", "line without =");
    bad(REQUIRED "[http\n", "t.ini:3: syntax error", "unterminated section");
    bad(REQUIRED "[http] workers = 2\n", "t.ini:3: unexpected text after", "text after ]");
    bad(REQUIRED "[redis]\npassword = a\x01z\n",
        "t.ini:4: [redis] password: value contains a control", "control character");

    char text[1024];
    snprintf(text, sizeof text, REQUIRED "[postgres]\nconninfo = %0250d\n", 0);
    bad(text, "t.ini:4: line too long", "line over inih's limit");

    /* comments, indentation, CRLF, blank lines are all fine */
    struct co_config *c =
        load("\xEF\xBB\xBF; leading comment after a BOM\r\n# hash comment\r\n\r\n[http]\r\n"
             "   workers = 5 ; five\r\n  idle_timeout = 1.5s\r\n" REQUIRED);
    ok(c != NULL && c->workers == 5 && c->idle_timeout == 1.5,
       "BOM, comments, indented keys and CRLF (indent is not a continuation)");
    if (c == NULL)
        diag("  %s", err);
    co_config_free(c);

    c = load(REQUIRED "[http]\npublic_base_url = https://calls.example.com/\n");
    is_string("https://calls.example.com", c != NULL ? c->public_base_url : NULL,
              "public_base_url loses its trailing slash");
    co_config_free(c);

    bad(REQUIRED "[http]\nmax_body = 4KiB\nmax_metadata_bytes = 8KiB\n",
        "t.ini:5: [http] max_metadata_bytes (8192) is larger than max_body (4096)",
        "max_metadata_bytes > max_body");
    bad(REQUIRED "[dispatch]\nbackoff_max = 10s\n", "t.ini:4: [dispatch] backoff_max",
        "backoff_max < backoff_base");
    good(REQUIRED "[dispatch]\nbackoff_max = 30s\n", "backoff_max == backoff_base");
}

static void test_rdkafka(void)
{
    struct co_config *c = load(REQUIRED "[kafka]\nrdkafka.socket.timeout.ms = 5000\n"
                                        "rdkafka.client.id = callorch-test\n");
    ok(c != NULL && c->n_rdkafka_props == 2, "two rdkafka.* properties kept");
    if (c != NULL && c->n_rdkafka_props == 2) {
        is_string("socket.timeout.ms", c->rdkafka_props[0].name, "prefix removed");
        is_string("5000", c->rdkafka_props[0].value, "value kept");
        is_string("client.id", c->rdkafka_props[1].name, "second property");
    }
    co_config_free(c);
    bad(REQUIRED "[kafka]\nrdkafka. = 1\n", "t.ini:4: [kafka] rdkafka.: empty librdkafka property",
        "empty property name");
    bad(REQUIRED "[kafka]\nrdkafka.no.such.thing = 1\n",
        "t.ini:4: [kafka] rdkafka.no.such.thing: librdkafka:", "property librdkafka does not know");
    diag("e.g. %s", err);
    bad(REQUIRED "[kafka]\nrdkafka.client.id = a\nrdkafka.client.id = b\n",
        "t.ini:5:", "duplicate rdkafka property");
    bad(REQUIRED "[kafka]\nrdkafka.bootstrap.servers = x:1\n", "set [kafka] brokers instead",
        "rdkafka.bootstrap.servers");
    bad(REQUIRED "[http]\nrdkafka.x = 1\n", "unknown key \"rdkafka.x\" in [http]",
        "rdkafka.* outside [kafka]");
}

static void test_parse_duration(void)
{
    double d = -1;
    char e[128];
    ok(co_parse_duration("250ms", &d, e, sizeof e) == 0 && d == 0.25, "250ms");
    ok(co_parse_duration("1.5s", &d, e, sizeof e) == 0 && d == 1.5, "1.5s");
    ok(co_parse_duration("2m", &d, e, sizeof e) == 0 && d == 120, "2m");
    ok(co_parse_duration("1h", &d, e, sizeof e) == 0 && d == 3600, "1h");
    ok(co_parse_duration("45", &d, e, sizeof e) == 0 && d == 45, "bare number is seconds");
    ok(co_parse_duration(" 0.1 ms ", &d, e, sizeof e) == 0 && fabs(d - 0.0001) < 1e-12,
       "spaces around and inside");
    ok(co_parse_duration("0", &d, e, sizeof e) == 0 && d == 0, "zero parses (ranges are per key)");
    ok(co_parse_duration("0.3s", &d, e, sizeof e) == 0 && d == 0.3, "0.3s is the nearest double");
    ok(co_parse_duration("", &d, e, sizeof e) < 0 && strcmp(e, "is empty") == 0, "empty");
    ok(co_parse_duration("-1s", &d, e, sizeof e) < 0 && strcmp(e, "is negative") == 0, "negative");
    ok(co_parse_duration("7d", &d, e, sizeof e) == 0 && d == 7 * 86400, "7d is a week");
    ok(co_parse_duration("1w", &d, e, sizeof e) < 0 && strstr(e, "bad unit \"w\"") != NULL,
       "unknown unit");
    ok(co_parse_duration("1S", &d, e, sizeof e) < 0, "units are case-sensitive");
    ok(co_parse_duration(".5s", &d, e, sizeof e) < 0, "leading point");
    ok(co_parse_duration("1e3", &d, e, sizeof e) < 0, "exponent");
    ok(co_parse_duration("1..5s", &d, e, sizeof e) < 0, "two points");
    ok(co_parse_duration("9999999999999999s", &d, e, sizeof e) < 0 && strstr(e, "too large"),
       "overflow of digits");
    ok(co_parse_duration("999999h", &d, e, sizeof e) < 0 && strstr(e, "too large"),
       "too long a duration");
    ok(co_parse_duration("0000000000000000001s", &d, e, sizeof e) == 0 && d == 1,
       "leading zeros do not overflow");
}

static void test_parse_size(void)
{
    size_t z = 0;
    char e[128];
    ok(co_parse_size("0", &z, e, sizeof e) == 0 && z == 0, "0 bytes");
    ok(co_parse_size("100", &z, e, sizeof e) == 0 && z == 100, "bare bytes");
    ok(co_parse_size("100B", &z, e, sizeof e) == 0 && z == 100, "B");
    ok(co_parse_size("2KiB", &z, e, sizeof e) == 0 && z == 2048, "KiB");
    ok(co_parse_size("3 MiB", &z, e, sizeof e) == 0 && z == 3u << 20, "MiB with a space");
    ok(co_parse_size("1GiB", &z, e, sizeof e) == 0 && z == 1u << 30, "GiB");
    ok(co_parse_size("1KB", &z, e, sizeof e) < 0 && strstr(e, "bad unit \"KB\""),
       "KB is ambiguous");
    ok(co_parse_size("1k", &z, e, sizeof e) < 0, "k");
    ok(co_parse_size("1TiB", &z, e, sizeof e) < 0, "TiB");
    ok(co_parse_size("", &z, e, sizeof e) < 0 && strcmp(e, "is empty") == 0, "empty");
    ok(co_parse_size("-1", &z, e, sizeof e) < 0 && strcmp(e, "is negative") == 0, "negative");
    ok(co_parse_size("1.5KiB", &z, e, sizeof e) < 0 && strstr(e, "whole"), "fraction");
    ok(co_parse_size("999999999999999GiB", &z, e, sizeof e) < 0 && strstr(e, "too large"),
       "overflow in the multiplication");
    ok(co_parse_size("9999999999999999", &z, e, sizeof e) < 0 && strstr(e, "too large"),
       "overflow of digits");
    ok(co_parse_size("KiB", &z, e, sizeof e) < 0 && strstr(e, "not a number"), "unit alone");
}

static void test_files(void)
{
    char path[] = "/tmp/unit_config.XXXXXX";
    int fd = mkstemp(path);
    struct co_config *c = NULL;
    FILE *f;

    if (fd < 0 || (f = fdopen(fd, "w")) == NULL)
        bail("cannot create a temporary file");
    fputs(REQUIRED "[daemon]\nlog_level = debug\n\n[http]\nworkers = many\n", f);
    fclose(f);
    is_int(-1, co_config_load(path, &c, err, sizeof err), "file with an error fails");
    char want[128];
    snprintf(want, sizeof want, "%s:7: [http] workers: \"many\" is not an integer", path);
    like(err, want, "message is file:line: [section] key: reason");
    ok(c == NULL, "out pointer left unchanged on failure");

    f = fopen(path, "w");
    fputs(REQUIRED "[daemon]\nlog_level = debug\n", f);
    fclose(f);
    is_int(0, co_config_load(path, &c, err, sizeof err), "file loads");
    ok(c != NULL && c->log_level == CO_LOG_DEBUG && strcmp(c->file, path) == 0,
       "value and file name from the file");
    co_config_free(c);
    unlink(path);

    is_int(-1, co_config_load(path, &c, err, sizeof err), "missing file fails");
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    like(err, want, "message has strerror");
    diag("e.g. %s", err);
    is_int(-1, co_config_load("/", &c, err, sizeof err), "a directory fails");
    like(err, "/: cannot read: Is a directory", "message has strerror");
    is_int(-1, co_config_load("/dev/zero", &c, err, sizeof err), "an endless file fails");
    like(err, "/dev/zero:1: file is larger than", "message says why");
}

static void test_log_level_name(void)
{
    is_string("error", co_log_level_name(CO_LOG_ERROR), "co_log_level_name(error)");
    is_string("debug", co_log_level_name(CO_LOG_DEBUG), "co_log_level_name(debug)");
    is_string("unknown", co_log_level_name((enum co_log_level)42), "co_log_level_name(42)");
}

/* Collects co_config_restart_changes()'s report. */
static void note_change(void *arg, const char *key, const char *running, const char *configured)
{
    snprintf(arg, 256, "%s %s -> %s", key, running, configured);
}

static void test_restart_changes(void)
{
    struct co_config *a = load(REQUIRED "[daemon]\nuser = alice\n[http]\nworkers = 2\n");
    struct co_config *b = load(REQUIRED "[daemon]\nuser = bob\n[http]\nworkers = 3\n");
    char seen[256] = "";
    ok(a != NULL && b != NULL, "restart changes: both configs load");
    if (a != NULL && b != NULL) {
        is_int(1, co_config_restart_changes(a, b, note_change, seen),
               "restart changes: one key needs a restart (workers does not)");
        is_string("daemon.user alice -> bob", seen, "restart changes: key and both values");
        is_int(0, co_config_restart_changes(a, a, note_change, seen),
               "restart changes: none between equal configs");
    }
    co_config_free(a);
    co_config_free(b);
}

/* [events] (DESIGN.md section 10): defaults, the URL, the secret's format
 * and the secret required with a URL. */
static void test_events(void)
{
    struct co_config *c = load(REQUIRED);
    ok(c != NULL && strcmp(c->events_url, "") == 0 && strcmp(c->events_secret, "") == 0 &&
           fabs(c->events_timeout - 5) < 1e-9 && fabs(c->events_max_age - 86400) < 1e-9,
       "[events] defaults: no url, no secret, timeout 5s, max_age 24h");
    co_config_free(c);

    c = load(REQUIRED "[events]\nurl = https://hooks.example.com/callorch\nsecret = " SECRET
                      "\ntimeout = 1500ms\nmax_age = 2h\n");
    ok(c != NULL && strcmp(c->events_url, "https://hooks.example.com/callorch") == 0 &&
           fabs(c->events_timeout - 1.5) < 1e-9 && fabs(c->events_max_age - 7200) < 1e-9,
       "[events] url, secret, timeout and max_age set");
    co_config_free(c);
    good(REQUIRED "[events]\nsecret = " SECRET ", " SECRET2 "\n",
         "[events] two secrets (rotation) and no url (per-call URLs only)");

    bad(REQUIRED "[events]\nurl = http://127.0.0.1:9/hook\n",
        "t.ini:4: [events] secret is required when [events] url is set",
        "[events] url without a secret");
    diag("e.g. %s", err);
    bad(REQUIRED "[events]\nurl = http://127.0.0.1:9/hook\nsecret =\n",
        "t.ini:5: [events] secret is required",
        "[events] url with an empty secret; line of the later key");
    bad_kv("events", "url", "ftp://example.com/hook",
           "t.ini:4: [events] url: \"ftp://example.com/hook\" is not an http:// or https:// URL");
    bad_kv("events", "url", "hooks.example.com", "is not an http:// or https:// URL");
    bad_kv("events", "secret", "MfKQ9r7a3sX0cYwB2vLd8eZp1HkN5tUi",
           "t.ini:4: [events] secret: secret 1 does not start with \"whsec_\"");
    bad_kv("events", "secret", "whsec_AAECAwQFBgcICQoLDA0O",
           "secret 1 is 15 bytes once decoded, at least 16");
    ok(strstr(err, "AAECAwQF") == NULL, "  the [events] secret is not echoed in the message");
    bad_kv("events", "secret", "whsec_MfKQ9r7a3sX0c!wB2vLd8eZp1HkN5tUi", "not valid base64");
    bad_kv("events", "timeout", "50ms",
           "t.ini:4: [events] timeout: \"50ms\" is out of range (100ms..5m)");
    bad_kv("events", "timeout", "6m", "is out of range (100ms..5m)");
    bad_kv("events", "max_age", "30s",
           "t.ini:4: [events] max_age: \"30s\" is out of range (1m..30d)");
    bad_kv("events", "max_age", "31d", "is out of range (1m..30d)");
    bad_kv("events", "retries", "3", "t.ini:4: unknown key \"retries\" in [events]");
    good_kv("events", "timeout", "100ms");
    good_kv("events", "max_age", "30d");
}

int main(void)
{
    test_defaults();
    test_shipped_file();
    test_bad_values();
    test_compliance_retry();
    test_listen();
    test_api_keys();
    test_secrets();
    test_structure();
    test_rdkafka();
    test_parse_duration();
    test_parse_size();
    test_files();
    test_log_level_name();
    test_restart_changes();
    test_events();
    return done_testing();
}
