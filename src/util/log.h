/*
 * log.h — the one logging API.
 *
 * Owns: the log target (stderr, syslog or a file), the level filter, the
 * process role that every line carries, and reopening the file on SIGUSR1.
 * A line is one event: "ts=… level=… role=… pid=… msg=\"…\" key=value …".
 * Callers pass the key=value tail themselves with co_log(), e.g.
 *   co_log(CO_LOG_INFO, "child exited", "pid=%d kind=%s status=%d", ...);
 */
#ifndef CO_LOG_H
#define CO_LOG_H

/* Severities, most severe first: a level logs itself and those above it. */
enum co_log_level { CO_LOG_ERROR = 0, CO_LOG_WARN, CO_LOG_INFO, CO_LOG_DEBUG };

#if defined(__GNUC__)
#define CO_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CO_PRINTF(a, b)
#endif

/* Open TARGET ("stderr", "syslog" or a path).  Returns 0 or -1 with errno. */
int co_log_open(const char *target, enum co_log_level level);

/* Reopen the file target (SIGUSR1); no-op for stderr and syslog. */
int co_log_reopen(void);

void co_log_close(void);

/* Set the role shown as role=… (e.g. "master", "http", "kafka", "sched"). */
void co_log_set_role(const char *role);

void co_log_set_level(enum co_log_level level);

int co_log_enabled(enum co_log_level level);

/*
 * Log MSG (quoted for you) followed by the printf-formatted key=value tail
 * FMT (may be NULL or "").
 */
void co_log(enum co_log_level level, const char *msg, const char *fmt, ...) CO_PRINTF(3, 4);

#define co_error(msg, ...) co_log(CO_LOG_ERROR, msg, __VA_ARGS__)
#define co_warn(msg, ...) co_log(CO_LOG_WARN, msg, __VA_ARGS__)
#define co_info(msg, ...) co_log(CO_LOG_INFO, msg, __VA_ARGS__)
#define co_debug(msg, ...)                                                     \
    do {                                                                       \
        if (co_log_enabled(CO_LOG_DEBUG))                                      \
            co_log(CO_LOG_DEBUG, msg, __VA_ARGS__);                            \
    } while (0)

#endif
