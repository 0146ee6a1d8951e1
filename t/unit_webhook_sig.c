/*
 * unit_webhook_sig.c — TAP tests for src/util/webhook_sig.c.
 *
 * The published Standard Webhooks test vector first (signing must
 * reproduce it byte for byte), then every way a webhook is refused, key
 * rotation, the bounds on the headers, the secret format, and the
 * api-key alternative.
 */
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "util/config.h"
#include "util/webhook_sig.h"

/* https://github.com/standard-webhooks/standard-webhooks (spec, test vector) */
#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS 1614265330LL
#define VEC_TS_S "1614265330"
#define VEC_BODY "{\"test\": 2432232314}"
#define VEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

#define KEY_B "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX" /* bytes 0..23 */
#define TOL 300.0

static struct webhook_keys K; /* the vector's key alone */

/* Verify the vector's id/timestamp/body under KEYS with signature header SIG. */
static enum webhook_verdict vec(const struct webhook_keys *keys, const char *sig)
{
    return webhook_verify(keys, VEC_ID, VEC_TS_S, sig, VEC_BODY, strlen(VEC_BODY), VEC_TS, TOL,
                          NULL);
}

static void test_vector(void)
{
    char err[128] = "", sig[WEBHOOK_SIGNATURE_BUF];
    const char *why = NULL;

    is_int(0, webhook_keys_parse(VEC_SECRET, &K, err, sizeof err), "vector secret parses");
    ok(K.n == 1 && K.len[0] == 24, "vector secret: one key of 24 bytes");
    is_int(0,
           webhook_sign(K.key[0], K.len[0], VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), sig,
                        sizeof sig),
           "sign the vector");
    is_string(VEC_SIG, sig, "sign reproduces the published signature");
    is_int(WEBHOOK_OK,
           webhook_verify(&K, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, strlen(VEC_BODY), VEC_TS, TOL,
                          &why),
           "vector verifies");
    is_string("signature verified", why, "why on success");
}

static void test_refused(void)
{
    struct webhook_keys other;
    char body[] = VEC_BODY, err[128];
    const char *why = NULL;

    body[9] ^= 1; /* one byte of the body */
    is_int(WEBHOOK_BAD_SIGNATURE,
           webhook_verify(&K, VEC_ID, VEC_TS_S, VEC_SIG, body, strlen(body), VEC_TS, TOL, &why),
           "one body byte changed: bad signature");
    is_string("no v1 signature matches", why, "why: nothing matches");
    is_int(WEBHOOK_BAD_SIGNATURE,
           webhook_verify(&K, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, strlen(VEC_BODY) - 1, VEC_TS,
                          TOL, NULL),
           "body one byte shorter: bad signature");
    is_int(WEBHOOK_BAD_SIGNATURE,
           webhook_verify(&K, "msg_other", VEC_TS_S, VEC_SIG, VEC_BODY, strlen(VEC_BODY), VEC_TS,
                          TOL, NULL),
           "another webhook-id: bad signature");
    is_int(0, webhook_keys_parse(KEY_B, &other, err, sizeof err), "second secret parses");
    is_int(WEBHOOK_BAD_SIGNATURE, vec(&other, VEC_SIG), "wrong key: bad signature");
    is_int(WEBHOOK_BAD_SIGNATURE, vec(NULL, VEC_SIG), "no keys at all: bad signature");
    webhook_keys_clear(&other);
    ok(other.n == 0 && other.key[0][1] == 0, "keys_clear wipes the key");
}

static void test_timestamp(void)
{
    const char *why = NULL;
    const char *id = VEC_ID, *b = VEC_BODY;
    size_t n = strlen(b);

    is_int(WEBHOOK_STALE_TIMESTAMP,
           webhook_verify(&K, id, VEC_TS_S, VEC_SIG, b, n, VEC_TS + 301, TOL, &why),
           "timestamp 301 s old, tolerance 300 s: stale");
    is_string("webhook-timestamp is too old", why, "why: too old");
    is_int(WEBHOOK_OK, webhook_verify(&K, id, VEC_TS_S, VEC_SIG, b, n, VEC_TS + 300, TOL, NULL),
           "timestamp exactly 300 s old: accepted");
    is_int(WEBHOOK_STALE_TIMESTAMP,
           webhook_verify(&K, id, VEC_TS_S, VEC_SIG, b, n, VEC_TS - 301, TOL, &why),
           "timestamp 301 s in the future: stale");
    is_string("webhook-timestamp is too far in the future", why, "why: future");
    is_int(WEBHOOK_OK, webhook_verify(&K, id, VEC_TS_S, VEC_SIG, b, n, VEC_TS - 300, TOL, NULL),
           "timestamp exactly 300 s ahead: accepted");
    is_int(WEBHOOK_STALE_TIMESTAMP,
           webhook_verify(&K, id, VEC_TS_S, VEC_SIG, b, n, VEC_TS, 0.0 / 0.0, NULL),
           "NaN tolerance refuses");

    static const char *const bad[] = { "abc",          "",
                                       "1614265330.0", "-1614265330",
                                       "+1614265330",  " 1614265330",
                                       "1614265330 ",  "01614265330",
                                       "1614265330x",  "1234567890123456789" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        is_int(WEBHOOK_MALFORMED, webhook_verify(&K, id, bad[i], VEC_SIG, b, n, VEC_TS, TOL, &why),
               "timestamp \"%s\": malformed", bad[i]);
    is_string("webhook-timestamp is not decimal unix seconds", why, "why: timestamp format");
}

static void test_missing(void)
{
    const char *why = NULL, *b = VEC_BODY;
    size_t n = strlen(b);

    is_int(WEBHOOK_MISSING_HEADER,
           webhook_verify(&K, NULL, VEC_TS_S, VEC_SIG, b, n, VEC_TS, TOL, &why),
           "webhook-id missing");
    is_string("webhook-id header missing", why, "why names webhook-id");
    is_int(WEBHOOK_MISSING_HEADER,
           webhook_verify(&K, VEC_ID, NULL, VEC_SIG, b, n, VEC_TS, TOL, &why),
           "webhook-timestamp missing");
    is_string("webhook-timestamp header missing", why, "why names webhook-timestamp");
    is_int(WEBHOOK_MISSING_HEADER,
           webhook_verify(&K, VEC_ID, VEC_TS_S, NULL, b, n, VEC_TS, TOL, &why),
           "webhook-signature missing");
    is_string("webhook-signature header missing", why, "why names webhook-signature");
    is_int(WEBHOOK_MISSING_HEADER, webhook_verify(&K, NULL, NULL, NULL, b, n, VEC_TS, TOL, NULL),
           "all three missing");
}

static void test_signature_list(void)
{
    const char *why = NULL;
    const char *wrong = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    is_int(WEBHOOK_OK, vec(&K, "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " VEC_SIG),
           "second of two signatures matches");
    is_int(WEBHOOK_OK,
           vec(&K, "  " VEC_SIG "  \t v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= "),
           "first of two, extra blanks");
    is_int(WEBHOOK_BAD_SIGNATURE, vec(&K, wrong), "one wrong but well-formed signature");
    is_int(WEBHOOK_BAD_SIGNATURE, vec(&K, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
           "the right MAC labelled v2 is ignored");
    is_int(WEBHOOK_OK, vec(&K, "v2,anything v1a,xyz= " VEC_SIG), "v2 and v1a entries skipped");
    is_int(WEBHOOK_OK, vec(&K, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"),
           "unpadded base64 accepted");

    is_int(WEBHOOK_MALFORMED, vec(&K, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE*"),
           "bad base64 character: malformed");
    is_int(WEBHOOK_MALFORMED,
           webhook_verify(&K, VEC_ID, VEC_TS_S, "v1,!!!!", VEC_BODY, strlen(VEC_BODY), VEC_TS, TOL,
                          &why),
           "garbage base64: malformed");
    is_string("webhook-signature has an entry that is not \"v1,<base64 of 32 bytes>\"", why,
              "why: malformed entry");
    is_int(WEBHOOK_MALFORMED, vec(&K, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=="),
           "too much padding: malformed");
    is_int(WEBHOOK_MALFORMED, vec(&K, "v1,AAAA"), "3-byte signature: malformed");
    /* "...OF=" decodes to the same 32 bytes as "...OE=" by lenient
     * decoders (the last character's 2 spare bits differ): one spelling only */
    is_int(WEBHOOK_MALFORMED, vec(&K, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF="),
           "non-zero spare bits in the last character: malformed");
    is_int(WEBHOOK_MALFORMED, vec(&K, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=AAAA"),
           "48-character signature: malformed");
    is_int(WEBHOOK_MALFORMED, vec(&K, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
           "entry without version: malformed");
    is_int(WEBHOOK_MALFORMED, vec(&K, ",g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
           "empty version: malformed");
    is_int(WEBHOOK_MALFORMED, vec(&K, ""), "empty header: malformed");
    is_int(WEBHOOK_MALFORMED, vec(&K, "   "), "blank header: malformed");
    is_int(WEBHOOK_OK, vec(&K, "v1,!!!! " VEC_SIG), "a malformed entry beside a match: accepted");
}

/* Only the first WEBHOOK_MAX_SIGNATURES entries are looked at. */
static void test_bounds(void)
{
    char hdr[1024] = "", id[WEBHOOK_MAX_ID + 2], sig[WEBHOOK_SIGNATURE_BUF];
    const char *wrong = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= ";

    for (int i = 0; i < WEBHOOK_MAX_SIGNATURES - 1; i++)
        strcat(hdr, wrong);
    strcat(hdr, VEC_SIG);
    is_int(WEBHOOK_OK, vec(&K, hdr), "match as entry 10 of 10: accepted");
    strcpy(hdr, "v9,x ");
    for (int i = 0; i < WEBHOOK_MAX_SIGNATURES - 2; i++)
        strcat(hdr, wrong);
    strcat(hdr, VEC_SIG " " VEC_SIG);
    is_int(WEBHOOK_OK, vec(&K, hdr), "a v9 entry and 8 wrong ones, match as entry 10");
    hdr[0] = '\0';
    for (int i = 0; i < WEBHOOK_MAX_SIGNATURES; i++)
        strcat(hdr, wrong);
    strcat(hdr, VEC_SIG);
    is_int(WEBHOOK_BAD_SIGNATURE, vec(&K, hdr), "match as entry 11: ignored");

    memset(id, 'a', WEBHOOK_MAX_ID);
    id[WEBHOOK_MAX_ID] = '\0';
    is_int(0, webhook_sign(K.key[0], K.len[0], id, VEC_TS, "{}", 2, sig, sizeof sig),
           "sign a 256-character id");
    is_int(WEBHOOK_OK, webhook_verify(&K, id, VEC_TS_S, sig, "{}", 2, VEC_TS, TOL, NULL),
           "256-character webhook-id: accepted");
    id[WEBHOOK_MAX_ID] = 'a';
    id[WEBHOOK_MAX_ID + 1] = '\0';
    is_int(WEBHOOK_MALFORMED, webhook_verify(&K, id, VEC_TS_S, sig, "{}", 2, VEC_TS, TOL, NULL),
           "257-character webhook-id: malformed");
    is_int(-1, webhook_sign(K.key[0], K.len[0], id, VEC_TS, "{}", 2, sig, sizeof sig),
           "sign refuses a 257-character id");
    is_string("", sig, "and leaves OUT empty");
    is_int(WEBHOOK_MALFORMED, webhook_verify(&K, "", VEC_TS_S, VEC_SIG, "{}", 2, VEC_TS, TOL, NULL),
           "empty webhook-id: malformed");
    is_int(WEBHOOK_MALFORMED,
           webhook_verify(&K, "msg 1", VEC_TS_S, VEC_SIG, "{}", 2, VEC_TS, TOL, NULL),
           "webhook-id with a blank: malformed");
}

static void test_sign(void)
{
    char sig[WEBHOOK_SIGNATURE_BUF], small[WEBHOOK_SIGNATURE_BUF - 1] = "x";
    static const char bin[] = "a\0b\0c";

    is_int(-1,
           webhook_sign(K.key[0], K.len[0], VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), small,
                        sizeof small),
           "sign: OUT one byte short refused");
    is_string("", small, "sign: short OUT emptied");
    is_int(-1, webhook_sign(K.key[0], K.len[0], VEC_ID, -1, "", 0, sig, sizeof sig),
           "sign: negative timestamp refused");
    is_int(0, webhook_sign(K.key[0], K.len[0], "m1", 0, NULL, 0, sig, sizeof sig),
           "sign: empty body, timestamp 0");
    is_int(WEBHOOK_OK, webhook_verify(&K, "m1", "0", sig, NULL, 0, 0, TOL, NULL),
           "verify: empty body, timestamp 0");
    is_int(0, webhook_sign(K.key[0], K.len[0], "m2", VEC_TS, bin, sizeof bin, sig, sizeof sig),
           "sign: body with NUL bytes");
    is_int(WEBHOOK_OK, webhook_verify(&K, "m2", VEC_TS_S, sig, bin, sizeof bin, VEC_TS, TOL, NULL),
           "verify: body with NUL bytes, whole length signed");
    is_int(WEBHOOK_BAD_SIGNATURE,
           webhook_verify(&K, "m2", VEC_TS_S, sig, bin, 1, VEC_TS, TOL, NULL),
           "verify: body cut at its first NUL refused");
}

static void test_rotation(void)
{
    struct webhook_keys two, b;
    char err[128] = "", sig[WEBHOOK_SIGNATURE_BUF], hdr[2 * WEBHOOK_SIGNATURE_BUF];

    is_int(0, webhook_keys_parse(KEY_B " , " VEC_SECRET, &two, err, sizeof err),
           "two secrets parse (blanks around the comma)");
    is_int(2, two.n, "two keys");
    is_int(WEBHOOK_OK, vec(&two, VEC_SIG), "signature by the second (previous) key accepted");
    is_int(0, webhook_keys_parse(KEY_B, &b, err, sizeof err), "new key alone parses");
    webhook_sign(b.key[0], b.len[0], VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), sig, sizeof sig);
    is_int(WEBHOOK_OK, vec(&two, sig), "signature by the first (current) key accepted");
    is_int(WEBHOOK_BAD_SIGNATURE, vec(&K, sig), "new key's signature refused by the old key alone");
    snprintf(hdr, sizeof hdr, "%s %s", sig, VEC_SIG);
    is_int(WEBHOOK_OK, vec(&b, hdr), "sender signing with both keys: new receiver accepts");
    is_int(WEBHOOK_OK, vec(&K, hdr), "sender signing with both keys: old receiver accepts");
    webhook_keys_clear(&two);
    webhook_keys_clear(&b);
}

/* Expect webhook_keys_parse(S) to fail with a message containing WANT. */
static void bad_secret(const char *s, const char *want, const char *what)
{
    struct webhook_keys k;
    char err[160] = "";
    k.n = 7;
    int rc = webhook_keys_parse(s, &k, err, sizeof err);
    ok(rc == -1 && k.n == 0 && strstr(err, want) != NULL, "secret refused: %s", what);
    if (rc != -1 || strstr(err, want) == NULL)
        diag("rc %d, err \"%s\"", rc, err);
}

static void test_secrets(void)
{
    struct webhook_keys k;
    bad_secret(VEC_SECRET "," KEY_B "," VEC_SECRET, "more than 2 secrets", "three secrets");
    bad_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "secret 1 does not start with \"whsec_\"",
               "no prefix");
    bad_secret("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "does not start", "wrong prefix");
    bad_secret(VEC_SECRET ",WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
               "secret 2 does not start with \"whsec_\"", "prefix is case-sensitive");
    bad_secret("whsec_MfKQ9r8GKYqrTwjU!D8ILPZIo2LaLaSw", "not valid base64", "bad character");
    bad_secret("whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw", "not valid base64", "inner blank");
    bad_secret("whsec_AAECAwQFBgcICQoLDA0ODw=", "not valid base64", "wrong padding");
    bad_secret("whsec_AAECAwQFBgcICQoLDA0O", "15 bytes once decoded", "key too short");
    bad_secret("whsec_AAECAwQFBgcICQoLDA0ODx==", "not valid base64",
               "non-zero spare bits (x after D), padded");
    bad_secret("whsec_AAECAwQFBgcICQoLDA0ODx", "not valid base64", "non-zero spare bits, unpadded");
    bad_secret("whsec_", "not valid base64", "prefix only");
    bad_secret("", "secret 1 is empty", "empty");
    bad_secret(NULL, "secret 1 is empty", "NULL");
    bad_secret(VEC_SECRET ",", "secret 2 is empty", "trailing comma");
    is_int(0, webhook_keys_parse("whsec_AAECAwQFBgcICQoLDA0ODw==", &k, NULL, 0),
           "16-byte padded secret, err NULL");
    ok(k.len[0] == 16 && k.key[0][15] == 15, "decoded bytes 0..15");
    ok(webhook_keys_parse("x", &k, NULL, 0) == -1 && k.n == 0, "failure with err NULL");
}

static void test_from_config(void)
{
    struct co_config *c = NULL;
    struct webhook_keys k;
    char err[256] = "";
    int rc = co_config_load_string(
        "t.ini", "[provider]\ncallback_secret = " KEY_B ", " VEC_SECRET "\n", &c, err, sizeof err);
    if (!ok(rc == 0, "config with two secrets loads")) {
        diag("%s", err);
        return;
    }
    is_int(2, webhook_keys_from_config(c, &k), "from_config: two keys");
    is_int(WEBHOOK_OK, vec(&k, VEC_SIG), "from_config: previous key verifies the vector");
    co_config_free(c);
    c = NULL;
    rc = co_config_load_string("t.ini",
                               "[provider]\ncallback_auth = api-key\n"
                               "callback_secret = token-of-twenty-chars\n",
                               &c, err, sizeof err);
    ok(rc == 0 && webhook_keys_from_config(c, &k) == 0 && k.n == 0,
       "from_config: api-key mode has no HMAC keys");
    co_config_free(c);
}

static void test_apikey(void)
{
    const char *sec = "token-one-0123456789, token-two-abcdefghij";
    ok(webhook_apikey_ok("token-one-0123456789", sec), "api-key: first token");
    ok(webhook_apikey_ok("token-two-abcdefghij", sec), "api-key: second token");
    ok(webhook_apikey_ok(" \ttoken-two-abcdefghij ", sec), "api-key: blanks around the header");
    ok(!webhook_apikey_ok("token-three-xxxxxxxx", sec), "api-key: wrong token");
    ok(!webhook_apikey_ok("token-one-012345678", sec), "api-key: prefix of a token");
    ok(!webhook_apikey_ok("token-one-0123456789x", sec), "api-key: token plus a byte");
    ok(!webhook_apikey_ok("token-one-0123456789, token-two-abcdefghij", sec),
       "api-key: the whole secret list is not a token");
    ok(!webhook_apikey_ok(NULL, sec), "api-key: header missing");
    ok(!webhook_apikey_ok("", sec), "api-key: header empty");
    ok(!webhook_apikey_ok("  ", sec), "api-key: header blank");
    ok(!webhook_apikey_ok("", ""), "api-key: nothing configured, empty header");
    ok(!webhook_apikey_ok("a", NULL), "api-key: secrets NULL");
    ok(webhook_apikey_ok("solo-token-0123456789", "solo-token-0123456789"), "api-key: one token");
    ok(!webhook_apikey_ok("c", "a,b,c"), "api-key: three tokens configured: fail closed");
}

static void test_names(void)
{
    is_string("ok", webhook_verdict_name(WEBHOOK_OK), "name: ok");
    is_string("missing_header", webhook_verdict_name(WEBHOOK_MISSING_HEADER), "name: missing");
    is_string("malformed", webhook_verdict_name(WEBHOOK_MALFORMED), "name: malformed");
    is_string("stale_timestamp", webhook_verdict_name(WEBHOOK_STALE_TIMESTAMP), "name: stale");
    is_string("bad_signature", webhook_verdict_name(WEBHOOK_BAD_SIGNATURE), "name: bad sig");
    is_string("error", webhook_verdict_name(WEBHOOK_ERROR), "name: error");
    is_string("unknown", webhook_verdict_name(WEBHOOK_N_VERDICTS), "name: out of range");
}

int main(void)
{
    test_vector();
    test_refused();
    test_timestamp();
    test_missing();
    test_signature_list();
    test_bounds();
    test_sign();
    test_rotation();
    test_secrets();
    test_from_config();
    test_apikey();
    test_names();
    webhook_keys_clear(&K);
    return done_testing();
}
