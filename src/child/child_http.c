/*
 * child_http.c — an HTTP child: serves the API on the sockets of its slot.
 *
 * Owns the wiring of one HTTP worker: the API state (database pool …) and
 * the http_server on the child's loop, and their orderly stop.
 */
#include <stdlib.h>

#include "api/api.h"
#include "child/child.h"
#include "net/http_server.h"
#include "util/log.h"
#include "util/shm.h"

struct http_state {
    struct child_ctx *ctx;
    struct api api;
    struct http_server *server;
};

static void observe(void *arg, int tag, int status, double seconds)
{
    const struct http_state *st = arg;
    shm_http_request((enum co_route)tag, status, seconds);
    shm_http_worker_request(st->ctx->slot);
}

static int http_start(struct child_ctx *ctx, void **state)
{
    char err[512];
    struct http_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return 1;
    const struct co_config *cfg = ctx->cfg;
    struct http_server_opts opts = {
        .max_connections = cfg->max_connections,
        .max_body = cfg->max_body,
        .max_body_for = api_max_body, /* the campaign routes take more */
        .max_header_bytes = 16 * 1024,
        .idle_timeout = cfg->idle_timeout,
        .read_timeout = cfg->idle_timeout,
    };
    st->ctx = ctx;
    if (api_init(&st->api, ctx->loop, cfg, err, sizeof(err)) < 0) {
        co_error("cannot set up the API", "error=%s", CO_LOG_Q(err));
        free(st);
        return CHILD_EXIT_FATAL;
    }
    st->server =
        http_server_new(ctx->loop, ctx->listen_fds, ctx->n_listen, &opts, api_handle, &st->api);
    if (st->server == NULL) {
        api_free(&st->api);
        free(st);
        return CHILD_EXIT_FATAL;
    }
    http_server_observe(st->server, observe, st);
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
    http_server_drain(st->server, on_drained, st);
}

static void http_cleanup(void *state)
{
    struct http_state *st = state;
    http_server_free(st->server);
    api_free(&st->api);
    free(st);
}

const struct child_ops child_http_ops = {
    .start = http_start,
    .stop = http_stop,
    .cleanup = http_cleanup,
};
