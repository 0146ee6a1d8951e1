/*
 * notify.h — systemd service notifications (sd_notify).
 *
 * Owns the READY=1 / RELOADING=1 / STOPPING=1 / STATUS= messages of DESIGN.md
 * section 2.  Built without libsystemd (configure --without-systemd) these
 * are no-ops, and so they are when NOTIFY_SOCKET is unset (not under systemd).
 */
#ifndef CO_NOTIFY_H
#define CO_NOTIFY_H

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
