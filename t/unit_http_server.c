/*
 * unit_http_server.c — src/net/http_server.c over real sockets.
 *
 * A forked child runs an ev loop with an http_server and the test handler
 * below; the parent drives it with plain blocking sockets, so what is
 * checked is the bytes on the wire.  Two servers: A with short timeouts
 * (read 0.3 s, idle 0.6 s) and a 1 KiB body limit, B with max_connections 3.
 * Timing checks use generous bounds only.  CO_TEST_DEBUG=1 in the
 * environment makes the servers log at debug level to stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <http_parser.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net/http_server.h"
#include "tap.h"
#include "util/log.h"

/* ================================================= server side (child) ==== */

static struct {
    struct ev_loop *loop;
    struct http_server *srv;
    int gone;                     /* /slow requests found gone when answering */
    int depth;                    /* handler calls on the stack */
    int reentered;                /* handler calls made while one was on the stack */
    struct http_request *held[8]; /* /hold requests, answered by /release */
    int n_held;
} cst;

struct slow {
    ev_timer timer; /* first: the callback casts back */
    struct http_request *req;
};

static void slow_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct slow *sl = (struct slow *)w;
    (void)loop;
    (void)revents;
    if (http_request_is_gone(sl->req))
        cst.gone++;
    http_respond(sl->req, 200, "text/plain", NULL, "slow", 4);
    free(sl);
}

/* Answer 200 after 200 ms, from a timer: an asynchronous response. */
static void handle_slow(struct http_request *req)
{
    struct slow *sl = calloc(1, sizeof(*sl));
    sl->req = req;
    ev_timer_init(&sl->timer, slow_cb, 0.2, 0.);
    ev_timer_start(cst.loop, &sl->timer);
}

static void respond_json(struct http_request *req, int status, json_t *j)
{
    char *txt = json_dumps(j, JSON_COMPACT);
    http_respond(req, status, "application/json", NULL, txt, strlen(txt));
    free(txt);
    json_decref(j);
}

static void handle_echo(struct http_request *req)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    const char *q = http_request_query(req);
    json_t *j = json_pack("{s:s, s:s, s:o, s:s%}", "method",
                          http_method_str((enum http_method)http_request_method(req)), "path",
                          http_request_path(req), "query", q ? json_string(q) : json_null(), "body",
                          body, len);
    respond_json(req, 200, j);
}

static void handle_hdr(struct http_request *req)
{
    const char *v = http_request_header(req, "X-TEST");
    const char *absent = http_request_header(req, "X-Absent");
    const char *out = absent ? "absent header found" : v ? v : "(none)";
    http_respond(req, 200, "text/plain", NULL, out, strlen(out));
}

static void handle_big(struct http_request *req)
{
    size_t n = (size_t)strtoul(http_request_query(req) ? http_request_query(req) : "0", NULL, 10);
    char *body = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)('a' + i % 26);
    http_respond(req, 200, "text/plain", NULL, body, n);
    free(body);
}

/* Keep REQ unanswered until a /release. */
static void handle_hold(struct http_request *req)
{
    if (cst.n_held == (int)(sizeof(cst.held) / sizeof(cst.held[0])))
        http_respond(req, 503, "text/plain", NULL, "full", 4);
    else
        cst.held[cst.n_held++] = req;
}

/* Answer every held request in one loop, as a failed database batch does,
 * then REQ with their number. */
static void handle_release(struct http_request *req)
{
    struct http_request *list[sizeof(cst.held) / sizeof(cst.held[0])];
    int n = cst.n_held;

    memcpy(list, cst.held, sizeof(list));
    cst.n_held = 0;
    for (int i = 0; i < n; i++)
        http_respond(list[i], 200, "text/plain", NULL, "held", 4);
    respond_json(req, 200, json_pack("{s:i}", "released", n));
}

static void handle(struct http_request *req)
{
    const char *path = http_request_path(req);

    if (strcmp(path, "/slow") == 0)
        handle_slow(req);
    else if (strcmp(path, "/hdr") == 0)
        handle_hdr(req);
    else if (strcmp(path, "/big") == 0)
        handle_big(req);
    else if (strcmp(path, "/hold") == 0)
        handle_hold(req);
    else if (strcmp(path, "/release") == 0)
        handle_release(req);
    else if (strcmp(path, "/stats") == 0)
        respond_json(req, 200,
                     json_pack("{s:i, s:i, s:i}", "gone", cst.gone, "reentered", cst.reentered,
                               "held", cst.n_held));
    else if (strcmp(path, "/extra") == 0) /* second line without CRLF on purpose */
        http_respond(req, 201, "text/plain", "X-Extra: yes\r\nX-Two: 2", "x", 1);
    else if (strcmp(path, "/empty") == 0)
        http_respond(req, 204, NULL, NULL, NULL, 0);
    else if (strcmp(path, "/problem") == 0)
        http_respond_problem(req, 404, "no such thing", NULL);
    else
        handle_echo(req);
}

/* Counts calls made while another call is still on the stack: answering
 * a request must never run the handler for the next one. */
static void handler(struct http_request *req, void *arg)
{
    (void)arg;
    if (cst.depth > 0)
        cst.reentered++;
    cst.depth++;
    handle(req);
    cst.depth--;
}

static void on_drained(void *arg)
{
    (void)arg;
    ev_break(cst.loop, EVBREAK_ALL);
}

static void on_term(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    ev_signal_stop(loop, w);
    http_server_drain(cst.srv, on_drained, NULL);
}

/* The child: serve LFD until SIGTERM has drained everything.  Returns via
 * exit() so a sanitizer build checks for leaks. */
static int run_server(int lfd, const struct http_server_opts *o)
{
    ev_signal sig;

    co_log_set_role("http");
    co_log_set_level(getenv("CO_TEST_DEBUG") ? CO_LOG_DEBUG : CO_LOG_WARN);
    cst.loop = ev_default_loop(0);
    cst.srv = http_server_new(cst.loop, &lfd, 1, o, handler, NULL);
    if (cst.srv == NULL)
        return 1;
    ev_signal_init(&sig, on_term, SIGTERM);
    ev_signal_start(cst.loop, &sig);
    ev_run(cst.loop, 0);
    http_server_free(cst.srv);
    ev_loop_destroy(cst.loop);
    close(lfd);
    return 0;
}

/* Bind 127.0.0.1:0, fork a server child; returns its pid and the port. */
static pid_t start_server(const struct http_server_opts *o, int *port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t salen = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    pid_t pid;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0)
        bail("listen: %s", strerror(errno));
    *port = ntohs(sa.sin_port);
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        bail("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        exit(run_server(lfd, o));
    }
    close(lfd);
    return pid;
}

/* ================================================= client side (parent) ==== */

#define CL_BUF (16 * 1024 * 1024)

struct client {
    int fd;
    size_t len;
    char *buf; /* CL_BUF + 1 */
};

struct resp {
    int status;
    char head[8192];
    char *body; /* malloc'd, NUL-terminated */
    size_t body_len;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static struct client *cl_open(int port)
{
    struct client *c = calloc(1, sizeof(*c));
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->buf = malloc(CL_BUF + 1);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        bail("connect: %s", strerror(errno));
    return c;
}

static void cl_close(struct client *c)
{
    close(c->fd);
    free(c->buf);
    free(c);
}

static int cl_send(struct client *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int cl_sends(struct client *c, const char *s)
{
    return cl_send(c, s, strlen(s));
}

/* Read more, waiting until DEADLINE.  Returns bytes read, 0 on EOF, -1 on
 * timeout, -2 on error (e.g. reset) or a full buffer. */
static int cl_fill(struct client *c, double deadline)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    int ms = (int)((deadline - now()) * 1000);
    ssize_t n;

    if (ms < 0 || poll(&p, 1, ms) <= 0)
        return -1;
    if (c->len == CL_BUF)
        return -2;
    n = recv(c->fd, c->buf + c->len, CL_BUF - c->len, 0);
    if (n < 0)
        return -2;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    return (int)n;
}

/* Value of header NAME in R (a static buffer), or NULL. */
static const char *hdr(const struct resp *r, const char *name)
{
    static char val[1024];
    char pat[128];
    const char *p;
    size_t n;

    snprintf(pat, sizeof(pat), "\r\n%s:", name);
    p = strcasestr(r->head, pat);
    if (p == NULL)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    n = strcspn(p, "\r");
    if (n >= sizeof(val))
        n = sizeof(val) - 1;
    memcpy(val, p, n);
    val[n] = '\0';
    return val;
}

/* Read one response within MS (HEAD: no body).  Returns 0 or -1. */
static int cl_response(struct client *c, struct resp *r, int head, int ms)
{
    double deadline = now() + ms / 1000.0;
    size_t hlen, clen = 0;
    char *end;
    const char *cl;

    memset(r, 0, sizeof(*r));
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
        if (cl_fill(c, deadline) <= 0)
            return -1;
    hlen = (size_t)(end + 4 - c->buf);
    snprintf(r->head, sizeof(r->head), "%.*s", (int)hlen, c->buf);
    if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1)
        return -1;
    cl = hdr(r, "Content-Length");
    if (cl && !head && r->status >= 200 && r->status != 204 && r->status != 304)
        clen = strtoul(cl, NULL, 10);
    while (c->len < hlen + clen)
        if (cl_fill(c, deadline) <= 0)
            return -1;
    r->body = malloc(clen + 1);
    memcpy(r->body, c->buf + hlen, clen);
    r->body[clen] = '\0';
    r->body_len = clen;
    memmove(c->buf, c->buf + hlen + clen, c->len - hlen - clen);
    c->len -= hlen + clen;
    return 0;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* Wait up to MS for the server to close.  Returns 1 on EOF with nothing
 * more received, 2 on EOF after more data, 0 when still open. */
static int cl_eof(struct client *c, int ms)
{
    double deadline = now() + ms / 1000.0;
    size_t before = c->len;

    for (;;) {
        int n = cl_fill(c, deadline);
        if (n == 0 || n == -2)
            return c->len == before ? 1 : 2;
        if (n == -1)
            return 0;
    }
}

/* Send a GET and read its answer into R.  Returns 0 or -1. */
static int cl_get(struct client *c, const char *path, struct resp *r)
{
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path);
    if (cl_sends(c, req) < 0)
        return -1;
    return cl_response(c, r, 0, 5000);
}

/* ================================================================ tests ==== */

static void test_get(int port)
{
    struct client *c = cl_open(port);
    struct resp r;

    ok(cl_get(c, "/echo?x=1&y=2", &r) == 0, "GET: response");
    is_int(200, r.status, "GET: 200");
    like(r.body, "\"method\":\"GET\"", "GET: method");
    like(r.body, "\"path\":\"/echo\"", "GET: path without query");
    like(r.body, "\"query\":\"x=1&y=2\"", "GET: query");
    ok(hdr(&r, "Content-Length") != NULL, "GET: Content-Length");
    ok(hdr(&r, "Date") != NULL && strstr(hdr(&r, "Date"), " GMT"), "GET: Date");
    is_string("callorch", hdr(&r, "Server"), "GET: Server");
    is_string("application/json", hdr(&r, "Content-Type"), "GET: Content-Type");
    ok(hdr(&r, "Connection") == NULL, "GET: HTTP/1.1 keep-alive, no Connection header");
    resp_free(&r);
    ok(cl_get(c, "/echo", &r) == 0 && strstr(r.body, "\"query\":null"), "GET: no query is NULL");
    resp_free(&r);
    cl_close(c);
}

static void test_post(int port)
{
    struct client *c = cl_open(port);
    struct resp r;

    cl_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world");
    ok(cl_response(c, &r, 0, 5000) == 0 && r.status == 200, "POST: 200");
    like(r.body, "\"body\":\"hello world\"", "POST: body");
    resp_free(&r);

    cl_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nsplit");
    sleep_ms(50);
    cl_sends(c, " body");
    ok(cl_response(c, &r, 0, 5000) == 0, "POST: body in two writes");
    like(r.body, "\"body\":\"split body\"", "POST: body reassembled");
    resp_free(&r);

    cl_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\n\r\n");
    ok(cl_response(c, &r, 0, 5000) == 0 && r.status == 200, "POST without Content-Length: 200");
    like(r.body, "\"body\":\"\"", "POST without Content-Length: empty body");
    resp_free(&r);
    cl_close(c);
}

static void test_headers(int port)
{
    struct client *c = cl_open(port);
    struct resp r;

    cl_sends(c, "GET /hdr HTTP/1.1\r\nHost: t\r\nx-TeSt:   some value  \r\n\r\n");
    ok(cl_response(c, &r, 0, 5000) == 0, "header: response");
    is_string("some value", r.body, "header: case-insensitive lookup, blanks trimmed");
    resp_free(&r);
    cl_sends(c, "GET /hdr HTTP/1.1\r\nHost: t\r\nX-Empty:\r\n\r\n");
    ok(cl_response(c, &r, 0, 5000) == 0, "header: empty value");
    is_string("(none)", r.body, "header: absent header is NULL");
    resp_free(&r);

    ok(cl_get(c, "/extra", &r) == 0 && r.status == 201, "extra headers: 201");
    is_string("yes", hdr(&r, "X-Extra"), "extra headers: first");
    is_string("2", hdr(&r, "X-Two"), "extra headers: second, CRLF added");
    is_string("x", r.body, "extra headers: body intact");
    resp_free(&r);

    ok(cl_get(c, "/empty", &r) == 0 && r.status == 204, "204");
    ok(hdr(&r, "Content-Length") == NULL, "204: no Content-Length");
    resp_free(&r);

    ok(cl_get(c, "/problem", &r) == 0 && r.status == 404, "problem: 404");
    is_string("application/problem+json", hdr(&r, "Content-Type"), "problem: content type");
    like(r.body, "\"type\":\"https://callorch.dev/problems/not-found\"",
         "problem: type of the API");
    like(r.body, "\"detail\":\"no such thing\"", "problem: detail");
    resp_free(&r);

    cl_sends(c, "HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n");
    ok(cl_response(c, &r, 1, 5000) == 0 && r.status == 200, "HEAD: 200");
    ok(hdr(&r, "Content-Length") && atoi(hdr(&r, "Content-Length")) > 0, "HEAD: Content-Length");
    resp_free(&r);
    ok(cl_get(c, "/echo?after-head", &r) == 0 && strstr(r.body, "after-head"),
       "HEAD: no body bytes sent (next answer parses)");
    resp_free(&r);

    cl_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                "Expect: 100-continue\r\n\r\n");
    ok(cl_response(c, &r, 0, 5000) == 0 && r.status == 100, "Expect: 100 Continue first");
    resp_free(&r);
    cl_sends(c, "hello");
    ok(cl_response(c, &r, 0, 5000) == 0 && strstr(r.body, "\"body\":\"hello\""),
       "Expect: then the answer");
    resp_free(&r);
    cl_close(c);
}

static void test_keepalive(int port)
{
    struct client *c = cl_open(port);
    struct resp r;
    int good = 0;
    char path[64];

    for (int i = 0; i < 100; i++) {
        snprintf(path, sizeof(path), "/echo?i=%d", i);
        if (cl_get(c, path, &r) == 0 && r.status == 200 && strstr(r.body, path + 6))
            good++;
        resp_free(&r);
    }
    is_int(100, good, "keep-alive: 100 requests on one connection");
    cl_close(c);
}

static void test_pipeline(int port)
{
    struct client *c = cl_open(port);
    struct resp r;
    char all[4096] = "", one[128], want[64];
    int in_order = 0;

    for (int i = 0; i < 10; i++) {
        snprintf(one, sizeof(one), "GET /echo?p=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        strcat(all, one);
    }
    cl_sends(c, all);
    for (int i = 0; i < 10; i++) {
        snprintf(want, sizeof(want), "\"query\":\"p=%d\"", i);
        if (cl_response(c, &r, 0, 5000) == 0 && strstr(r.body, want))
            in_order++;
        resp_free(&r);
    }
    is_int(10, in_order, "pipeline: 10 requests in one write, answered in order");

    cl_sends(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /echo?fast HTTP/1.1\r\nHost: t\r\n\r\n");
    ok(cl_response(c, &r, 0, 5000) == 0, "pipeline async: first answer");
    is_string("slow", r.body, "pipeline async: /slow answered first");
    resp_free(&r);
    ok(cl_response(c, &r, 0, 5000) == 0 && strstr(r.body, "\"query\":\"fast\""),
       "pipeline async: /fast answered second");
    resp_free(&r);
    cl_close(c);
}

/* One /stats value of server PORT, or -1. */
static int stat_value(int port, const char *name)
{
    struct client *c = cl_open(port);
    struct resp r;
    int v = -1;

    if (cl_get(c, "/stats", &r) == 0) {
        json_t *j = json_loads(r.body, 0, NULL);
        json_t *x = json_object_get(j, name);
        if (json_is_integer(x))
            v = (int)json_integer_value(x);
        json_decref(j);
    }
    resp_free(&r);
    cl_close(c);
    return v;
}

/* Two connections each pipeline a held request and an echo behind it; a
 * third request answers both held ones in one loop.  The echoes must be
 * parsed after that loop, not from inside the answer (which would call the
 * handler again while /release's is still running), and be answered in
 * order.  Also checks that answering at once, with more requests buffered
 * (test_pipeline's ten), never re-entered the handler. */
static void test_answer_loop(int port)
{
    struct client *cx = cl_open(port), *cy = cl_open(port), *cz = cl_open(port);
    struct resp r;
    double deadline = now() + 5;
    int held;

    cl_sends(cx, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\nGET /echo?x2 HTTP/1.1\r\nHost: t\r\n\r\n");
    cl_sends(cy, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\nGET /echo?y2 HTTP/1.1\r\nHost: t\r\n\r\n");
    while ((held = stat_value(port, "held")) < 2 && now() < deadline)
        sleep_ms(10);
    is_int(2, held, "answer loop: both pipelined /hold requests are held");
    ok(cl_get(cz, "/release", &r) == 0 && strstr(r.body, "\"released\":2") != NULL,
       "answer loop: one request answers both in a loop");
    resp_free(&r);
    ok(cl_response(cx, &r, 0, 5000) == 0 && strcmp(r.body, "held") == 0,
       "answer loop: first connection gets its held answer");
    resp_free(&r);
    ok(cl_response(cx, &r, 0, 5000) == 0 && strstr(r.body, "\"query\":\"x2\"") != NULL,
       "answer loop: then its pipelined second request is answered");
    resp_free(&r);
    ok(cl_response(cy, &r, 0, 5000) == 0 && strcmp(r.body, "held") == 0,
       "answer loop: second connection gets its held answer");
    resp_free(&r);
    ok(cl_response(cy, &r, 0, 5000) == 0 && strstr(r.body, "\"query\":\"y2\"") != NULL,
       "answer loop: then its pipelined second request is answered");
    resp_free(&r);
    is_int(0, stat_value(port, "reentered"),
           "answer loop: the handler never ran inside another handler call");
    cl_close(cx);
    cl_close(cy);
    cl_close(cz);
}

/* A large answer to a client that does not read at first: 8 MB is more
 * than the server's send buffer (tcp_wmem max, 4 MB) and the client's
 * window together, so the server must queue it and finish on EV_WRITE.
 * It runs against server B, whose send timeout is 30 s: against A's 0.6 s
 * a loaded machine (valgrind, sanitizers) can stall delivery that long and
 * the test would measure the scheduler, not the server.  A tiny SO_RCVBUF
 * is not used either: it makes loopback TCP crawl on persist-timer probes. */
static void test_big(int port)
{
    struct client *c = cl_open(port);
    struct resp r;
    int intact = 1;

    cl_sends(c, "GET /big?8000000 HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(200);
    ok(cl_response(c, &r, 0, 30000) == 0 && r.body_len == 8000000, "big: 8 MB answer complete");
    for (size_t i = 0; i < r.body_len && intact; i++)
        intact = r.body[i] == (char)('a' + i % 26);
    ok(r.body_len > 0 && intact, "big: content intact");
    resp_free(&r);
    ok(cl_get(c, "/echo?after-big", &r) == 0 && strstr(r.body, "after-big"),
       "big: connection still usable");
    resp_free(&r);
    cl_close(c);
}

static void test_close(int port)
{
    struct client *c = cl_open(port);
    struct resp r;

    cl_sends(c, "GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    ok(cl_response(c, &r, 0, 5000) == 0 && r.status == 200, "Connection: close: answered");
    is_string("close", hdr(&r, "Connection"), "Connection: close: echoed");
    is_int(1, cl_eof(c, 5000), "Connection: close: closed after the answer");
    resp_free(&r);
    cl_close(c);

    c = cl_open(port);
    cl_sends(c, "GET /echo HTTP/1.0\r\n\r\n");
    ok(cl_response(c, &r, 0, 5000) == 0 && r.status == 200, "HTTP/1.0: answered");
    is_string("close", hdr(&r, "Connection"), "HTTP/1.0: Connection: close");
    is_int(1, cl_eof(c, 5000), "HTTP/1.0: closed");
    resp_free(&r);
    cl_close(c);

    c = cl_open(port);
    cl_sends(c, "GET /echo?a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    ok(cl_response(c, &r, 0, 5000) == 0, "HTTP/1.0 keep-alive: answered");
    is_string("keep-alive", hdr(&r, "Connection"), "HTTP/1.0 keep-alive: kept");
    resp_free(&r);
    cl_sends(c, "GET /echo?b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    ok(cl_response(c, &r, 0, 5000) == 0 && strstr(r.body, "\"query\":\"b\""),
       "HTTP/1.0 keep-alive: second request");
    resp_free(&r);
    cl_close(c);
}

/* Send RAW, expect an error STATUS as problem+json, then the close. */
static void expect_error(int port, const char *name, const char *raw, size_t len, int status)
{
    struct client *c = cl_open(port);
    struct resp r;
    char want[32];

    cl_send(c, raw, len);
    ok(cl_response(c, &r, 0, 5000) == 0, "%s: answered", name);
    is_int(status, r.status, "%s: status", name);
    is_string("application/problem+json", hdr(&r, "Content-Type"), "%s: problem+json", name);
    snprintf(want, sizeof(want), "\"status\":%d", status);
    like(r.body, want, "%s: problem body", name);
    is_string("close", hdr(&r, "Connection"), "%s: Connection: close", name);
    ok(cl_eof(c, 5000) > 0, "%s: closed", name);
    resp_free(&r);
    cl_close(c);
}

/* A per-request body limit (opts.max_body_for): /bulk takes 8 KiB, the
 * rest keeps max_body (1 KiB). */
static size_t bulk_limit(const char *path, int method, void *arg)
{
    (void)method;
    (void)arg;
    return strcmp(path, "/bulk") == 0 ? 8192 : 1024;
}

static void test_route_limit(int port)
{
    char *raw = malloc(12000), body[9001];
    struct resp r;
    int n;
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    struct client *c = cl_open(port);
    n = snprintf(raw, 12000,
                 "POST /bulk HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n%.5000s", body);
    cl_send(c, raw, (size_t)n);
    ok(cl_response(c, &r, 0, 5000) == 0 && r.status == 200,
       "max_body_for: 5000 bytes to /bulk (8 KiB): 200");
    resp_free(&r);
    cl_close(c);
    n = snprintf(raw, 12000,
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n%.5000s", body);
    expect_error(port, "max_body_for: 5000 bytes elsewhere (1 KiB)", raw, (size_t)n, 413);
    n = snprintf(raw, 12000,
                 "POST /bulk HTTP/1.1\r\nHost: t\r\nContent-Length: 9000\r\n\r\n%.9000s", body);
    expect_error(port, "max_body_for: 9000 bytes to /bulk", raw, (size_t)n, 413);
    free(raw);
}

static void test_errors(int port)
{
    static const char chunked[] = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                                  "\r\n5\r\nhello\r\n0\r\n\r\n";
    static const char garbage[] = "\x01\x02\x03 garbage \xff\r\n\r\n";
    static const char http2[] = "GET / HTTP/2.0\r\nHost: t\r\n\r\n";
    char big[20000], *raw = malloc(40000);
    int n;

    expect_error(port, "chunked", chunked, sizeof(chunked) - 1, 411);

    /* headers announce 100000 bytes, 3000 follow: refused before the body */
    memset(big, 'b', 3000);
    n = snprintf(raw, 40000,
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n%.3000s", big);
    expect_error(port, "body over max_body", raw, (size_t)n, 413);

    memset(big, 'h', 17000);
    n = snprintf(raw, 40000, "GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: %.17000s\r\n\r\n", big);
    expect_error(port, "header block over 16 KiB", raw, (size_t)n, 431);

    expect_error(port, "garbage", garbage, sizeof(garbage) - 1, 400);
    expect_error(port, "HTTP/2.0 request line", http2, sizeof(http2) - 1, 505);
    free(raw);
}

static void test_timeouts(int port)
{
    struct client *c = cl_open(port);
    struct resp r;
    double t0 = now(), dt;
    int cut = 0;

    /* half a request, then nothing */
    cl_sends(c, "GET /echo HTTP/1.1\r\nHost: t\r\nX-Partial: ab");
    ok(cl_response(c, &r, 0, 5000) == 0 && r.status == 408, "read timeout: 408");
    dt = now() - t0;
    ok(dt > 0.2 && dt < 4.0, "read timeout: after about 0.3 s (%.2f s)", dt);
    ok(cl_eof(c, 5000) > 0, "read timeout: closed");
    resp_free(&r);
    cl_close(c);

    /* slowloris: a byte every 50 ms does not extend the deadline */
    c = cl_open(port);
    t0 = now();
    cl_sends(c, "GET /echo HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    while (now() - t0 < 3.0 && !cut) {
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        if (send(c->fd, "a", 1, MSG_NOSIGNAL) < 0 || poll(&p, 1, 50) > 0)
            cut = 1;
    }
    dt = now() - t0;
    ok(cut && dt < 2.0, "slowloris: cut off despite trickling bytes (%.2f s)", dt);
    ok(cl_response(c, &r, 0, 5000) == 0 && r.status == 408, "slowloris: 408");
    resp_free(&r);
    cl_close(c);

    /* idle keep-alive connection */
    c = cl_open(port);
    ok(cl_get(c, "/echo", &r) == 0, "idle: first request");
    resp_free(&r);
    t0 = now();
    is_int(1, cl_eof(c, 5000), "idle: closed silently");
    dt = now() - t0;
    ok(dt > 0.4 && dt < 4.0, "idle: after about 0.6 s (%.2f s)", dt);
    cl_close(c);
}

static void test_gone(int port)
{
    struct client *c = cl_open(port);
    struct resp r;

    cl_sends(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(50);
    cl_close(c);
    sleep_ms(400);
    c = cl_open(port);
    ok(cl_get(c, "/stats", &r) == 0 && r.status == 200, "client gone during /slow: still serving");
    like(r.body, "\"gone\":1", "client gone during /slow: request was marked gone");
    resp_free(&r);
    cl_close(c);
}

static void test_max_connections(int port)
{
    struct client *c[4];
    struct resp r;
    int served = 0;

    for (int i = 0; i < 3; i++) {
        c[i] = cl_open(port);
        if (cl_get(c[i], "/echo", &r) == 0 && r.status == 200)
            served++;
        resp_free(&r);
    }
    is_int(3, served, "max_connections 3: three connections served");
    c[3] = cl_open(port); /* the kernel completes the handshake: it waits in the backlog */
    cl_sends(c[3], "GET /echo?fourth HTTP/1.1\r\nHost: t\r\n\r\n");
    ok(cl_response(c[3], &r, 0, 600) < 0, "max_connections 3: a fourth is not served");
    resp_free(&r);
    cl_close(c[0]);
    ok(cl_response(c[3], &r, 0, 5000) == 0 && strstr(r.body, "fourth"),
       "max_connections 3: served once one closed");
    resp_free(&r);
    for (int i = 1; i < 4; i++)
        cl_close(c[i]);
}

/* SIGTERM -> drain: in-flight answered with Connection: close, idle closed. */
static void test_drain(pid_t pid, int port)
{
    struct client *idle = cl_open(port), *busy = cl_open(port);
    struct resp r;

    ok(cl_get(idle, "/echo", &r) == 0, "drain: idle connection set up");
    resp_free(&r);
    cl_sends(busy, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(50);
    kill(pid, SIGTERM);
    is_int(1, cl_eof(idle, 2000), "drain: idle connection closed at once");
    ok(cl_response(busy, &r, 0, 5000) == 0 && strcmp(r.body, "slow") == 0,
       "drain: in-flight request answered");
    is_string("close", hdr(&r, "Connection"), "drain: with Connection: close");
    ok(cl_eof(busy, 5000) > 0, "drain: then closed");
    resp_free(&r);
    cl_close(idle);
    cl_close(busy);
}

/* Wait for PID to exit by itself; kill it if it does not. */
static void reap(pid_t pid, const char *name)
{
    int status = 0;
    double t0 = now();
    pid_t got = 0;

    while (now() - t0 < 10 && (got = waitpid(pid, &status, WNOHANG)) == 0)
        sleep_ms(20);
    if (got == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    ok(got == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "%s: exited 0 after drain (status %d)", name, status);
}

int main(void)
{
    struct http_server_opts a = { .max_connections = 32,
                                  .max_body = 1024,
                                  .max_header_bytes = 16 * 1024,
                                  .idle_timeout = 0.6,
                                  .read_timeout = 0.3,
                                  .max_body_for = bulk_limit };
    struct http_server_opts b = { .max_connections = 3,
                                  .max_body = 1024,
                                  .max_header_bytes = 16 * 1024,
                                  .idle_timeout = 30,
                                  .read_timeout = 30 };
    int port_a, port_b;
    pid_t pid_a, pid_b;

    signal(SIGPIPE, SIG_IGN);
    pid_a = start_server(&a, &port_a);
    pid_b = start_server(&b, &port_b);

    test_get(port_a);
    test_post(port_a);
    test_headers(port_a);
    test_keepalive(port_a);
    test_pipeline(port_a);
    test_answer_loop(port_a);
    test_close(port_a);
    test_errors(port_a);
    test_route_limit(port_a);
    test_timeouts(port_a);
    test_gone(port_a);
    test_big(port_b);
    test_max_connections(port_b);
    test_drain(pid_a, port_a);

    reap(pid_a, "server A");
    kill(pid_b, SIGTERM);
    reap(pid_b, "server B");
    return done_testing();
}
