/*
 * webhook_sig.h — Standard Webhooks signing and verification (DESIGN.md
 * section 5, https://www.standardwebhooks.com).
 *
 * Owns: the "whsec_<base64>" secret format, the v1 signature
 * (base64 HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<raw body>"),
 * the checks on the webhook-id / webhook-timestamp / webhook-signature
 * headers, the replay window, and the X-Api-Key check used instead when
 * [provider] callback_auth = api-key.  callorchd's webhook endpoint verifies
 * with it; callorch-provider-sim signs with it.
 *
 * Pure: no I/O, no global state, no allocation beyond OpenSSL's own.
 * OpenSSL libcrypto does the HMAC, the base64 and the constant-time
 * compares.  Every configured key is tried against every signature, match
 * or not, so timing does not tell which key (current or previous) matched.
 */
#ifndef CO_WEBHOOK_SIG_H
#define CO_WEBHOOK_SIG_H

#include <stddef.h>

#define WEBHOOK_MAX_KEYS 2        /* current + previous, for rotation */
#define WEBHOOK_MIN_KEY_BYTES 16  /* decoded; same floor as the config loader */
#define WEBHOOK_MAX_KEY_BYTES 128 /* decoded; = CO_MAX_CALLBACK_KEY_BYTES */
#define WEBHOOK_MAX_ID 256        /* longest webhook-id accepted */
#define WEBHOOK_MAX_SIGNATURES 10 /* entries of webhook-signature looked at */
#define WEBHOOK_SIGNATURE_BUF 48  /* "v1," + 44 base64 characters + NUL */

/* The HMAC keys of [provider] callback_secret, decoded.  Secret material:
 * webhook_keys_clear() it when done. */
struct webhook_keys {
    int n; /* 0..WEBHOOK_MAX_KEYS */
    unsigned char key[WEBHOOK_MAX_KEYS][WEBHOOK_MAX_KEY_BYTES];
    size_t len[WEBHOOK_MAX_KEYS];
};

/*
 * Parse CALLBACK_SECRET: one or two comma-separated "whsec_<base64>"
 * secrets (blanks around the commas ignored, base64 padding optional),
 * each decoding to WEBHOOK_MIN_KEY_BYTES..WEBHOOK_MAX_KEY_BYTES bytes.
 * Returns 0 with OUT filled, or -1 with OUT emptied and a message naming
 * the secret by position (never its value) in ERR (may be NULL).
 */
int webhook_keys_parse(const char *callback_secret, struct webhook_keys *out, char *err,
                       size_t errlen);

/*
 * Decode one "whsec_<base64>" secret S/N into OUT (room for MAX bytes).
 * Standard base64, padding optional; strict: no blanks, no characters
 * outside the alphabet, and the unused bits of the last character zero.
 * Returns the decoded length, or -1.  The config loader and
 * webhook_keys_parse() both decode through it.
 */
int webhook_secret_decode(const char *s, size_t n, unsigned char *out, size_t max);

/*
 * Fill OUT from a loaded config's already-decoded callback keys (the
 * config loader checks the same format at load time).  With callback_auth
 * = api-key there are no HMAC keys: OUT->n is 0.  Returns OUT->n.
 */
struct co_config;
int webhook_keys_from_config(const struct co_config *cfg, struct webhook_keys *out);

/* Wipe the key bytes of K (OPENSSL_cleanse) and set K->n to 0. */
void webhook_keys_clear(struct webhook_keys *k);

/* Why a webhook was accepted or refused; also the index of a metrics
 * counter (WEBHOOK_N_VERDICTS of them). */
enum webhook_verdict {
    WEBHOOK_OK = 0,
    WEBHOOK_MISSING_HEADER,  /* 401: a webhook-* header is absent */
    WEBHOOK_MALFORMED,       /* 401: a header is there but not well-formed */
    WEBHOOK_STALE_TIMESTAMP, /* 401: outside ±tolerance of now (replay, clock) */
    WEBHOOK_BAD_SIGNATURE,   /* 401: no v1 entry matches any key */
    WEBHOOK_ERROR,           /* 500: OpenSSL failed (no memory); let the provider retry */
    WEBHOOK_N_VERDICTS
};

/*
 * Verify one webhook.  ID, TIMESTAMP and SIGNATURE are the values of the
 * webhook-id, webhook-timestamp and webhook-signature headers (NULL when
 * absent), BODY/LEN the raw request body exactly as received (BODY may be
 * NULL when LEN is 0; NULL with LEN > 0 is WEBHOOK_ERROR).  NOW is the
 * current unix time in seconds, TOLERANCE_S the allowed clock difference
 * either way ([provider] signature_tolerance).
 *
 * Checked in this order, the first failure deciding: all three headers
 * present; webhook-id 1..WEBHOOK_MAX_ID printable ASCII characters;
 * webhook-timestamp a decimal integer (digits only, no sign, no leading
 * zero, at most 18 digits); |timestamp - now| <= TOLERANCE_S; then the
 * signature.  webhook-signature is a blank-separated list of
 * "<version>,<base64>"; only the first WEBHOOK_MAX_SIGNATURES entries are
 * looked at, and among them only "v1" ones count (others are ignored).
 * Accepted when any v1 entry equals the HMAC under any key.  When none
 * does: WEBHOOK_MALFORMED if the list is empty or an entry lacks its comma
 * or a v1 entry is not base64 of 32 bytes, else WEBHOOK_BAD_SIGNATURE
 * (which also covers "no v1 entry at all" and K with no keys).
 *
 * *WHY (WHY may be NULL) gets a short static English reason, fit for a
 * log line or a problem+json detail; it never contains header values.
 */
enum webhook_verdict webhook_verify(const struct webhook_keys *k, const char *id,
                                    const char *timestamp, const char *signature, const char *body,
                                    size_t len, long long now, double tolerance_s,
                                    const char **why);

/* Stable snake_case name of V ("ok", "missing_header", "malformed",
 * "stale_timestamp", "bad_signature", "error") for logs and metric labels;
 * "unknown" for anything else. */
const char *webhook_verdict_name(enum webhook_verdict v);

/*
 * Sign BODY/LEN as webhook ID at TIMESTAMP (unix seconds, >= 0) with the
 * decoded KEY/KEYLEN and write the webhook-signature value "v1,<base64>"
 * to OUT (OUTLEN >= WEBHOOK_SIGNATURE_BUF).  ID must pass the same checks
 * as in webhook_verify().  Returns 0, or -1 (bad argument, OUT too small,
 * OpenSSL failure) with OUT set to "" when OUTLEN > 0.  To sign with two
 * keys during a rotation, join two results with a space.
 */
int webhook_sign(const unsigned char *key, size_t keylen, const char *id, long long timestamp,
                 const char *body, size_t len, char *out, size_t outlen);

/*
 * callback_auth = api-key: 1 when HEADER_VALUE (X-Api-Key, blanks around
 * it ignored) equals one of the one or two comma-separated tokens of
 * SECRETS ([provider] callback_secret), else 0 — also when the header is
 * NULL or blank, or SECRETS holds more than WEBHOOK_MAX_KEYS tokens.
 * SHA-256 digests are compared, in constant time, against every token.
 */
int webhook_apikey_ok(const char *header_value, const char *secrets);

#endif
