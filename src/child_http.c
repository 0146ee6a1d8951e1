/*
 * child_http.c — an HTTP child: serves the API on the inherited sockets.
 *
 * Owns the wiring of one HTTP worker: the http_server on the child's loop
 * and the routing of requests to the API modules.
 */
#include <stdlib.h>
#include <string.h>

#include "child.h"
#include "http_server.h"
#include "log.h"

struct http_state {
    struct child_ctx *ctx;
    struct http_server *server;
};

static void handle(struct http_request *req, void *arg)
{
    const char *path = http_request_path(req);
    static const char ok[] = "{\"status\":\"ok\"}";
    static const char nf[] = "{\"type\":\"about:blank\",\"title\":\"Not Found\",\"status\":404,"
                             "\"detail\":\"no such route\"}";
    if (strcmp(path, "/healthz") == 0)
        http_respond(req, 200, "application/json", NULL, ok, sizeof(ok) - 1);
    else
        http_respond(req, 404, "application/problem+json", NULL, nf, sizeof(nf) - 1);
}

static int http_start(struct child_ctx *ctx, void **state)
{
    struct http_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return 1;
    const struct co_config *cfg = ctx->cfg;
    struct http_server_opts opts = {
        .max_connections = cfg->max_connections,
        .max_body = cfg->max_body,
        .max_header_bytes = 16 * 1024,
        .idle_timeout = cfg->idle_timeout,
        .read_timeout = cfg->idle_timeout,
    };
    st->ctx = ctx;
    st->server = http_server_new(ctx->loop, ctx->listen_fds, ctx->n_listen, &opts, handle, st);
    if (st->server == NULL) {
        free(st);
        return CHILD_EXIT_FATAL;
    }
    *state = st;
    child_notify_ready(ctx);
    return 0;
}

static void on_drained(void *arg)
{
    struct http_state *st = arg;
    child_done(st->ctx);
}

static void http_stop(void *state, struct child_ctx *ctx)
{
    struct http_state *st = state;
    http_server_stop_accepting(st->server);
    http_server_drain(st->server, on_drained, st);
}

static void http_cleanup(void *state)
{
    struct http_state *st = state;
    http_server_free(st->server);
    free(st);
}

const struct child_ops child_http_ops = {
    .start = http_start,
    .stop = http_stop,
    .cleanup = http_cleanup,
};
