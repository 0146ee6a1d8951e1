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
#include <stdbool.h>
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

/*
 * The file target, never through a symbolic link: the master opens it as
 * root, so a link planted at the path would make root append to (or
 * create) another file.  A link fails with ELOOP.
 */
static int open_log_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
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

/*
 * The escape of byte C into OUT (at most 4 bytes, not terminated): \n \r \t,
 * \xHH for another control byte or DEL, and, when QUOTES, \" and \\.
 * Returns its length, 0 when C stands for itself.
 */
static size_t escape_byte(unsigned char c, bool quotes, char out[4])
{
    static const char hex[] = "0123456789abcdef";
    const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;

    if (named != NULL) {
        memcpy(out, named, 2);
        return 2;
    }
    if (c < 0x20 || c == 0x7f) {
        out[0] = '\\';
        out[1] = 'x';
        out[2] = hex[c >> 4];
        out[3] = hex[c & 0xf];
        return 4;
    }
    if (quotes && (c == '"' || c == '\\')) {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    return 0;
}

/*
 * Copy S into BUF from OFF, escaped (with QUOTES: also " and \), stopping
 * before the first byte whose escape would pass LIMIT.  Returns the new
 * offset; *DONE tells whether all of S was copied.
 */
static size_t append_escaped(char *buf, size_t off, size_t limit, const char *s, bool quotes,
                             bool *done)
{
    char e[4];
    for (; *s != '\0'; s++) {
        size_t n = escape_byte((unsigned char)*s, quotes, e);
        if (off + (n ? n : 1) > limit) {
            *done = false;
            return off;
        }
        if (n == 0)
            buf[off++] = *s;
        else
            memcpy(buf + off, e, n), off += n;
    }
    *done = true;
    return off;
}

/* Back OFF up over a UTF-8 character that the cut left incomplete. */
static size_t utf8_boundary(const char *buf, size_t start, size_t off)
{
    size_t lead = off;
    while (lead > start && ((unsigned char)buf[lead - 1] & 0xc0) == 0x80)
        lead--;
    if (lead == start || (unsigned char)buf[lead - 1] < 0xc0)
        return off; /* no multi-byte character at the end */
    unsigned char c = (unsigned char)buf[lead - 1];
    size_t want = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    return off - (lead - 1) >= want ? off : lead - 1;
}

/* S can stand unquoted (logfmt): not empty, fits, and only printable ASCII
 * that cannot end or fake a field (no space, quote, backslash or '='). */
static bool is_bare(const char *s, size_t size)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (s[n] <= ' ' || s[n] > '~' || s[n] == '"' || s[n] == '\\' || s[n] == '=')
            return false;
    return n > 0 && n < size;
}

const char *co_log_quote(char *buf, size_t size, const char *s)
{
    bool done;

    if (size < CO_LOG_QUOTE_MIN) {
        if (size > 0)
            buf[0] = '\0';
        return buf;
    }
    if (s == NULL) {
        snprintf(buf, size, "(null)");
        return buf;
    }
    if (is_bare(s, size)) {
        memcpy(buf, s, strlen(s) + 1);
        return buf;
    }
    buf[0] = '"';
    /* room for the closing quote and the NUL */
    size_t off = append_escaped(buf, 1, size - 2, s, true, &done);
    if (!done) {
        /* cut again so that "..." fits too */
        off = append_escaped(buf, 1, size - 5, s, true, &done);
        off = utf8_boundary(buf, 1, off);
        memcpy(buf + off, "...", 3);
        off += 3;
    }
    buf[off++] = '"';
    buf[off] = '\0';
    return buf;
}

/* Append MSG quoted, escaped like co_log_quote(); cut when it does not fit. */
static size_t append_quoted(char *buf, size_t off, size_t cap, const char *msg)
{
    bool done;
    if (off + 2 > cap)
        return off;
    buf[off++] = '"';
    off = append_escaped(buf, off, cap - 1, msg, true, &done);
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
                     (long)(tv.tv_usec / 1000), level_names[level], logst.role, (long)getpid());
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
    size_t off =
        logst.kind == LOG_TO_SYSLOG
            ? (size_t)snprintf(line, cap, "level=%s role=%s msg=", level_names[level], logst.role)
            : format_prefix(line, cap, level);
    off = append_quoted(line, off, cap, msg);
    if (fmt != NULL && fmt[0] != '\0' && off + 1 < cap) {
        char tail[sizeof line];
        bool done;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(tail, sizeof tail, fmt, ap);
        va_end(ap);
        if (n > 0) {
            /* defence in depth: a control byte a caller left unquoted is escaped */
            line[off++] = ' ';
            off = append_escaped(line, off, cap, tail, false, &done);
        }
    }
    emit(level, line, off);
}
