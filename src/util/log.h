/*
 * log.h — the one logging API.
 *
 * Owns: the log target (stderr, syslog or a file), the level filter, the
 * process role that every line carries, and reopening the file on SIGUSR1.
 * A line is one event: "ts=… level=… role=… pid=… msg=\"…\" key=value …".
 * Callers pass the key=value tail themselves with co_log(), e.g.
 *   co_log(CO_LOG_INFO, "child exited", "pid=%d kind=%s status=%d", ...);
 * A value that comes from outside (a client, the provider, a peer's error
 * text, a configuration value) goes through co_log_quote() / CO_LOG_Q(), the
 * one escaping function:
 *   co_warn("bad callback", "call_id=%s", CO_LOG_Q(id));
 * co_log() itself escapes any control byte still left in MSG or the tail,
 * so that one call never writes more than one line.
 */
#ifndef CO_LOG_H
#define CO_LOG_H

#include <stddef.h>

/* Severities, most severe first: a level logs itself and those above it. */
enum co_log_level { CO_LOG_ERROR = 0, CO_LOG_WARN, CO_LOG_INFO, CO_LOG_DEBUG };

#if defined(__GNUC__)
#define CO_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CO_PRINTF(a, b)
#endif

/*
 * Open TARGET ("stderr", "syslog" or a path; a path that is a symbolic link
 * is refused with ELOOP).  Returns 0 or -1 with errno.
 */
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

/*
 * Quote S as one key=value value into BUF (SIZE bytes, at least
 * CO_LOG_QUOTE_MIN), the logfmt way: a value of printable ASCII without
 * space, '"', '\\' or '=' that fits stands as it is (so ids and numbers read
 * the same as everywhere else); any other is a double-quoted string with \" \\ \n \r \t, and \xHH
 * for every other control byte and DEL; other bytes (UTF-8 included) as they
 * are.  A value that does not fit is cut at a whole character and ends in
 * "..." inside the quotes.  S NULL gives "(null)" unquoted.  Returns BUF.
 */
const char *co_log_quote(char *buf, size_t size, const char *s);

#define CO_LOG_QUOTE_MIN 6   /* "..." and the NUL */
#define CO_LOG_QUOTE_MAX 512 /* CO_LOG_Q()'s buffer */

/* co_log_quote() into a buffer that lives until the end of the enclosing block. */
#define CO_LOG_Q(s) co_log_quote((char[CO_LOG_QUOTE_MAX]){ 0 }, CO_LOG_QUOTE_MAX, (s))

#define co_error(msg, ...) co_log(CO_LOG_ERROR, msg, __VA_ARGS__)
#define co_warn(msg, ...) co_log(CO_LOG_WARN, msg, __VA_ARGS__)
#define co_info(msg, ...) co_log(CO_LOG_INFO, msg, __VA_ARGS__)
#define co_debug(msg, ...)                          \
    do {                                            \
        if (co_log_enabled(CO_LOG_DEBUG))           \
            co_log(CO_LOG_DEBUG, msg, __VA_ARGS__); \
    } while (0)

#endif
