/*
 * pidfile.c — write, check and remove the pid file (see pidfile.h).
 *
 * The master writes it as root, often in a directory others can reach:
 * nothing here follows a symbolic link, and a pid file that is one is
 * refused, so that a link planted there cannot make root overwrite or
 * remove another file.
 */
#include "master/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

long pidfile_read(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
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
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "pid file %s is %s; refusing to use it", path,
                 S_ISLNK(st.st_mode) ? "a symbolic link" : "not a regular file");
        return -1;
    }
    long old = pidfile_read(path);
    if (old > 0 && old != (long)getpid() && (kill((pid_t)old, 0) == 0 || errno == EPERM)) {
        snprintf(err, errlen, "%s: another callorchd is running as pid %ld", path, old);
        return -1;
    }
    /* write a temporary file and rename it, so a reader never sees half */
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    /* a stale one (or a link planted there) goes; O_EXCL never follows one */
    if (unlink(tmp) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
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
