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

/* Bind one address; returns the fd or -1 with a message in err. */
static int bind_one(const struct co_listen *l, char *err, size_t errlen)
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
    if (res->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
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

int listen_open(const struct co_config *cfg, struct listen_set *ls, char *err, size_t errlen)
{
    ls->n = 0;
    for (int i = 0; i < cfg->n_listen; i++) {
        int fd = bind_one(&cfg->listen[i], err, errlen);
        if (fd < 0) {
            listen_close(ls);
            return -1;
        }
        ls->fds[ls->n++] = fd;
    }
    return 0;
}

int listen_same(const struct co_config *a, const struct co_config *b)
{
    if (a->n_listen != b->n_listen)
        return 0;
    for (int i = 0; i < a->n_listen; i++)
        if (strcmp(a->listen[i].host, b->listen[i].host) != 0 ||
            strcmp(a->listen[i].port, b->listen[i].port) != 0)
            return 0;
    return 1;
}

void listen_close(struct listen_set *ls)
{
    for (int i = 0; i < ls->n; i++)
        close(ls->fds[i]);
    ls->n = 0;
}
