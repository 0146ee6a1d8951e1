/*
 * unit_curl_ev.c — src/net/curl_ev.c against src/net/http_server.c, both on one ev
 * loop in this process (everything is non-blocking, so they take turns).
 *
 * The server's answers depend on the path: /echo (method, body and the
 * X-Test header back as JSON), /big (100 KiB), /retry (429 + Retry-After),
 * /slow (answered after 2 s, or never if the loop stops first).
 * CO_TEST_DEBUG=1 in the environment logs at debug level to stderr.
 */
#include <arpa/inet.h>
#include <ev.h>
#include <http_parser.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/curl_ev.h"
#include "net/http_server.h"
#include "tap.h"
#include "util/log.h"

static struct ev_loop *loop;
static struct http_server *srv;
static int port;
static char base[64];

/* ========================================================== server ===== */

struct slow {
    ev_timer timer; /* first: the callback casts back */
    struct http_request *req;
    struct slow *next;
};
static struct slow *slows;

static void slow_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    struct slow *sl = (struct slow *)w;
    (void)l;
    (void)revents;
    http_respond(sl->req, 200, "text/plain", NULL, "slow", 4);
    for (struct slow **p = &slows; *p; p = &(*p)->next)
        if (*p == sl) {
            *p = sl->next;
            break;
        }
    free(sl);
}

static void handle(struct http_request *req, void *arg)
{
    const char *path = http_request_path(req);
    size_t len;
    const char *body = http_request_body(req, &len);
    (void)arg;

    if (strcmp(path, "/echo") == 0) {
        const char *x = http_request_header(req, "X-Test");
        json_t *j = json_pack("{s:s, s:s%, s:s}", "method",
                              http_method_str((enum http_method)http_request_method(req)), "body",
                              body, len, "x", x ? x : "");
        char *txt = json_dumps(j, JSON_COMPACT);
        http_respond(req, 200, "application/json", NULL, txt, strlen(txt));
        free(txt);
        json_decref(j);
    } else if (strcmp(path, "/big") == 0) {
        size_t n = 100 * 1024;
        char *big = malloc(n);
        memset(big, 'x', n);
        http_respond(req, 200, "text/plain", NULL, big, n);
        free(big);
    } else if (strcmp(path, "/retry") == 0) {
        http_respond(req, 429, "text/plain", "Retry-After: 7\r\n", "later", 5);
    } else if (strcmp(path, "/slow") == 0) {
        struct slow *sl = calloc(1, sizeof(*sl));
        sl->req = req;
        sl->next = slows;
        slows = sl;
        ev_timer_init(&sl->timer, slow_cb, 2.0, 0.);
        ev_timer_start(loop, &sl->timer);
    } else {
        http_respond(req, 404, NULL, NULL, NULL, 0);
    }
}

static int listen_any(int *out_port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        return -1;
    *out_port = ntohs(sa.sin_port);
    return fd;
}

/* A loopback port nothing listens on. */
static int closed_port(void)
{
    int p, fd = listen_any(&p);
    close(fd);
    return p;
}

/* ========================================================== client ===== */

struct result {
    int calls; /* times the callback ran */
    long status;
    CURLcode result;
    char error[256];
    char *body;
    size_t body_len;
    int truncated;
    char retry_after[32];
    int chain; /* requests still to start from the callback */
    struct curl_ev *ce;
};

static int in_send; /* set while inside curl_ev_send() */
static int cb_during_send;

static void done(void *arg, const struct curl_ev_response *r)
{
    struct result *res = arg;

    if (in_send)
        cb_during_send++;
    res->calls++;
    res->status = r->status;
    res->result = r->result;
    snprintf(res->error, sizeof(res->error), "%s", r->error ? r->error : "");
    free(res->body);
    res->body = malloc(r->body_len + 1);
    memcpy(res->body, r->body, r->body_len + 1);
    res->body_len = r->body_len;
    res->truncated = r->body_truncated;
    snprintf(res->retry_after, sizeof(res->retry_after), "%s",
             r->retry_after ? r->retry_after : "");
}

static int send_req(struct curl_ev *ce, const char *method, const char *path, const char *body,
                    const char *const *headers, double timeout, struct result *res)
{
    char url[128];
    snprintf(url, sizeof(url), "%s%s", base, path);
    struct curl_ev_request rq = { .method = method,
                                  .url = url,
                                  .headers = headers,
                                  .body = body,
                                  .body_len = body ? strlen(body) : 0,
                                  .timeout_s = timeout };
    in_send = 1;
    int rc = curl_ev_send(ce, &rq, done, res);
    in_send = 0;
    return rc;
}

static void stop_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ONE);
}

/* Run the loop until CE has nothing in flight (or LIMIT seconds). */
static void run_until_idle(struct curl_ev *ce, double limit)
{
    ev_timer guard, poll;
    ev_timer_init(&guard, stop_cb, limit, 0.);
    ev_timer_start(loop, &guard);
    while (curl_ev_in_flight(ce) > 0 && ev_is_active(&guard)) {
        ev_timer_init(&poll, stop_cb, 0.01, 0.);
        ev_timer_start(loop, &poll);
        ev_run(loop, 0);
        ev_timer_stop(loop, &poll);
    }
    ev_timer_stop(loop, &guard);
}

/* =========================================================== tests ===== */

static void test_echo(struct curl_ev *ce)
{
    struct result res = { 0 };
    const char *const hdrs[] = { "X-Test: hello", "Content-Type: application/json", NULL };
    const char *payload = "{\"a\":1}";

    ok(send_req(ce, "POST", "/echo", payload, hdrs, 5, &res) == 0, "POST sent");
    is_int(1, curl_ev_in_flight(ce), "one in flight");
    is_int(0, res.calls, "no callback from inside curl_ev_send");
    run_until_idle(ce, 5);
    is_int(1, res.calls, "callback exactly once");
    is_int(200, res.status, "status 200");
    is_int(CURLE_OK, res.result, "CURLE_OK");
    is_string("", res.error, "no error message");
    json_t *j = json_loads(res.body ? res.body : "", 0, NULL);
    is_string("POST", json_string_value(json_object_get(j, "method")), "method arrived");
    is_string(payload, json_string_value(json_object_get(j, "body")), "body arrived");
    is_string("hello", json_string_value(json_object_get(j, "x")), "header arrived");
    json_decref(j);

    ok(send_req(ce, "PUT", "/echo", NULL, NULL, 5, &res) == 0, "PUT without body sent");
    run_until_idle(ce, 5);
    ok(res.body && strstr(res.body, "\"PUT\"") != NULL, "custom method arrived");
    ok(send_req(ce, NULL, "/echo", NULL, NULL, 5, &res) == 0, "NULL method sent");
    run_until_idle(ce, 5);
    ok(res.body && strstr(res.body, "\"GET\"") != NULL, "NULL method is GET");
    free(res.body);
}

static void test_answers(struct curl_ev *ce)
{
    struct result big = { 0 }, retry = { 0 }, missing = { 0 };

    send_req(ce, "GET", "/big", NULL, NULL, 5, &big);
    send_req(ce, "GET", "/retry", NULL, NULL, 5, &retry);
    send_req(ce, "GET", "/nosuch", NULL, NULL, 5, &missing);
    is_int(3, curl_ev_in_flight(ce), "three in flight");
    run_until_idle(ce, 5);
    is_int(200, big.status, "big: 200");
    is_int(CURL_EV_MAX_BODY, (long long)big.body_len, "big: body capped");
    ok(big.truncated, "big: marked truncated");
    is_int(CURLE_OK, big.result, "big: still CURLE_OK");
    is_int(429, retry.status, "429");
    is_string("7", retry.retry_after, "Retry-After value");
    is_int(404, missing.status, "404");
    is_string("", missing.retry_after, "no Retry-After");
    is_int(0, (long long)missing.body_len, "empty body");
    ok(missing.body && missing.body[0] == '\0', "empty body is \"\"");
    free(big.body);
    free(retry.body);
    free(missing.body);
}

static void test_errors(struct curl_ev *ce)
{
    struct result refused = { 0 }, slow = { 0 }, badurl = { 0 };
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", closed_port());
    struct curl_ev_request rq = { .url = url, .timeout_s = 5 };
    curl_ev_send(ce, &rq, done, &refused);
    struct curl_ev_request bad = { .url = "gopher://127.0.0.1/", .timeout_s = 5 };
    ok(curl_ev_send(ce, &bad, done, &badurl) == 0, "unsupported scheme: accepted for now");
    send_req(ce, "GET", "/slow", NULL, NULL, 0.2, &slow);
    run_until_idle(ce, 5);
    is_int(1, refused.calls, "refused: callback once");
    is_int(0, refused.status, "refused: status 0");
    is_int(CURLE_COULDNT_CONNECT, refused.result, "refused: CURLE_COULDNT_CONNECT");
    ok(refused.error[0] != '\0', "refused: message (%s)", refused.error);
    is_int(CURLE_OPERATION_TIMEDOUT, slow.result, "slow: timed out");
    is_int(0, slow.status, "slow: status 0");
    is_int(1, badurl.calls, "unsupported scheme: callback once");
    is_int(CURLE_UNSUPPORTED_PROTOCOL, badurl.result, "unsupported scheme: refused by libcurl");
    free(refused.body);
    free(slow.body);
    free(badurl.body);
}

static void chain_done(void *arg, const struct curl_ev_response *r);

static void chain_send(struct result *res)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/echo", base);
    struct curl_ev_request rq = { .url = url, .timeout_s = 5 };
    curl_ev_send(res->ce, &rq, chain_done, res);
}

static void chain_done(void *arg, const struct curl_ev_response *r)
{
    struct result *res = arg;
    done(arg, r);
    if (res->chain-- > 0)
        chain_send(res);
}

/* Sequential requests reuse a kept-alive connection (the server would
 * otherwise see one more connection per request, as libcurl keeps them all
 * in its cache); a callback may start the next request. */
static void test_reuse(struct curl_ev *ce)
{
    struct result res = { .chain = 20, .ce = ce };
    int before = http_server_connections(srv);

    chain_send(&res);
    run_until_idle(ce, 10);
    is_int(21, res.calls, "21 chained requests completed");
    is_int(200, res.status, "last one 200");
    ok(http_server_connections(srv) <= before + 1, "connections reused (%d before, %d after)",
       before, http_server_connections(srv));
    free(res.body);
}

static void test_many(struct curl_ev *ce)
{
    enum { N = 300 };
    static struct result res[N];
    int ok200 = 0, once = 0;

    for (int i = 0; i < N; i++)
        send_req(ce, "POST", "/echo", "x", NULL, 10, &res[i]);
    is_int(N, curl_ev_in_flight(ce), "%d in flight", N);
    run_until_idle(ce, 20);
    for (int i = 0; i < N; i++) {
        ok200 += res[i].status == 200;
        once += res[i].calls == 1;
        free(res[i].body);
    }
    is_int(N, ok200, "all answered 200");
    is_int(N, once, "each callback exactly once");
    is_int(0, curl_ev_in_flight(ce), "none in flight");
}

static void test_free_in_flight(void)
{
    struct curl_ev *ce = curl_ev_new(loop);
    struct result a = { 0 }, b = { 0 };

    send_req(ce, "GET", "/slow", NULL, NULL, 10, &a);
    send_req(ce, "GET", "/slow", NULL, NULL, 10, &b);
    ev_run(loop, EVRUN_NOWAIT); /* let them connect and send */
    ev_run(loop, EVRUN_NOWAIT);
    curl_ev_free(ce);
    is_int(1, a.calls, "free: in-flight request failed through its callback");
    is_int(1, b.calls, "free: the other one too");
    is_int(CURLE_ABORTED_BY_CALLBACK, a.result, "free: CURLE_ABORTED_BY_CALLBACK");
    is_int(0, a.status, "free: status 0");
    ok(strstr(a.error, "shut down") != NULL, "free: message (%s)", a.error);
    free(a.body);
    free(b.body);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    co_log_open("stderr", getenv("CO_TEST_DEBUG") ? CO_LOG_DEBUG : CO_LOG_ERROR);
    loop = EV_DEFAULT;
    if (curl_ev_global_init() < 0)
        bail("curl_global_init failed");
    int fd = listen_any(&port);
    if (fd < 0)
        bail("cannot listen on loopback");
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    struct http_server_opts hopts = { 0 };
    srv = http_server_new(loop, &fd, 1, &hopts, handle, NULL);
    struct curl_ev *ce = curl_ev_new(loop);
    if (srv == NULL || ce == NULL)
        bail("setup failed");

    test_echo(ce);
    test_answers(ce);
    test_errors(ce);
    test_reuse(ce);
    test_many(ce);
    is_int(0, cb_during_send, "never a callback from inside curl_ev_send");
    curl_ev_free(ce);
    test_free_in_flight();

    http_server_free(srv);
    while (slows) { /* gone now: http_respond only frees them */
        struct slow *sl = slows;
        slows = sl->next;
        ev_timer_stop(loop, &sl->timer);
        http_respond(sl->req, 200, NULL, NULL, NULL, 0);
        free(sl);
    }
    close(fd);
    curl_global_cleanup();
    return done_testing();
}
