/*
 * pidfile.h — the master's pid file ([daemon] pid_file).
 *
 * Owns refusing to start a second master on the same pid file, and the
 * file's removal at exit.
 */
#ifndef CO_PIDFILE_H
#define CO_PIDFILE_H

#include <stddef.h>

/*
 * Write our pid to PATH.  Fails when PATH names a live process, or is a
 * symbolic link or anything but a regular file (never followed).
 */
int pidfile_write(const char *path, char *err, size_t errlen);

/* Remove PATH if it still holds our pid. */
void pidfile_remove(const char *path);

/* Read the pid in PATH; 0 when absent, unreadable or a symbolic link. */
long pidfile_read(const char *path);

#endif
