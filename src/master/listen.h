/*
 * listen.h — the HTTP listening sockets.
 *
 * Owns binding [http] listen in the master, before any child exists, so a
 * child never needs privileges, and which http worker accepts on which
 * socket.  Each address gets one SO_REUSEPORT socket per http worker slot:
 * the kernel spreads new connections over them by a hash of the client's
 * address and port, so every worker gets its share (with one shared socket,
 * the worker that happened to be awake took whole bursts of connections,
 * and wrk's keep-alive connections stayed with it for the whole run).
 *
 * The master keeps every socket open for as long as its address is listed:
 * a respawned worker, or the next generation after a reload, accepts on the
 * very same sockets, so the connections queued in them while no worker
 * accepted are served, not reset.  Closing a SO_REUSEPORT socket resets the
 * connections queued in it; so when a reload lowers [http] workers the
 * sockets of the slots that go away stay open and the remaining workers
 * accept on them too (worker i serves the sockets of slots i, i + workers,
 * i + 2 * workers ...): nothing is lost, at the price of an uneven spread
 * until the next restart.  Only an address removed from [http] listen has
 * its sockets closed (by the master at once, by the retiring workers when
 * they leave), as before.
 *
 * The price of sockets per worker: connections the kernel hashed to a slot
 * whose worker is down wait in that slot's queue until it is respawned (at
 * once after a stable run, after the backoff in a crash loop), and a slot
 * that failed fatally holds them until the next reload, where one shared
 * socket let the other workers take them.  Handing a dead slot's sockets to
 * the living workers would need them passed over a unix socket; not done.
 * (EPOLLEXCLUSIVE on one shared socket was the other way: libev's epoll
 * backend cannot set it, and the kernel wakes exclusive waiters in LIFO
 * order, which favours the busiest worker, the very imbalance to remove.)
 *
 * A reload that raises [http] workers needs more sockets, but the kernel
 * adds a socket to a SO_REUSEPORT group only if the same user created it,
 * and a port below 1024 needs privileges: a master started as root, which
 * has become [daemon] user since, could not bind them.  So a master started
 * as root binds spare sockets at start, bound but not listening (the kernel
 * gives them no connection), and a reload that adds workers only calls
 * listen() on them; up to LISTEN_RESERVE_FDS sockets in all.
 */
#ifndef CO_LISTEN_H
#define CO_LISTEN_H

#include <stddef.h>

#include "util/config.h"

/* One socket per http worker slot, at most. */
#define LISTEN_MAX_SLOTS CO_MAX_HTTP_WORKERS

/* Most sockets, over all addresses, a master started as root binds at
 * start (the spares included): a bound on its descriptors. */
#define LISTEN_RESERVE_FDS 256

/* One address of [http] listen and its sockets, fds[slot]: the first
 * n_live listen, the rest up to n_fds are spares (bound only). */
struct listen_addr {
    struct co_listen where;
    int fds[LISTEN_MAX_SLOTS];
    int n_live;
    int n_fds;
};

struct listen_set {
    struct listen_addr addr[CO_MAX_LISTEN];
    int n_addr;
};

/* Bind and listen on every address of CFG, one socket per [http] workers
 * slot.  Returns 0, or -1 with a message naming the address in err
 * (nothing stays open then). */
int listen_open(const struct co_config *cfg, struct listen_set *ls, char *err, size_t errlen);

/* When running as root (about to drop privileges): bind the spare sockets,
 * as many as LISTEN_RESERVE_FDS allows; a shortfall is logged, not fatal. */
void listen_reserve(struct listen_set *ls);

/*
 * Reload: fill NEXT with the sockets CFG needs.  Addresses CUR already
 * listens on move to NEXT with all their sockets (more are bound if CFG has
 * more workers); new addresses are bound.  On success CUR keeps only the
 * addresses CFG no longer lists, for the caller to close.  Returns 0, or -1
 * with why in ERR and both sets as they were.
 */
int listen_update(struct listen_set *cur, const struct co_config *cfg, struct listen_set *next,
                  char *err, size_t errlen);

/*
 * In a new http worker of SLOT out of WORKERS: close the sockets it does
 * not serve and put the ones it does into FDS (room for CAP).  Returns how
 * many; LS must not be used afterwards.
 */
int listen_keep_worker(struct listen_set *ls, int slot, int workers, int *fds, int cap);

void listen_close(struct listen_set *ls);

#endif
