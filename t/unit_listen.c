/*
 * unit_listen.c — TAP tests for src/master/listen.c, on loopback.
 *
 * One SO_REUSEPORT socket per http worker slot and the kernel spreading
 * connections over them; what a reload keeps, adds and leaves to close
 * (more workers, fewer workers, an address added, one removed, a bind
 * that fails and changes nothing); which sockets a worker keeps; the
 * spares of a master started as root.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "master/listen.h"
#include "tap.h"

static struct co_config cfg; /* only listen, n_listen and workers are read */

/* A loopback port that nothing uses (bound a moment ago, then closed). */
static int free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        bail("free_port: %s", strerror(errno));
    close(fd);
    return ntohs(sa.sin_port);
}

/* A free port other than A and B (the kernel may hand out one twice). */
static int free_port_but(int a, int b)
{
    int p;
    while ((p = free_port()) == a || p == b)
        ;
    return p;
}

/* CFG listens on PORTS (N of them) with WORKERS workers. */
static void configure(const int *ports, int n, int workers)
{
    cfg.n_listen = n;
    cfg.workers = workers;
    for (int i = 0; i < n; i++) {
        snprintf(cfg.listen[i].host, sizeof(cfg.listen[i].host), "127.0.0.1");
        snprintf(cfg.listen[i].port, sizeof(cfg.listen[i].port), "%d", ports[i]);
    }
}

static int sockopt(int fd, int opt)
{
    int v = -1;
    socklen_t len = sizeof(v);
    return getsockopt(fd, SOL_SOCKET, opt, &v, &len) < 0 ? -1 : v;
}

static int is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static int connect_to(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        bail("connect to %d: %s", port, strerror(errno));
    return fd;
}

/* Connections waiting in FD's accept queue, accepted and closed. */
static int drain(int fd)
{
    int n = 0, c;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while ((c = accept(fd, NULL, NULL)) >= 0) {
        close(c);
        n++;
    }
    return n;
}

/* 32 connections to PORT: how many each of A's sockets got.  The kernel
 * picks a socket by a hash of the client's port, so with 32 distinct ports
 * a socket of 2 gets none with a chance of 2^-31. */
static void spread(const struct listen_addr *a, int port, int *got)
{
    int clients[32];
    for (int i = 0; i < 32; i++)
        clients[i] = connect_to(port);
    for (int i = 0; i < a->n_live; i++)
        got[i] = drain(a->fds[i]);
    for (int i = 0; i < 32; i++)
        close(clients[i]);
}

static void test_open_and_spread(struct listen_set *ls, int port)
{
    char err[256] = "";
    configure(&port, 1, 2);
    if (!ok(listen_open(&cfg, ls, err, sizeof(err)) == 0, "open: 2 workers on port %d", port))
        bail("%s", err);
    is_int(1, ls->n_addr, "open: one address");
    is_int(2, ls->addr[0].n_live, "open: two listening sockets");
    is_int(2, ls->addr[0].n_fds, "open: no spare when not asked");
    ok(sockopt(ls->addr[0].fds[0], SO_REUSEPORT) == 1 &&
           sockopt(ls->addr[0].fds[1], SO_REUSEPORT) == 1,
       "open: both sockets SO_REUSEPORT");
    ok(sockopt(ls->addr[0].fds[1], SO_ACCEPTCONN) == 1, "open: both listen");

    int got[2];
    spread(&ls->addr[0], port, got);
    is_int(32, got[0] + got[1], "32 connections all queued on the two sockets");
    ok(got[0] > 0 && got[1] > 0, "both sockets got some (%d and %d)", got[0], got[1]);
}

static void test_second_owner(int port)
{
    struct listen_set other;
    char err[256] = "";
    configure(&port, 1, 2);
    ok(listen_open(&cfg, &other, err, sizeof(err)) < 0,
       "a second set on the same port fails (no joining the SO_REUSEPORT group)");
    like(err, "Address already in use", "and says why: %s", err);
    is_int(0, other.n_addr, "and keeps nothing open");
}

static void test_more_and_fewer_workers(struct listen_set *ls, int port)
{
    struct listen_set next;
    char err[256] = "";
    int fd0 = ls->addr[0].fds[0], fd1 = ls->addr[0].fds[1];

    configure(&port, 1, 3);
    if (!ok(listen_update(ls, &cfg, &next, err, sizeof(err)) == 0, "reload to 3 workers"))
        bail("%s", err);
    ok(next.addr[0].fds[0] == fd0 && next.addr[0].fds[1] == fd1, "3 workers: the two sockets kept");
    is_int(3, next.addr[0].n_live, "3 workers: a third socket listens");
    is_int(0, ls->addr[0].n_fds, "3 workers: nothing left for the caller to close");
    listen_close(ls);
    *ls = next;

    configure(&port, 1, 1);
    if (!ok(listen_update(ls, &cfg, &next, err, sizeof(err)) == 0, "reload to 1 worker"))
        bail("%s", err);
    is_int(3, next.addr[0].n_live, "1 worker: the three sockets stay open (no queue reset)");
    listen_close(ls);
    *ls = next;
}

static void test_addresses(struct listen_set *ls, int a, int b)
{
    struct listen_set next;
    char err[256] = "";
    int fd0 = ls->addr[0].fds[0];

    int both[] = { a, b };
    configure(both, 2, 2);
    if (!ok(listen_update(ls, &cfg, &next, err, sizeof(err)) == 0, "reload adds port %d", b))
        bail("%s", err);
    ok(next.n_addr == 2 && next.addr[0].fds[0] == fd0, "the kept address keeps its sockets");
    is_int(2, next.addr[1].n_live, "the new address: one socket per worker");
    listen_close(ls);
    *ls = next;

    /* a port someone else listens on: the reload fails, nothing changes */
    int c = free_port_but(a, b);
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = htons((uint16_t)c),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    if (busy < 0 || bind(busy, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(busy, 1) < 0)
        bail("busy socket: %s", strerror(errno));
    int three[] = { a, b, c };
    configure(three, 3, 4);
    ok(listen_update(ls, &cfg, &next, err, sizeof(err)) < 0, "reload to a busy port fails");
    like(err, "Address already in use", "and says why: %s", err);
    ok(ls->n_addr == 2 && ls->addr[0].n_live == 3 && ls->addr[1].n_live == 2 &&
           ls->addr[1].n_fds == 2 && is_open(ls->addr[1].fds[1]),
       "and the running set is as it was");
    close(busy);

    int fdb = ls->addr[1].fds[0];
    configure(&b, 1, 2);
    if (!ok(listen_update(ls, &cfg, &next, err, sizeof(err)) == 0, "reload drops port %d", a))
        bail("%s", err);
    ok(next.n_addr == 1 && next.addr[0].fds[0] == fdb, "the remaining address kept");
    ok(ls->addr[0].n_fds == 3 && is_open(fd0), "the dropped one is left to the caller to close");
    listen_close(ls);
    ok(!is_open(fd0), "listen_close closed it");
    *ls = next;
}

static void test_keep_worker(struct listen_set *ls)
{
    int fds[8];
    struct listen_addr a = ls->addr[0];
    int n = listen_keep_worker(ls, 1, 2, fds, 8);
    ok(n == 1 && fds[0] == a.fds[1], "worker 1 of 2 keeps the socket of slot 1");
    ok(!is_open(a.fds[0]) && is_open(a.fds[1]), "and closes the others");
    close(fds[0]);
}

static void test_spares(int port)
{
    struct listen_set ls, next;
    char err[256] = "";

    if (geteuid() != 0) {
        ok(1, "# SKIP spare sockets: only as root");
        return;
    }
    configure(&port, 1, 2);
    if (listen_open(&cfg, &ls, err, sizeof(err)) < 0)
        bail("open: %s", err);
    listen_reserve(&ls);
    ok(ls.addr[0].n_fds == LISTEN_MAX_SLOTS && ls.addr[0].n_live == 2,
       "root: spares bound up to %d sockets, 2 listen", LISTEN_MAX_SLOTS);
    ok(sockopt(ls.addr[0].fds[2], SO_ACCEPTCONN) == 0, "a spare does not listen");
    int spare = ls.addr[0].fds[2];
    configure(&port, 1, 3);
    ok(listen_update(&ls, &cfg, &next, err, sizeof(err)) == 0 && next.addr[0].fds[2] == spare &&
           sockopt(spare, SO_ACCEPTCONN) == 1,
       "a third worker gets the first spare, now listening");
    listen_close(&next);
}

int main(void)
{
    struct listen_set ls;
    int a = free_port(), b = free_port_but(a, a);

    test_open_and_spread(&ls, a);
    test_second_owner(a);
    test_more_and_fewer_workers(&ls, a);
    test_addresses(&ls, a, b);
    test_keep_worker(&ls);
    test_spares(free_port_but(a, b));
    return done_testing();
}
