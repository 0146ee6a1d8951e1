/*
 * pidfile.c — write, check and remove the pid file (see pidfile.h).
 */
#include "master/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long pidfile_read(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 0 && (*end == '\n' || *end == '\0') ? pid : 0;
}

int pidfile_write(const char *path, char *err, size_t errlen)
{
    long old = pidfile_read(path);
    if (old > 0 && old != (long)getpid() && (kill((pid_t)old, 0) == 0 || errno == EPERM)) {
        snprintf(err, errlen, "%s: another callorchd is running as pid %ld", path, old);
        return -1;
    }
    /* write a temporary file and rename it, so a reader never sees half */
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    int wrote = write(fd, buf, (size_t)len) == len;
    if (close(fd) < 0 || !wrote || rename(tmp, path) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

void pidfile_remove(const char *path)
{
    if (pidfile_read(path) == (long)getpid())
        unlink(path);
}
