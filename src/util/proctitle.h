/*
 * proctitle.h — the process title shown by ps(1) ("callorchd: http worker 2").
 *
 * Owns the argv/environ memory area: co_proctitle_init() moves the
 * environment out of the way so that the title may use the whole area that
 * argv and environ occupied (the nginx ngx_setproctitle approach).  The
 * kernel's comm name stays "callorchd", so pgrep and journald keep finding
 * every process under one name.
 */
#ifndef CO_PROCTITLE_H
#define CO_PROCTITLE_H

/* Call once from main() before anything reads argv again; returns 0 or -1. */
int co_proctitle_init(int argc, char **argv);

void co_proctitle_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
