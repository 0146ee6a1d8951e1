/*
 * fuzz_config.c — libFuzzer target for the config loader (src/util/config.c):
 * co_config_load_string() on the input as callorch.ini text, and the unit
 * parsers co_parse_duration() / co_parse_size() on its first line.
 *
 * Besides the sanitizers, it checks:
 *  - a loaded config satisfies the cross-key rules the rest of the daemon
 *    relies on (listen addresses, key counts and sizes, max_metadata_bytes
 *    <= max_body, backoff_max >= backoff_base, no trailing '/' on
 *    public_base_url, a NULL-terminated api_keys list of n_api_keys), and
 *    webhook_keys_from_config() takes its keys;
 *  - a refused config has a "fuzz.ini:" message, and a message about the
 *    line of a secret key (callback_secret, password, conninfo, api_key(s),
 *    rdkafka.*password*, rdkafka.*secret*) never quotes its value (checked
 *    again with the value's letters shifted, to tell an echo from chance);
 *  - a duration is finite and >= 0.
 */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/config.h"
#include "util/webhook_sig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort with a message: a property of the loader does not hold. */
static void fuzz_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

static int is_secret_key(const char *name, size_t n)
{
    static const char *const names[] = { "callback_secret", "password", "conninfo", "api_key",
                                         "api_keys" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == n && memcmp(name, names[i], n) == 0)
            return 1;
    if (n > 8 && memcmp(name, "rdkafka.", 8) == 0) {
        char prop[256];
        snprintf(prop, sizeof(prop), "%.*s", (int)n, name);
        return strstr(prop, "password") != NULL || strstr(prop, "secret") != NULL;
    }
    return 0;
}

/* V with every letter and digit replaced by the next one of its kind
 * ('z' -> 'a', '9' -> '0'), blanks and punctuation kept, in place. */
static void shift_value(char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c >= 'a' && c <= 'z')
            v[i] = c == 'z' ? 'a' : (char)(c + 1);
        else if (c >= 'A' && c <= 'Z')
            v[i] = c == 'Z' ? 'A' : (char)(c + 1);
        else if (c >= '0' && c <= '9')
            v[i] = c == '9' ? '0' : (char)(c + 1);
    }
}

/* ERR, when it is about a secret key = value line of TEXT, must not quote
 * its value.  Values shorter than 12 characters are skipped; a longer one
 * found in ERR may still be the message's own words ("callback_auth =
 * ..."), so the load is repeated with the value's letters and digits
 * shifted: only if that message quotes the shifted value is it an echo. */
static void check_no_secret(const char *text, const char *err)
{
    int err_line = 0, line = 1;
    if (sscanf(err, "fuzz.ini:%d:", &err_line) != 1)
        return;
    for (const char *l = text; *l != '\0'; line++) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        const char *eq = memchr(l, '=', n);
        if (eq != NULL && line == err_line) {
            const char *name = l, *end = eq, *val = eq + 1, *vend = l + n;
            while (name < end && isspace((unsigned char)*name))
                name++;
            while (end > name && isspace((unsigned char)end[-1]))
                end--;
            while (val < vend && isspace((unsigned char)*val))
                val++;
            while (vend > val && isspace((unsigned char)vend[-1]))
                vend--;
            size_t vl = (size_t)(vend - val);
            char v[4096];
            snprintf(v, sizeof(v), "%.*s", (int)vl, val);
            if (is_secret_key(name, (size_t)(end - name)) && vl >= 12 && vl < sizeof(v) &&
                strstr(err, v) != NULL) {
                char *text2 = strdup(text), err2[1024] = "";
                struct co_config *cfg = NULL;
                if (text2 == NULL)
                    fuzz_fail("out of memory", NULL);
                shift_value(text2 + (val - text), vl);
                shift_value(v, vl);
                if (co_config_load_string("fuzz.ini", text2, &cfg, err2, sizeof(err2)) == 0)
                    co_config_free(cfg);
                else if (strstr(err2, v) != NULL)
                    fuzz_fail("the error message quotes a secret", err2);
                free(text2);
            }
        }
        l = nl ? nl + 1 : l + n;
    }
}

static void check_config(const struct co_config *cfg)
{
    struct webhook_keys k;

    if (cfg->n_listen < 1 || cfg->n_listen > CO_MAX_LISTEN)
        fuzz_fail("listen count out of range", NULL);
    for (int i = 0; i < cfg->n_listen; i++)
        if (cfg->listen[i].host[0] == '\0' || atoi(cfg->listen[i].port) < 1 ||
            atoi(cfg->listen[i].port) > 65535)
            fuzz_fail("a listen address without host or port", NULL);
    if (cfg->max_metadata_bytes > cfg->max_body || cfg->backoff_max < cfg->backoff_base)
        fuzz_fail("cross-key rule violated", NULL);
    if (cfg->n_callback_keys < 1 || cfg->n_callback_keys > CO_MAX_CALLBACK_KEYS)
        fuzz_fail("callback key count out of range", NULL);
    for (int i = 0; i < cfg->n_callback_keys; i++)
        if (cfg->callback_key_len[i] < 16 || cfg->callback_key_len[i] > CO_MAX_CALLBACK_KEY_BYTES)
            fuzz_fail("callback key size out of range", NULL);
    size_t n = strlen(cfg->public_base_url);
    if (n == 0 || cfg->public_base_url[n - 1] == '/')
        fuzz_fail("public_base_url ends with '/'", cfg->public_base_url);
    if (cfg->n_api_keys < 0 || cfg->api_keys == NULL || cfg->api_keys[cfg->n_api_keys] != NULL)
        fuzz_fail("api_keys is not a NULL-terminated list of n_api_keys", NULL);
    for (int i = 0; i < cfg->n_api_keys; i++)
        if (cfg->api_keys[i][0] == '\0' || strpbrk(cfg->api_keys[i], " \t,") != NULL)
            fuzz_fail("an empty or blank-containing api key", NULL);
    for (int i = 0; i < cfg->n_rdkafka_props; i++)
        if (cfg->rdkafka_props[i].name == NULL || cfg->rdkafka_props[i].value == NULL)
            fuzz_fail("rdkafka property without name or value", NULL);
    int nk = webhook_keys_from_config(cfg, &k);
    if (cfg->callback_auth == CO_AUTH_HMAC ? nk != cfg->n_callback_keys : nk != 0)
        fuzz_fail("webhook_keys_from_config disagrees with the config", NULL);
    webhook_keys_clear(&k);
    if (!(cfg->shutdown_timeout > 0) || !isfinite(cfg->idle_timeout) ||
        !(cfg->signature_tolerance >= 1))
        fuzz_fail("a duration out of range", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    char err[1024];
    struct co_config *cfg = NULL;
    double d;
    size_t z;

    if (text == NULL)
        fuzz_fail("out of memory", NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    err[0] = '\0';
    if (co_config_load_string("fuzz.ini", text, &cfg, err, sizeof(err)) == 0) {
        if (cfg == NULL)
            fuzz_fail("loaded without a config", NULL);
        check_config(cfg);
        co_config_free(cfg);
    } else {
        if (cfg != NULL)
            fuzz_fail("refused but *out was set", NULL);
        if (strncmp(err, "fuzz.ini:", 9) != 0)
            fuzz_fail("error message without the file name", err);
        check_no_secret(text, err);
    }

    /* the first line alone, as a value */
    char *nl = strchr(text, '\n');
    if (nl != NULL)
        *nl = '\0';
    if (co_parse_duration(text, &d, err, sizeof(err)) == 0 && !(isfinite(d) && d >= 0))
        fuzz_fail("co_parse_duration: not a finite duration >= 0", text);
    (void)co_parse_size(text, &z, err, sizeof(err));
    free(text);
    return 0;
}
