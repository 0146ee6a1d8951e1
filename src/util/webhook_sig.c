/*
 * webhook_sig.c — Standard Webhooks signing and verification (DESIGN.md
 * section 5).
 *
 * Owns: decoding "whsec_" secrets, computing the v1 HMAC-SHA256 signature,
 * checking the three webhook-* headers and the replay window, and the
 * constant-time X-Api-Key check.  Pure: no I/O, no global state.
 *
 * Signatures are compared decoded (32 bytes each side) with CRYPTO_memcmp,
 * and every key is compared against every v1 entry even after a match, so
 * the time taken depends only on the number of keys and entries — both
 * public — and not on which key matched or how much of a guess was right.
 */
#include "util/webhook_sig.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util/config.h"
#include "util/err.h"

#define MAC_BYTES 32     /* SHA-256 */
#define MAC_B64 44       /* base64 of 32 bytes, padded */
#define TS_MAX_DIGITS 18 /* any 18-digit number fits in long long */
#define B64_MAX_CHARS ((WEBHOOK_MAX_KEY_BYTES + 2) / 3 * 4)

_Static_assert(WEBHOOK_MAX_KEYS == CO_MAX_CALLBACK_KEYS, "key count differs from config.h");
_Static_assert(WEBHOOK_MAX_KEY_BYTES == CO_MAX_CALLBACK_KEY_BYTES, "key size differs");
_Static_assert(sizeof "v1," - 1 + MAC_B64 + 1 == WEBHOOK_SIGNATURE_BUF, "signature buffer size");

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* ---------------------------------------------------------------- helpers -- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_b64(char c)
{
    return c != '\0' && strchr(b64_alphabet, c) != NULL;
}

/* The 6-bit value of base64 character C (is_b64(C) must hold). */
static unsigned b64_value(char c)
{
    return (unsigned)(strchr(b64_alphabet, c) - b64_alphabet);
}

/*
 * Decode N characters of standard base64 at S into OUT (room for MAX
 * bytes).  Strict: alphabet only, no blanks, padding optional but, when
 * present, correct, and the bits the last character carries beyond the
 * data zero (RFC 4648 section 3.5), so each byte string has exactly one
 * accepted spelling.  EVP_DecodeBlock() wants whole 4-character groups and
 * counts "=" as zero bytes, so the input is padded here and the padding
 * subtracted from its result.  Returns the byte count, or -1.
 */
static int b64_decode(const char *s, size_t n, unsigned char *out, size_t max)
{
    char padded[B64_MAX_CHARS + 4];
    unsigned char tmp[B64_MAX_CHARS / 4 * 3 + 3];
    size_t data = 0, pad;
    int got;

    while (data < n && is_b64(s[data]))
        data++;
    pad = n - data;
    if (data == 0 || data % 4 == 1 || pad > 2 || (pad > 0 && n % 4 != 0) || data > B64_MAX_CHARS)
        return -1;
    for (size_t i = data; i < n; i++)
        if (s[i] != '=')
            return -1;
    /* 2 characters carry 1 byte + 4 spare bits, 3 carry 2 bytes + 2 */
    if ((data % 4 == 2 && (b64_value(s[data - 1]) & 0x0F) != 0) ||
        (data % 4 == 3 && (b64_value(s[data - 1]) & 0x03) != 0))
        return -1;
    pad = (4 - data % 4) % 4;
    memcpy(padded, s, data);
    memset(padded + data, '=', pad);
    got = EVP_DecodeBlock(tmp, (const unsigned char *)padded, (int)(data + pad));
    got = got < 0 || (size_t)got - pad > max ? -1 : got - (int)pad;
    if (got > 0)
        memcpy(out, tmp, (size_t)got);
    /* the buffers may hold a secret key */
    OPENSSL_cleanse(padded, sizeof padded);
    OPENSSL_cleanse(tmp, sizeof tmp);
    return got;
}

/* [*start, *start + *len): S without the blanks around it. */
static void trim(const char *s, size_t n, const char **start, size_t *len)
{
    while (n > 0 && is_blank(*s))
        s++, n--;
    while (n > 0 && is_blank(s[n - 1]))
        n--;
    *start = s;
    *len = n;
}

/*
 * The next comma-separated item of *S, trimmed, as [*item, *item + *len).
 * *S becomes NULL after the last item, so "" is one empty item and "a,"
 * is "a" then an empty item, as the config loader counts them.  Returns
 * false once *S is NULL.
 */
static bool next_item(const char **s, const char **item, size_t *len)
{
    const char *p = *s, *comma;
    if (p == NULL)
        return false;
    comma = strchr(p, ',');
    trim(p, comma != NULL ? (size_t)(comma - p) : strlen(p), item, len);
    *s = comma != NULL ? comma + 1 : NULL;
    return true;
}

/* A webhook-id we are willing to sign or verify: 1..WEBHOOK_MAX_ID
 * printable ASCII characters, no blanks (it ends up in logs and the DB). */
static bool id_ok(const char *id)
{
    size_t n = 0;
    for (; id[n] != '\0'; n++)
        if (n >= WEBHOOK_MAX_ID || id[n] <= ' ' || id[n] > '~')
            return false;
    return n > 0;
}

/*
 * Parse a webhook-timestamp: digits only, no leading zero (so the string
 * signed is the one number's only spelling), at most TS_MAX_DIGITS.
 */
static int parse_timestamp(const char *s, long long *out)
{
    long long v = 0;
    size_t n = strspn(s, "0123456789");
    if (n == 0 || s[n] != '\0' || n > TS_MAX_DIGITS || (s[0] == '0' && n > 1))
        return -1;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------- HMAC -- */

/* HMAC-SHA256(KEY, "<id>.<ts>.<body>") into MD; 0 or -1. */
static int hmac_v1(EVP_MAC *mac, const unsigned char *key, size_t keylen, const char *id,
                   const char *ts, const char *body, size_t len, unsigned char md[MAC_BYTES])
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    size_t mdlen = 0;
    int ok = ctx != NULL && EVP_MAC_init(ctx, key, keylen, params) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)".", 1) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)".", 1) == 1 &&
             (len == 0 || EVP_MAC_update(ctx, (const unsigned char *)body, len) == 1) &&
             EVP_MAC_final(ctx, md, &mdlen, MAC_BYTES) == 1 && mdlen == MAC_BYTES;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -1;
}

static EVP_MAC *fetch_hmac(void)
{
    return EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* ------------------------------------------------------------------- keys -- */

int webhook_secret_decode(const char *s, size_t n, unsigned char *out, size_t max)
{
    if (n < 6 || memcmp(s, "whsec_", 6) != 0)
        return -1;
    return b64_decode(s + 6, n - 6, out, max);
}

/* Decode the I-th (0-based) secret ITEM/LEN into OUT's slot I. */
static int parse_one_key(const char *item, size_t len, int i, struct webhook_keys *out, char *err,
                         size_t errlen)
{
    int got;
    if (len == 0) {
        co_seterr(err, errlen, "secret %d is empty", i + 1);
        return -1;
    }
    if (len < 6 || memcmp(item, "whsec_", 6) != 0) {
        co_seterr(err, errlen, "secret %d does not start with \"whsec_\"", i + 1);
        return -1;
    }
    got = webhook_secret_decode(item, len, out->key[i], WEBHOOK_MAX_KEY_BYTES);
    if (got < 0) {
        co_seterr(err, errlen, "secret %d is not valid base64 after \"whsec_\" (or too long)",
                  i + 1);
        return -1;
    }
    if (got < WEBHOOK_MIN_KEY_BYTES) {
        co_seterr(err, errlen, "secret %d is %d bytes once decoded, at least %d are needed", i + 1,
                  got, WEBHOOK_MIN_KEY_BYTES);
        return -1;
    }
    out->len[i] = (size_t)got;
    return 0;
}

int webhook_keys_parse(const char *callback_secret, struct webhook_keys *out, char *err,
                       size_t errlen)
{
    const char *s = callback_secret != NULL ? callback_secret : "", *item;
    size_t len;
    int rc = 0;

    memset(out, 0, sizeof *out);
    while (rc == 0 && next_item(&s, &item, &len)) {
        if (out->n == WEBHOOK_MAX_KEYS) {
            co_seterr(err, errlen, "more than %d secrets (current, previous)", WEBHOOK_MAX_KEYS);
            rc = -1;
        } else if ((rc = parse_one_key(item, len, out->n, out, err, errlen)) == 0) {
            out->n++;
        }
    }
    if (rc != 0)
        webhook_keys_clear(out);
    return rc;
}

int webhook_keys_from_config(const struct co_config *cfg, struct webhook_keys *out)
{
    memset(out, 0, sizeof *out);
    if (cfg->callback_auth != CO_AUTH_HMAC)
        return 0;
    for (int i = 0; i < cfg->n_callback_keys && i < WEBHOOK_MAX_KEYS; i++) {
        memcpy(out->key[i], cfg->callback_keys[i], cfg->callback_key_len[i]);
        out->len[i] = cfg->callback_key_len[i];
        out->n++;
    }
    return out->n;
}

void webhook_keys_clear(struct webhook_keys *k)
{
    OPENSSL_cleanse(k, sizeof *k);
    k->n = 0;
}

/* ----------------------------------------------------------------- verify -- */

/* The v1 entries of a webhook-signature header, decoded. */
struct sig_list {
    unsigned char sig[WEBHOOK_MAX_SIGNATURES][MAC_BYTES];
    int n;    /* well-formed v1 entries */
    int bad;  /* entries without a comma, v1 entries that are not 32 bytes */
    int seen; /* entries looked at, v1 or not */
};

/* Classify one "<version>,<payload>" entry of length N into L. */
static void add_entry(const char *e, size_t n, struct sig_list *l)
{
    const char *comma = memchr(e, ',', n);
    size_t plen;
    l->seen++;
    if (comma == NULL || comma == e) {
        l->bad++;
        return;
    }
    if (comma - e != 2 || memcmp(e, "v1", 2) != 0)
        return; /* another scheme (v1a: ed25519, …): not ours, ignored */
    plen = n - 3;
    if (plen > MAC_B64 || b64_decode(comma + 1, plen, l->sig[l->n], MAC_BYTES) != MAC_BYTES)
        l->bad++;
    else
        l->n++;
}

/* Split HEADER at blanks into L, looking at no more than
 * WEBHOOK_MAX_SIGNATURES entries so a huge header costs no HMAC work. */
static void parse_signatures(const char *h, struct sig_list *l)
{
    memset(l, 0, sizeof *l);
    while (l->seen < WEBHOOK_MAX_SIGNATURES) {
        while (is_blank(*h))
            h++;
        if (*h == '\0')
            break;
        size_t n = 0;
        while (h[n] != '\0' && !is_blank(h[n]))
            n++;
        add_entry(h, n, l);
        h += n;
    }
}

/* 1 when any entry of L equals the MAC under any key of K, -1 on OpenSSL
 * failure, else 0.  All pairs are compared: no exit on the first match. */
static int match_any(const struct webhook_keys *k, const char *id, const char *ts, const char *body,
                     size_t len, const struct sig_list *l)
{
    unsigned char md[MAC_BYTES];
    EVP_MAC *mac = fetch_hmac();
    int match = 0, failed = mac == NULL;

    for (int i = 0; !failed && i < k->n && i < WEBHOOK_MAX_KEYS; i++) {
        if (hmac_v1(mac, k->key[i], k->len[i], id, ts, body, len, md) != 0) {
            failed = 1;
            break;
        }
        for (int j = 0; j < l->n; j++)
            match |= CRYPTO_memcmp(md, l->sig[j], MAC_BYTES) == 0;
    }
    OPENSSL_cleanse(md, sizeof md);
    EVP_MAC_free(mac);
    return failed ? -1 : match;
}

static enum webhook_verdict verdict(enum webhook_verdict v, const char **why, const char *msg)
{
    *why = msg;
    return v;
}

/* The header checks that come before any HMAC work. */
static enum webhook_verdict check_headers(const char *id, const char *timestamp,
                                          const char *signature, long long now, double tolerance_s,
                                          const char **why)
{
    long long ts;
    if (id == NULL)
        return verdict(WEBHOOK_MISSING_HEADER, why, "webhook-id header missing");
    if (timestamp == NULL)
        return verdict(WEBHOOK_MISSING_HEADER, why, "webhook-timestamp header missing");
    if (signature == NULL)
        return verdict(WEBHOOK_MISSING_HEADER, why, "webhook-signature header missing");
    if (!id_ok(id))
        return verdict(WEBHOOK_MALFORMED, why,
                       "webhook-id is empty, over 256 characters or not printable ASCII");
    if (parse_timestamp(timestamp, &ts) != 0)
        return verdict(WEBHOOK_MALFORMED, why, "webhook-timestamp is not decimal unix seconds");
    /* in double: no overflow whatever NOW the caller passes; written so
     * that a NaN tolerance refuses rather than accepts */
    double skew = (double)ts - (double)now;
    if (!(skew <= tolerance_s && -skew <= tolerance_s))
        return verdict(WEBHOOK_STALE_TIMESTAMP, why,
                       skew > 0 ? "webhook-timestamp is too far in the future"
                                : "webhook-timestamp is too old");
    return WEBHOOK_OK;
}

enum webhook_verdict webhook_verify(const struct webhook_keys *k, const char *id,
                                    const char *timestamp, const char *signature, const char *body,
                                    size_t len, long long now, double tolerance_s, const char **why)
{
    const char *dummy;
    struct sig_list l;
    enum webhook_verdict v;
    int m;

    if (why == NULL)
        why = &dummy;
    if ((v = check_headers(id, timestamp, signature, now, tolerance_s, why)) != WEBHOOK_OK)
        return v;
    if (body == NULL && len > 0)
        return verdict(WEBHOOK_ERROR, why, "no body given");
    parse_signatures(signature, &l);
    m = l.n > 0 && k != NULL ? match_any(k, id, timestamp, body, len, &l) : 0;
    if (m < 0)
        return verdict(WEBHOOK_ERROR, why, "HMAC computation failed");
    if (m > 0)
        return verdict(WEBHOOK_OK, why, "signature verified");
    if (l.seen == 0)
        return verdict(WEBHOOK_MALFORMED, why, "webhook-signature is empty");
    if (l.bad > 0)
        return verdict(WEBHOOK_MALFORMED, why,
                       "webhook-signature has an entry that is not \"v1,<base64 of 32 bytes>\"");
    if (k == NULL || k->n == 0)
        return verdict(WEBHOOK_BAD_SIGNATURE, why, "no signing key configured");
    return verdict(WEBHOOK_BAD_SIGNATURE, why, "no v1 signature matches");
}

const char *webhook_verdict_name(enum webhook_verdict v)
{
    static const char *const names[WEBHOOK_N_VERDICTS] = {
        [WEBHOOK_OK] = "ok",
        [WEBHOOK_MISSING_HEADER] = "missing_header",
        [WEBHOOK_MALFORMED] = "malformed",
        [WEBHOOK_STALE_TIMESTAMP] = "stale_timestamp",
        [WEBHOOK_BAD_SIGNATURE] = "bad_signature",
        [WEBHOOK_ERROR] = "error",
    };
    return (unsigned)v < WEBHOOK_N_VERDICTS ? names[v] : "unknown";
}

/* ------------------------------------------------------------------- sign -- */

int webhook_sign(const unsigned char *key, size_t keylen, const char *id, long long timestamp,
                 const char *body, size_t len, char *out, size_t outlen)
{
    unsigned char md[MAC_BYTES];
    char ts[24];
    EVP_MAC *mac;
    int rc;

    if (out != NULL && outlen > 0)
        out[0] = '\0';
    if (key == NULL || keylen == 0 || id == NULL || !id_ok(id) || timestamp < 0 ||
        (body == NULL && len > 0) || out == NULL || outlen < WEBHOOK_SIGNATURE_BUF)
        return -1;
    snprintf(ts, sizeof ts, "%lld", timestamp);
    if ((mac = fetch_hmac()) == NULL)
        return -1;
    rc = hmac_v1(mac, key, keylen, id, ts, body, len, md);
    EVP_MAC_free(mac);
    if (rc == 0) {
        memcpy(out, "v1,", 3);
        /* 44 characters and a NUL: fits, checked against outlen above */
        rc = EVP_EncodeBlock((unsigned char *)out + 3, md, MAC_BYTES) == MAC_B64 ? 0 : -1;
    }
    OPENSSL_cleanse(md, sizeof md);
    if (rc != 0)
        out[0] = '\0';
    return rc;
}

/* ---------------------------------------------------------------- api-key -- */

static int sha256(const void *data, size_t n, unsigned char md[32])
{
    unsigned int mdlen = 0;
    return EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32 ? 0 : -1;
}

/*
 * Digests rather than the strings are compared, as in auth_bearer_ok():
 * both sides then have the same length, so neither a token's length nor
 * which token matched shows in the time taken.
 */
int webhook_apikey_ok(const char *header_value, const char *secrets)
{
    unsigned char got[32], want[32];
    const char *s = secrets, *tok, *item;
    size_t toklen, len;
    int match = 0, n = 0;

    if (header_value == NULL || secrets == NULL)
        return 0;
    trim(header_value, strlen(header_value), &tok, &toklen);
    if (toklen == 0 || sha256(tok, toklen, got) != 0)
        return 0;
    while (next_item(&s, &item, &len)) {
        if (++n > WEBHOOK_MAX_KEYS)
            return 0; /* config rejects this; fail closed rather than guess */
        if (len == 0 || sha256(item, len, want) != 0)
            continue;
        match |= CRYPTO_memcmp(want, got, sizeof got) == 0;
    }
    OPENSSL_cleanse(want, sizeof want);
    return match;
}
