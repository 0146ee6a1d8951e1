/*
 * tap_redis.h — a plain blocking Redis client for the C unit tests that
 * look inside Redis behind the code under test (unit_redis_slots,
 * unit_reconcile_slots).  Header-only, like tap.h; needs tap.h first.
 */
#ifndef CO_TAP_REDIS_H
#define CO_TAP_REDIS_H

#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

static redisContext *admin;

/* (Re)connect the admin client to Redis on loopback PORT, or bail. */
static void admin_connect(int port)
{
    struct timeval tv = { 5, 0 };

    if (admin != NULL)
        redisFree(admin);
    admin = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (admin == NULL || admin->err)
        bail("cannot connect to Redis on port %d: %s", port, admin ? admin->errstr : "oom");
}

/* An admin command whose reply is an integer (or -1). */
static long long admin_int(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static long long admin_int(const char *fmt, ...)
{
    va_list ap;
    long long v = -1;

    va_start(ap, fmt);
    redisReply *r = redisvCommand(admin, fmt, ap);
    va_end(ap);
    if (r == NULL)
        bail("admin connection: %s", admin->errstr);
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    freeReplyObject(r);
    return v;
}

/* An admin command whose reply is a string ("" for nil); the text lives
 * until the next call (room for INFO server). */
static const char *admin_str(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *admin_str(const char *fmt, ...)
{
    static char buf[4096];
    va_list ap;

    va_start(ap, fmt);
    redisReply *r = redisvCommand(admin, fmt, ap);
    va_end(ap);
    if (r == NULL)
        bail("admin connection: %s", admin->errstr);
    snprintf(buf, sizeof(buf), "%s",
             r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                     r->type == REDIS_REPLY_ERROR
                 ? r->str
                 : "");
    freeReplyObject(r);
    return buf;
}

#endif
