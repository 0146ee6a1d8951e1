/*
 * log.c — one line per event, key=value fields, to stderr, syslog or a file.
 *
 * Owns the process-wide log state: target, level, role.  Every process
 * (master and children) inherits the open target across fork(); a file
 * target is opened O_APPEND so lines from many processes do not interleave
 * within a line, and each line is written with a single write(2).
 */
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

enum log_kind { LOG_TO_STDERR, LOG_TO_SYSLOG, LOG_TO_FILE };

static struct {
    enum log_kind kind;
    enum co_log_level level;
    int fd;
    char path[4096];
    char role[32];
} logst = { LOG_TO_STDERR, CO_LOG_INFO, 2, "", "master" };

static const char *const level_names[] = { "error", "warn", "info", "debug" };

static int open_log_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int co_log_open(const char *target, enum co_log_level level)
{
    logst.level = level;
    if (target == NULL || strcmp(target, "stderr") == 0) {
        co_log_close();
        logst.kind = LOG_TO_STDERR;
        logst.fd = 2;
        return 0;
    }
    if (strcmp(target, "syslog") == 0) {
        co_log_close();
        logst.kind = LOG_TO_SYSLOG;
        openlog("callorchd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        return 0;
    }
    int fd = open_log_file(target);
    if (fd < 0)
        return -1;
    co_log_close();
    logst.kind = LOG_TO_FILE;
    logst.fd = fd;
    snprintf(logst.path, sizeof(logst.path), "%s", target);
    return 0;
}

int co_log_reopen(void)
{
    if (logst.kind != LOG_TO_FILE)
        return 0;
    int fd = open_log_file(logst.path);
    if (fd < 0)
        return -1;
    /* dup2 keeps the descriptor number, so nothing else has to learn it */
    dup2(fd, logst.fd);
    close(fd);
    return 0;
}

void co_log_close(void)
{
    if (logst.kind == LOG_TO_FILE && logst.fd > 2)
        close(logst.fd);
    else if (logst.kind == LOG_TO_SYSLOG)
        closelog();
    logst.kind = LOG_TO_STDERR;
    logst.fd = 2;
}

void co_log_set_role(const char *role)
{
    snprintf(logst.role, sizeof(logst.role), "%s", role);
}

void co_log_set_level(enum co_log_level level)
{
    logst.level = level;
}

int co_log_enabled(enum co_log_level level)
{
    return level <= logst.level;
}

/* Append MSG quoted, escaping what would break the key=value framing. */
static size_t append_quoted(char *buf, size_t off, size_t cap, const char *msg)
{
    if (off < cap)
        buf[off++] = '"';
    for (const char *p = msg; *p && off + 2 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            buf[off++] = '\\';
            buf[off++] = *p;
        } else if (*p == '\n' || *p == '\r') {
            buf[off++] = ' ';
        } else {
            buf[off++] = *p;
        }
    }
    if (off < cap)
        buf[off++] = '"';
    return off;
}

static size_t format_prefix(char *buf, size_t cap, enum co_log_level level)
{
    struct timeval tv;
    struct tm tm;
    char ts[32];

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(buf, cap, "ts=%s.%03ldZ level=%s role=%s pid=%ld msg=", ts,
                     (long)(tv.tv_usec / 1000), level_names[level], logst.role,
                     (long)getpid());
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static void emit(enum co_log_level level, char *line, size_t len)
{
    if (logst.kind == LOG_TO_SYSLOG) {
        static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
        syslog(prio[level], "%.*s", (int)len, line);
        return;
    }
    line[len++] = '\n';
    int saved = errno;
    ssize_t r = write(logst.fd, line, len);
    (void)r; /* nowhere left to report a failed log write */
    errno = saved;
}

void co_log(enum co_log_level level, const char *msg, const char *fmt, ...)
{
    char line[2048];
    const size_t cap = sizeof(line) - 1; /* room for the newline */

    if (!co_log_enabled(level))
        return;
    /* syslog adds its own timestamp and pid; keep only level/role there */
    size_t off = logst.kind == LOG_TO_SYSLOG
                     ? (size_t)snprintf(line, cap, "level=%s role=%s msg=",
                                        level_names[level], logst.role)
                     : format_prefix(line, cap, level);
    off = append_quoted(line, off, cap, msg);
    if (fmt != NULL && fmt[0] != '\0' && off + 1 < cap) {
        va_list ap;
        line[off++] = ' ';
        va_start(ap, fmt);
        int n = vsnprintf(line + off, cap - off, fmt, ap);
        va_end(ap);
        if (n > 0)
            off += (size_t)n < cap - off ? (size_t)n : cap - off - 1;
    }
    emit(level, line, off);
}
