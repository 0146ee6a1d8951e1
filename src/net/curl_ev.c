/*
 * curl_ev.c — libcurl's multi_socket interface on a libev loop (see curl_ev.h).
 *
 * Owns: the CURLM handle, the struct ce_sock attached to each socket libcurl
 * watches (curl_multi_assign), the one timer libcurl asks for, and the
 * struct xfer of each request in flight (its easy handle, copied request,
 * response buffer and callback).
 *
 * The multi_socket contract: libcurl tells us through CURLMOPT_SOCKETFUNCTION
 * which sockets to watch for what and through CURLMOPT_TIMERFUNCTION when
 * to call it back; we call curl_multi_socket_action() on socket events and
 * on timer expiry, then harvest finished transfers with
 * curl_multi_info_read().  libcurl must not be called back from inside its
 * own callbacks, so the timer callback only arms the ev_timer (a 0 timeout
 * fires on the next loop iteration) and completions are always reported
 * from an ev callback, never from curl_ev_send().
 */
#include "net/curl_ev.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/log.h"
#include "util/strbuf.h"

/* Idle connections kept for reuse by one multi handle.  libcurl's default
 * shrinks the cache to 4 × the easy handles present, i.e. to a handful once
 * a burst is over, and the next burst reconnects. */
#define CE_MAX_CONNECTS 256

struct ce_sock { /* one socket libcurl asked us to watch */
    ev_io io;
    struct curl_ev *ce;
    curl_socket_t fd;
    struct ce_sock *prev, *next;
};

struct xfer { /* one request in flight */
    struct curl_ev *ce;
    CURL *easy;
    struct curl_slist *headers;
    char *body;         /* copy of the request body (POSTFIELDS does not copy) */
    struct strbuf resp; /* response body, at most CURL_EV_MAX_BODY */
    int truncated;
    char *retry_after;
    char errbuf[CURL_ERROR_SIZE];
    curl_ev_done_cb cb;
    void *arg;
    struct xfer *prev, *next;
};

struct curl_ev {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;
    struct ce_sock *socks;
    struct xfer *xfers;
    int in_flight;
    int closing; /* inside curl_ev_free(): no new requests */
};

static int global_done;

/* See curl_ev.h: main() calls it before forking or starting threads. */
int curl_ev_global_init(void)
{
    if (global_done)
        return 0;
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        co_error("curl_global_init failed", "error=\"%s\"", curl_easy_strerror(rc));
        return -1;
    }
    global_done = 1;
    return 0;
}

/* ----------------------------------------------------------- lists ------ */

/* Bookkeeping of the requests in flight and the watched sockets. */
static void xfer_link(struct curl_ev *ce, struct xfer *x)
{
    x->next = ce->xfers;
    if (ce->xfers)
        ce->xfers->prev = x;
    ce->xfers = x;
    ce->in_flight++;
}

static void xfer_unlink(struct curl_ev *ce, struct xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        ce->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    ce->in_flight--;
}

static void sock_unlink(struct curl_ev *ce, struct ce_sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        ce->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

/* --------------------------------------------------------- finishing ---- */

/* Release X's easy handle and copies (X must be out of the multi handle). */
static void xfer_free(struct xfer *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->body);
    strbuf_free(&x->resp);
    free(x->retry_after);
    free(x);
}

/* Report X's outcome to its owner, then free it.  X must already be out of
 * the multi handle and the list. */
static void xfer_complete(struct xfer *x, CURLcode result, const char *forced_error)
{
    struct curl_ev_response r = { 0 };

    r.result = result;
    if (result != CURLE_OK)
        r.error = forced_error   ? forced_error
                  : x->errbuf[0] ? x->errbuf
                                 : curl_easy_strerror(result);
    if (forced_error == NULL) /* an aborted transfer had no answer, whatever arrived */
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &r.total_time);
    r.body = x->resp.p ? x->resp.p : "";
    r.body_len = x->resp.len;
    r.body_truncated = x->truncated;
    r.retry_after = x->retry_after;
    x->cb(x->arg, &r);
    xfer_free(x);
}

/* Hand every finished transfer to its callback. */
static void check_done(struct curl_ev *ce)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(ce->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        CURLcode result = m->data.result; /* m is invalid after remove_handle */
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        struct xfer *x = (struct xfer *)priv;
        curl_multi_remove_handle(ce->multi, m->easy_handle);
        xfer_unlink(ce, x);
        xfer_complete(x, result, NULL);
    }
}

/* ------------------------------------------------------- ev -> curl ----- */

/* A watched socket is ready: let libcurl work on it. */
static void sock_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ce_sock *s = w->data;
    struct curl_ev *ce = s->ce;
    int running;
    int flags =
        ((revents & EV_READ) ? CURL_CSELECT_IN : 0) | ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    (void)loop;

    /* s may be freed inside (CURL_POLL_REMOVE): do not touch it after */
    curl_multi_socket_action(ce->multi, s->fd, flags, &running);
    check_done(ce);
}

/* libcurl's timeout expired. */
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct curl_ev *ce = w->data;
    int running;
    (void)loop;
    (void)revents;

    curl_multi_socket_action(ce->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(ce);
}

/* ------------------------------------------------------- curl -> ev ----- */

/* Stop watching S and free it. */
static void sock_remove(struct curl_ev *ce, struct ce_sock *s)
{
    ev_io_stop(ce->loop, &s->io);
    sock_unlink(ce, s);
    free(s);
}

/* Start tracking FD; libcurl hands S back to socket_fn from now on. */
static struct ce_sock *sock_add(struct curl_ev *ce, curl_socket_t fd)
{
    struct ce_sock *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->ce = ce;
    s->fd = fd;
    ev_init(&s->io, sock_cb);
    s->io.data = s;
    s->next = ce->socks;
    if (ce->socks)
        ce->socks->prev = s;
    ce->socks = s;
    curl_multi_assign(ce->multi, fd, s);
    return s;
}

/* CURLMOPT_SOCKETFUNCTION: watch FD for WHAT, or stop watching it. */
static int socket_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct curl_ev *ce = userp;
    struct ce_sock *s = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            curl_multi_assign(ce->multi, fd, NULL);
            sock_remove(ce, s);
        }
        return 0;
    }
    if (s == NULL && (s = sock_add(ce, fd)) == NULL) {
        co_error("curl_ev: out of memory", "fd=%d", (int)fd);
        return -1; /* libcurl fails the transfers on this socket */
    }
    int events = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    ev_io_stop(ce->loop, &s->io);
    ev_io_set(&s->io, fd, events);
    ev_io_start(ce->loop, &s->io);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: (re)arm or stop the one timer. */
static int timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
    struct curl_ev *ce = userp;
    (void)multi;

    ev_timer_stop(ce->loop, &ce->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&ce->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(ce->loop, &ce->timer);
    }
    return 0;
}

/* ----------------------------------------------------- the response ----- */

/* CURLOPT_WRITEFUNCTION: keep up to CURL_EV_MAX_BODY bytes. */
static size_t write_fn(char *data, size_t size, size_t nmemb, void *userp)
{
    struct xfer *x = userp;
    size_t n = size * nmemb;
    size_t keep = n;

    if (x->resp.len + keep > CURL_EV_MAX_BODY) {
        keep = CURL_EV_MAX_BODY - x->resp.len;
        x->truncated = 1;
    }
    if (keep == 0)
        return n; /* accepted and discarded */
    if (strbuf_add(&x->resp, data, keep) < 0)
        return 0; /* out of memory: CURLE_WRITE_ERROR */
    return n;
}

/* CURLOPT_HEADERFUNCTION: remember Retry-After of the final response. */
static size_t header_fn(char *data, size_t size, size_t nitems, void *userp)
{
    static const char name[] = "retry-after:";
    struct xfer *x = userp;
    size_t n = size * nitems;

    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        free(x->retry_after); /* a new response (after a 1xx) starts */
        x->retry_after = NULL;
        return n;
    }
    if (n <= sizeof(name) - 1 || strncasecmp(data, name, sizeof(name) - 1) != 0)
        return n;
    const char *v = data + sizeof(name) - 1, *end = data + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    free(x->retry_after);
    x->retry_after = strndup(v, (size_t)(end - v));
    return n;
}

/* -------------------------------------------------- request setup ------ */

/* Method and body (copied: CURLOPT_POSTFIELDS does not copy). */
static int set_method(struct xfer *x, const struct curl_ev_request *req)
{
    const char *m = req->method ? req->method : "GET";
    CURL *e = x->easy;
    int rc = 0;

    if (req->body_len > 0) {
        if ((x->body = malloc(req->body_len)) == NULL)
            return -1;
        memcpy(x->body, req->body, req->body_len);
        rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
    } else if (strcmp(m, "POST") == 0) {
        rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
        rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    }
    if (strcmp(m, "HEAD") == 0)
        rc |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(m, "GET") == 0 && req->body_len == 0)
        rc |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    else if (strcmp(m, "POST") != 0)
        rc |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    return rc ? -1 : 0;
}

/* The caller's headers, plus an empty Expect. */
static int set_headers(struct xfer *x, const struct curl_ev_request *req)
{
    /* libcurl would add "Expect: 100-continue" to large bodies: one more
     * round trip for nothing; an empty value removes the header. */
    struct curl_slist *l = curl_slist_append(NULL, "Expect:");
    if (l == NULL)
        return -1;
    x->headers = l;
    for (const char *const *h = req->headers; h && *h; h++) {
        if ((l = curl_slist_append(x->headers, *h)) == NULL)
            return -1;
        x->headers = l;
    }
    return curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers) ? -1 : 0;
}

/* The options every request gets (see curl_ev.h). */
static int set_common(struct xfer *x, const struct curl_ev_request *req)
{
    CURL *e = x->easy;
    int rc = 0;

    rc |= curl_easy_setopt(e, CURLOPT_URL, req->url);
    rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
    rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_PROXY, "");
    rc |= curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    rc |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_fn);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    rc |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_fn);
    rc |= curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    if (req->timeout_s > 0) {
        long ms = (long)(req->timeout_s * 1000.0);
        rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms > 0 ? ms : 1L);
    }
    return rc ? -1 : 0;
}

/* ------------------------------------------------------- public API ----- */

struct curl_ev *curl_ev_new(struct ev_loop *loop)
{
    if (curl_ev_global_init() < 0)
        return NULL;
    struct curl_ev *ce = calloc(1, sizeof(*ce));
    if (ce == NULL || (ce->multi = curl_multi_init()) == NULL) {
        co_error("curl_ev: cannot create a multi handle", "error=\"out of memory\"");
        free(ce);
        return NULL;
    }
    ce->loop = loop;
    ev_init(&ce->timer, timer_cb);
    ce->timer.data = ce;
    curl_multi_setopt(ce->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
    curl_multi_setopt(ce->multi, CURLMOPT_SOCKETDATA, ce);
    curl_multi_setopt(ce->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
    curl_multi_setopt(ce->multi, CURLMOPT_TIMERDATA, ce);
    curl_multi_setopt(ce->multi, CURLMOPT_MAXCONNECTS, (long)CE_MAX_CONNECTS);
    return ce;
}

int curl_ev_send(struct curl_ev *ce, const struct curl_ev_request *req, curl_ev_done_cb cb,
                 void *arg)
{
    if (ce->closing) {
        co_warn("curl_ev: request refused while shutting down", "url=%s", CO_LOG_Q(req->url));
        return -1;
    }
    struct xfer *x = calloc(1, sizeof(*x));
    if (x == NULL)
        goto nomem;
    x->ce = ce;
    x->cb = cb;
    x->arg = arg;
    if ((x->easy = curl_easy_init()) == NULL || set_common(x, req) < 0 || set_method(x, req) < 0 ||
        set_headers(x, req) < 0)
        goto nomem;
    CURLMcode mc = curl_multi_add_handle(ce->multi, x->easy);
    if (mc != CURLM_OK) {
        co_error("curl_ev: cannot add a transfer", "url=%s error=\"%s\"", CO_LOG_Q(req->url),
                 curl_multi_strerror(mc));
        xfer_free(x);
        return -1;
    }
    xfer_link(ce, x);
    return 0;
nomem:
    co_error("curl_ev: cannot set up a request", "url=%s error=\"out of memory\"",
             CO_LOG_Q(req->url));
    if (x)
        xfer_free(x);
    return -1;
}

int curl_ev_in_flight(const struct curl_ev *ce)
{
    return ce->in_flight;
}

void curl_ev_free(struct curl_ev *ce)
{
    if (ce == NULL)
        return;
    ce->closing = 1;
    while (ce->xfers) {
        struct xfer *x = ce->xfers;
        curl_multi_remove_handle(ce->multi, x->easy);
        xfer_unlink(ce, x);
        xfer_complete(x, CURLE_ABORTED_BY_CALLBACK, "aborted: client shut down");
    }
    /* closes the cached connections; may still call socket_fn/timer_fn */
    curl_multi_cleanup(ce->multi);
    ev_timer_stop(ce->loop, &ce->timer);
    while (ce->socks)
        sock_remove(ce, ce->socks);
    free(ce);
}
