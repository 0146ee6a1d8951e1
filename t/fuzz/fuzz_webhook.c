/*
 * fuzz_webhook.c — libFuzzer target for webhook authentication
 * (src/util/webhook_sig.c): webhook_verify() with fuzzed headers and body,
 * webhook_keys_parse(), webhook_sign() and webhook_apikey_ok().
 *
 * Input layout (so that each part mutates on its own): byte 0 is a flag
 * byte, then six lines ending in '\n', then the body (all the rest):
 *   flags bit 0/1/2: webhook-id / webhook-timestamp / webhook-signature
 *                    header absent (NULL) instead of its line
 *   flags bit 3:     verify with the keys of line 4 instead of the fixed ones
 *   line 1 webhook-id, line 2 webhook-timestamp, line 3 webhook-signature,
 *   line 4 a callback_secret for webhook_keys_parse(),
 *   line 5 an X-Api-Key header value, line 6 api-key secrets.
 * Missing lines are empty.  "now" is fixed at FUZZ_NOW, so timestamps near
 * 1700000000 are in the window.
 *
 * Besides the sanitizers, it checks:
 *  - WEBHOOK_OK only when the headers are well-formed, the timestamp is in
 *    the window, and a v1 entry of the header is the signature we compute;
 *  - webhook_sign() + webhook_verify() accept, for every key parsed from
 *    line 4 and the fixed keys, the id and body of the input — also as the
 *    second entry of a rotation header;
 *  - a refused secret leaves no key and an error that does not quote it;
 *  - webhook_apikey_ok() accepts only a header equal to one token.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/webhook_sig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW 1700000000LL
#define FUZZ_TOLERANCE 300.0
#define N_LINES 6

/* The keys of whsec_ZnV6ei13ZWJob29rLWhtYWMta2V5LTAx and ...LTAy. */
static const char FIXED_SECRET[] =
    "whsec_ZnV6ei13ZWJob29rLWhtYWMta2V5LTAx, whsec_ZnV6ei13ZWJob29rLWhtYWMta2V5LTAy";

/* Abort with a message: a property of webhook_sig.c does not hold. */
static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_webhook: %s\n", what);
    abort();
}

/* Index of C in the base64 alphabet, or -1. */
static int b64_index(char c)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c != '\0' ? strchr(alphabet, c) : NULL;
    return p != NULL ? (int)(p - alphabet) : -1;
}

/* Whether the v1 payload at P (up to a blank or the end) decodes to the
 * MAC whose canonical encoding is WANT ("v1," + 43 characters + "=").
 * The two unused low bits of the 43rd character are not compared: the
 * decoder ignores them, so "...X2w" and "...X2z" are the same MAC. */
static int same_mac(const char *p, const char *want)
{
    size_t n = strcspn(p, " \t");
    while (n > 0 && p[n - 1] == '=')
        n--;
    if (n != 43 || strncmp(p, want + 3, 42) != 0)
        return 0;
    int a = b64_index(p[42]), b = b64_index(want[3 + 42]);
    return a >= 0 && (a & ~3) == (b & ~3);
}

/* V accepted: some v1 entry of SIG must carry the MAC we compute. */
static void check_accepted(const struct webhook_keys *k, const char *id, const char *ts,
                           const char *sig, const char *body, size_t len)
{
    char want[WEBHOOK_SIGNATURE_BUF];
    char *end;
    long long t = strtoll(ts, &end, 10);

    if (*end != '\0' || t < FUZZ_NOW - (long long)FUZZ_TOLERANCE ||
        t > FUZZ_NOW + (long long)FUZZ_TOLERANCE)
        fuzz_fail("accepted a timestamp outside the window");
    for (int i = 0; i < k->n; i++) {
        if (webhook_sign(k->key[i], k->len[i], id, t, body, len, want, sizeof(want)) != 0)
            fuzz_fail("webhook_sign failed on an accepted webhook");
        for (const char *p = sig; (p = strstr(p, "v1,")) != NULL; p++)
            if ((p == sig || p[-1] == ' ' || p[-1] == '\t') && same_mac(p + 3, want))
                return;
    }
    fuzz_fail("WEBHOOK_OK without a matching v1 entry");
}

/* Sign ID/BODY with every key of K at FUZZ_NOW: verify must accept it. */
static void round_trip(const struct webhook_keys *k, const char *id, const char *body, size_t len)
{
    char sig[WEBHOOK_SIGNATURE_BUF], both[2 * WEBHOOK_SIGNATURE_BUF + 16], ts[24];
    const char *why = NULL;

    snprintf(ts, sizeof(ts), "%lld", FUZZ_NOW);
    for (int i = 0; i < k->n; i++) {
        if (webhook_sign(k->key[i], k->len[i], id, FUZZ_NOW, body, len, sig, sizeof(sig)) != 0)
            return; /* an id webhook_sign() refuses: verify refuses it too */
        enum webhook_verdict v =
            webhook_verify(k, id, ts, sig, body, len, FUZZ_NOW, FUZZ_TOLERANCE, &why);
        if (v != WEBHOOK_OK) {
            fprintf(stderr, "fuzz_webhook: own signature refused: %s (%s)\n",
                    webhook_verdict_name(v), why ? why : "");
            abort();
        }
        /* rotation: an unknown v1 entry first, ours second */
        snprintf(both, sizeof(both), "v1,%043d= v2,x\t%s ", 0, sig);
        if (webhook_verify(k, id, ts, both, body, len, FUZZ_NOW, FUZZ_TOLERANCE, &why) !=
            WEBHOOK_OK)
            fuzz_fail("own signature refused as the second entry");
        /* and one second out of the window is refused */
        snprintf(ts, sizeof(ts), "%lld", FUZZ_NOW + (long long)FUZZ_TOLERANCE + 1);
        if (webhook_verify(k, id, ts, sig, body, len, FUZZ_NOW, FUZZ_TOLERANCE, &why) !=
            WEBHOOK_STALE_TIMESTAMP)
            fuzz_fail("a stale timestamp was not refused as stale");
        snprintf(ts, sizeof(ts), "%lld", FUZZ_NOW);
    }
}

/* webhook_apikey_ok: accepted only if HEADER, trimmed, is one token. */
static void fuzz_apikey(const char *header, const char *secrets)
{
    if (!webhook_apikey_ok(header, secrets))
        return;
    size_t hl = strlen(header);
    while (hl > 0 && (*header == ' ' || *header == '\t'))
        header++, hl--;
    while (hl > 0 && (header[hl - 1] == ' ' || header[hl - 1] == '\t'))
        hl--;
    if (hl == 0)
        fuzz_fail("webhook_apikey_ok accepted a blank header");
    for (const char *s = secrets; s != NULL;) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        const char *t = s;
        while (n > 0 && (*t == ' ' || *t == '\t'))
            t++, n--;
        while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
            n--;
        if (n == hl && memcmp(t, header, n) == 0)
            return;
        s = comma ? comma + 1 : NULL;
    }
    fuzz_fail("webhook_apikey_ok accepted a header that is no token");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line[N_LINES];
    struct webhook_keys fixed, parsed;
    char err[256];
    const char *why = NULL;
    size_t pos = 1;
    unsigned flags = size > 0 ? data[0] : 0;

    for (int i = 0; i < N_LINES; i++) {
        if (pos > size)
            pos = size;
        size_t end = pos;
        while (end < size && data[end] != '\n')
            end++;
        line[i] = malloc(end - pos + 1);
        if (line[i] == NULL)
            fuzz_fail("out of memory");
        memcpy(line[i], data + pos, end - pos);
        line[i][end - pos] = '\0';
        pos = end + 1;
    }
    /* the body: exactly its bytes, no NUL after them */
    size_t len = pos < size ? size - pos : 0;
    char *body = malloc(len ? len : 1);
    if (body == NULL)
        fuzz_fail("out of memory");
    memcpy(body, data + (size - len), len);

    if (webhook_keys_parse(FIXED_SECRET, &fixed, NULL, 0) != 0 || fixed.n != 2)
        fuzz_fail("the fixed secret does not parse");
    err[0] = '\0';
    if (webhook_keys_parse(line[3], &parsed, err, sizeof(err)) != 0) {
        if (parsed.n != 0)
            fuzz_fail("a refused secret left keys behind");
        if (err[0] == '\0')
            fuzz_fail("a refused secret without a message");
        if (strlen(line[3]) >= 16 && strstr(err, line[3]) != NULL)
            fuzz_fail("the error message quotes the secret");
    } else if (parsed.n < 1 || parsed.n > WEBHOOK_MAX_KEYS) {
        fuzz_fail("webhook_keys_parse: key count out of range");
    }

    const struct webhook_keys *k = (flags & 8) ? &parsed : &fixed;
    const char *id = (flags & 1) ? NULL : line[0];
    const char *ts = (flags & 2) ? NULL : line[1];
    const char *sig = (flags & 4) ? NULL : line[2];
    enum webhook_verdict v =
        webhook_verify(k, id, ts, sig, body, len, FUZZ_NOW, FUZZ_TOLERANCE, &why);
    if (why == NULL || strcmp(webhook_verdict_name(v), "unknown") == 0)
        fuzz_fail("verdict without a reason or a name");
    if (v == WEBHOOK_OK)
        check_accepted(k, id, ts, sig, body, len);
    if ((id == NULL || ts == NULL || sig == NULL) && v != WEBHOOK_MISSING_HEADER)
        fuzz_fail("a missing header was not reported as missing");
    /* NULL keys are allowed: never accepted */
    if (webhook_verify(NULL, line[0], line[1], line[2], body, len, FUZZ_NOW, FUZZ_TOLERANCE,
                       &why) == WEBHOOK_OK)
        fuzz_fail("accepted with no keys");

    round_trip(&fixed, line[0], body, len);
    round_trip(&parsed, line[0], body, len);
    fuzz_apikey(line[4], line[5]);

    webhook_keys_clear(&fixed);
    webhook_keys_clear(&parsed);
    for (int i = 0; i < N_LINES; i++)
        free(line[i]);
    free(body);
    return 0;
}
