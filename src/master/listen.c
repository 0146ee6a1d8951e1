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

#include "util/log.h"

#define LISTEN_BACKLOG 1024

/* A socket bound to L's address; -1 with a message in err.  SO_REUSEPORT
 * lets the sockets of one address (one per worker slot) share it; without
 * it the bind fails wherever anything else listens there. */
static int bind_addr(const struct co_listen *l, int reuseport, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
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

/* Bind sockets to A until it has N (up to LISTEN_MAX_SLOTS); LIVE: listen
 * too.  -1 with why in ERR (the ones bound so far stay in A). */
static int bind_more(struct listen_addr *a, int n, int live, char *err, size_t errlen)
{
    while (a->n_fds < n) {
        int fd = bind_addr(&a->where, 1, err, errlen);
        if (fd >= 0 && live && listen(fd, LISTEN_BACKLOG) < 0) {
            snprintf(err, errlen, "listen %s:%s: %s", a->where.host, a->where.port,
                     strerror(errno));
            close(fd);
            fd = -1;
        }
        if (fd < 0)
            return -1;
        a->fds[a->n_fds++] = fd;
        a->n_live += live;
    }
    return 0;
}

/* Listen on A's spares until N sockets serve; on failure fewer do (logged). */
static void go_live(struct listen_addr *a, int n)
{
    while (a->n_live < n && a->n_live < a->n_fds) {
        if (listen(a->fds[a->n_live], LISTEN_BACKLOG) < 0) {
            co_error("cannot listen on a spare socket: fewer sockets serve this address",
                     "address=%s:%s slot=%d error=\"%s\"", a->where.host, a->where.port, a->n_live,
                     strerror(errno));
            return;
        }
        a->n_live++;
    }
}

/* Close A's sockets from index FROM on. */
static void shrink(struct listen_addr *a, int from)
{
    while (a->n_fds > from)
        close(a->fds[--a->n_fds]);
    if (a->n_live > from)
        a->n_live = from;
}

void listen_reserve(struct listen_set *ls)
{
    if (geteuid() != 0 || ls->n_addr == 0)
        return;
    int per_addr = LISTEN_RESERVE_FDS / ls->n_addr;
    char err[256];
    for (int i = 0; i < ls->n_addr; i++) {
        struct listen_addr *a = &ls->addr[i];
        int want = per_addr < LISTEN_MAX_SLOTS ? per_addr : LISTEN_MAX_SLOTS;
        if (want > a->n_fds && bind_more(a, want, 0, err, sizeof(err)) < 0)
            co_warn("cannot bind spare sockets: a reload cannot add http workers beyond them",
                    "error=%s sockets=%d", CO_LOG_Q(err), a->n_fds);
    }
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

/* A kept address needs sockets it has no spare for: say why it may fail. */
static void explain_no_spare(const struct listen_addr *a, char *err, size_t errlen)
{
    size_t len = strlen(err);
    snprintf(err + len, errlen - len,
             " (socket for http worker %d: a master that dropped privileges adds http workers"
             " on reload only up to the %d sockets it bound at start; restart to go further)",
             a->n_fds, a->n_fds);
}

/*
 * Two steps.  First everything that may fail and can be undone: new
 * addresses bound and listening (nothing refers to them yet), kept ones
 * given more bound sockets.  Then spares of kept addresses start to listen,
 * which cannot be undone without losing what they queued, so it is last.
 */
int listen_update(struct listen_set *cur, const struct co_config *cfg, struct listen_set *next,
                  char *err, size_t errlen)
{
    int kept[CO_MAX_LISTEN], from[CO_MAX_LISTEN]; /* index in CUR or -1; sockets it had */
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
        int ok = kept[i] >= 0 ? bind_more(a, slots, 0, err, errlen) == 0
                              : addr_free(&a->where, err, errlen) &&
                                    bind_more(a, slots, 1, err, errlen) == 0;
        if (!ok) {
            if (kept[i] >= 0)
                explain_no_spare(a, err, errlen);
            for (int j = 0; j < next->n_addr; j++)
                shrink(&next->addr[j], from[j]);
            next->n_addr = 0;
            return -1;
        }
    }
    for (int i = 0; i < next->n_addr; i++)
        go_live(&next->addr[i], slots);
    /* what moved to NEXT is no longer CUR's to close */
    for (int i = 0; i < cfg->n_listen; i++)
        if (kept[i] >= 0)
            cur->addr[kept[i]].n_fds = cur->addr[kept[i]].n_live = 0;
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
            if (j < a->n_live && j % workers == slot && n < cap)
                fds[n++] = a->fds[j];
            else
                close(a->fds[j]);
        }
        a->n_fds = a->n_live = 0;
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
