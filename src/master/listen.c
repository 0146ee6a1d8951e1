/*
 * listen.c — bind the HTTP listening sockets (see listen.h).
 */
#include "master/listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

/* A socket bound to L's address; -1 with a message in err.  SO_REUSEPORT
 * lets the sockets of one address (one per worker slot) share it; without
 * it the bind fails wherever anything else listens there. */
static int bind_addr(const struct co_listen *l, int reuseport, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res;
    int rc = getaddrinfo(l->host, l->port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "listen %s:%s: %s", l->host, l->port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (res->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0)
        goto fail;
    freeaddrinfo(res);
    return fd;
fail:
    snprintf(err, errlen, "listen %s:%s: %s", l->host, l->port, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

/*
 * Whether nobody listens at L yet.  SO_REUSEPORT would let our sockets
 * join another process's group (any process of the same user that set it,
 * a second callorchd included) and take half its connections; a plain bind
 * fails there, as it did before there was one socket per worker.
 */
static int addr_free(const struct co_listen *l, char *err, size_t errlen)
{
    int fd = bind_addr(l, 0, err, errlen);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* Add sockets to A until it has N, one per slot; -1 with why in ERR (the
 * sockets added so far stay in A). */
static int grow(struct listen_addr *a, int n, char *err, size_t errlen)
{
    while (a->n_fds < n) {
        int fd = bind_addr(&a->where, 1, err, errlen);
        if (fd < 0)
            return -1;
        if (listen(fd, LISTEN_BACKLOG) < 0) {
            snprintf(err, errlen, "listen %s:%s: %s", a->where.host, a->where.port,
                     strerror(errno));
            close(fd);
            return -1;
        }
        a->fds[a->n_fds++] = fd;
    }
    return 0;
}

/* Close A's sockets from index FROM on. */
static void shrink(struct listen_addr *a, int from)
{
    while (a->n_fds > from)
        close(a->fds[--a->n_fds]);
}

static int slot_count(const struct co_config *cfg, char *err, size_t errlen)
{
    if (cfg->workers < 1 || cfg->workers > LISTEN_MAX_SLOTS) {
        snprintf(err, errlen, "[http] workers %d: 1 to %d", cfg->workers, LISTEN_MAX_SLOTS);
        return -1;
    }
    return cfg->workers;
}

static int find_addr(const struct listen_set *ls, const struct co_listen *l)
{
    for (int i = 0; i < ls->n_addr; i++)
        if (strcmp(ls->addr[i].where.host, l->host) == 0 &&
            strcmp(ls->addr[i].where.port, l->port) == 0)
            return i;
    return -1;
}

int listen_update(struct listen_set *cur, const struct co_config *cfg, struct listen_set *next,
                  char *err, size_t errlen)
{
    int kept[CO_MAX_LISTEN], from[CO_MAX_LISTEN]; /* index in CUR or -1; sockets taken over */
    int slots = slot_count(cfg, err, errlen);

    next->n_addr = 0;
    if (slots < 0)
        return -1;
    for (int i = 0; i < cfg->n_listen; i++) {
        struct listen_addr *a = &next->addr[next->n_addr++];
        kept[i] = find_addr(cur, &cfg->listen[i]);
        if (kept[i] >= 0)
            *a = cur->addr[kept[i]];
        else
            *a = (struct listen_addr){ .where = cfg->listen[i] };
        from[i] = a->n_fds;
        if ((kept[i] < 0 && !addr_free(&a->where, err, errlen)) ||
            grow(a, slots, err, errlen) < 0) {
            for (int j = 0; j < next->n_addr; j++)
                shrink(&next->addr[j], from[j]);
            next->n_addr = 0;
            return -1;
        }
    }
    /* what moved to NEXT is no longer CUR's to close */
    for (int i = 0; i < cfg->n_listen; i++)
        if (kept[i] >= 0)
            cur->addr[kept[i]].n_fds = 0;
    return 0;
}

int listen_open(const struct co_config *cfg, struct listen_set *ls, char *err, size_t errlen)
{
    struct listen_set none = { .n_addr = 0 };
    return listen_update(&none, cfg, ls, err, errlen);
}

int listen_keep_worker(struct listen_set *ls, int slot, int workers, int *fds, int cap)
{
    int n = 0;
    for (int i = 0; i < ls->n_addr; i++) {
        struct listen_addr *a = &ls->addr[i];
        for (int j = 0; j < a->n_fds; j++) {
            if (j % workers == slot && n < cap)
                fds[n++] = a->fds[j];
            else
                close(a->fds[j]);
        }
        a->n_fds = 0;
    }
    ls->n_addr = 0;
    return n;
}

void listen_close(struct listen_set *ls)
{
    for (int i = 0; i < ls->n_addr; i++)
        shrink(&ls->addr[i], 0);
    ls->n_addr = 0;
}
