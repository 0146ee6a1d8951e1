/*
 * notify.c — sd_notify wrappers (see notify.h).
 */
#include <auto-config.h>

#include "master/notify.h"

#include <stdarg.h>
#include <stdio.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

static void send_state(const char *state)
{
#ifdef HAVE_SYSTEMD
    /* unset_environment = 0: children forked later may not use it anyway,
     * but the master notifies again on every reload */
    sd_notify(0, state);
#else
    (void)state;
#endif
}

void notify_ready(void)
{
    send_state("READY=1");
}

void notify_reloading(void)
{
    send_state("RELOADING=1");
}

void notify_stopping(void)
{
    send_state("STOPPING=1");
}

void notify_status(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n = snprintf(buf, sizeof(buf), "STATUS=");
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    send_state(buf);
}
