/*
 * fuzz_http.c — libFuzzer target for the whole HTTP request path.
 *
 * One input is the byte stream one client sends on one connection.  It goes
 * through the code an http child runs, unchanged: http_server.c accepts it
 * on a listening (abstract unix) socket and parses it with http-parser,
 * api_handle() routes, authenticates and checks the content type, and the
 * real handlers validate (validate.c, problem.c, webhook_sig.c, intake.c,
 * api_calls.c, api_ops.c, api_webhook.c).  Only what lies behind them is
 * fake (fuzz_stubs.c): PostgreSQL, Redis and Kafka answer asynchronously
 * from the loop, as the real clients do, so pipelining, responses given
 * later and clients that leave early are all exercised.
 *
 * Two API instances share the server: a request carrying a webhook-signature
 * header goes to one configured with callback_auth = hmac, every other to
 * one with callback_auth = api-key, so both ways of authenticating a webhook
 * are reachable.  Client API keys are on in both.
 *
 * The client writes the input, reads everything the server sends, and once
 * nothing moves (all input consumed, no callback run, no fake job waiting)
 * half-closes; the connection must then close.  Inputs of odd length
 * half-close as soon as everything is written instead, so requests still in
 * a handler find their client gone.  Besides the sanitizers, it checks:
 *  - the server's output is a well-formed stream of HTTP/1.1 responses
 *    (parsed back with http-parser, HEAD answers without body), one per
 *    request handed to the handler plus at most one error of the HTTP layer;
 *  - every status given to the observer is 200..599;
 *  - the connection ends: no request is left waiting for an answer.
 *
 * FUZZ_HTTP_LOG=stderr shows the daemon's log lines (default: /dev/null,
 * at debug level, so that every log call is formatted all the same);
 * FUZZ_HTTP_SHOW=1 prints what the server answered.
 */
#include <errno.h>
#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "api/api.h"
#include "util/config.h"
#include "fuzz_stubs.h"
#include "net/http_server.h"
#include "util/log.h"
#include "util/shm.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Loop iterations without an end before the harness calls it a hang. */
#define MAX_ITERATIONS 20000
/* Requests remembered per input for checking the answers (more: unchecked). */
#define MAX_REQUESTS 4096

static const char CFG_HMAC[] =
    "[http]\n"
    "max_body = 1KiB\n"
    "max_metadata_bytes = 256B\n"
    "api_keys = fuzz-client-key-1, fuzz-client-key-2\n"
    "[provider]\n"
    "callback_auth = hmac\n"
    "callback_secret = whsec_ZnV6ei13ZWJob29rLWhtYWMta2V5LTAx, "
    "whsec_ZnV6ei13ZWJob29rLWhtYWMta2V5LTAy\n"
    "signature_tolerance = 5m\n";

static const char CFG_API_KEY[] =
    "[http]\n"
    "max_body = 1KiB\n"
    "max_metadata_bytes = 256B\n"
    "api_keys = fuzz-client-key-1, fuzz-client-key-2\n"
    "[provider]\n"
    "callback_auth = api-key\n"
    "callback_secret = fuzz-webhook-token-1, fuzz-webhook-token-2\n";

static struct {
    struct ev_loop *loop;
    struct co_config *cfg_hmac, *cfg_key;
    struct api api_hmac, api_key;
    struct http_server *srv;
    int lfd;
    struct sockaddr_un addr;
    socklen_t addrlen;
    unsigned long invoked;       /* watcher callbacks the loop ran */
    int methods[MAX_REQUESTS];   /* of the requests handed to the handler */
    int n_requests;
    int show;                    /* FUZZ_HTTP_SHOW set: print the output */
} fz;

/* The server's output to one input, for the checks at the end. */
struct out {
    char *p;
    size_t len, cap;
};

/* Abort with a message: a property of the server does not hold. */
static void fuzz_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_http: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* ------------------------------------------------------------- server -- */

/* Count the callbacks each loop iteration runs: no count, no progress. */
static void invoke_pending(struct ev_loop *loop)
{
    fz.invoked += ev_pending_count(loop);
    ev_invoke_pending(loop);
}

/* http_server handler: the real api_handle() on one of the two APIs. */
static void handle(struct http_request *req, void *arg)
{
    (void)arg;
    if (fz.n_requests < MAX_REQUESTS)
        fz.methods[fz.n_requests] = http_request_method(req);
    fz.n_requests++;
    api_handle(req, http_request_header(req, "webhook-signature") != NULL ? &fz.api_hmac
                                                                          : &fz.api_key);
}

/* The observer of child_http.c, plus a check of the status. */
static void observe(void *arg, int tag, int status, double seconds)
{
    (void)arg;
    if (status < 200 || status > 599 || tag < 0 || tag >= RT_MAX)
        fuzz_fail("observer got a bad status or route tag", NULL);
    shm_http_request((enum co_route)tag, status, seconds);
}

static struct co_config *load_config(const char *name, const char *text)
{
    char err[512];
    struct co_config *cfg = NULL;
    if (co_config_load_string(name, text, &cfg, err, sizeof(err)) < 0)
        fuzz_fail("harness config rejected", err);
    return cfg;
}

static void init_api(struct api *api, const struct co_config *cfg)
{
    char err[512];
    if (api_init(api, fz.loop, cfg, err, sizeof(err)) < 0)
        fuzz_fail("api_init failed", err);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *log = getenv("FUZZ_HTTP_LOG");
    (void)argc;
    (void)argv;

    co_log_open(log != NULL ? log : "/dev/null", CO_LOG_DEBUG);
    co_log_set_role("http");
    fz.show = getenv("FUZZ_HTTP_SHOW") != NULL;
    if (shm_init() < 0)
        fuzz_fail("shm_init failed", NULL);
    fz.loop = ev_loop_new(EVFLAG_AUTO);
    if (fz.loop == NULL)
        fuzz_fail("no ev loop", NULL);
    ev_set_invoke_pending_cb(fz.loop, invoke_pending);
    fuzz_stubs_init(fz.loop);
    fz.cfg_hmac = load_config("fuzz-hmac.ini", CFG_HMAC);
    fz.cfg_key = load_config("fuzz-api-key.ini", CFG_API_KEY);
    init_api(&fz.api_hmac, fz.cfg_hmac);
    init_api(&fz.api_key, fz.cfg_key);

    /* an abstract socket: nothing to clean up in the file system */
    fz.addr.sun_family = AF_UNIX;
    int n = snprintf(fz.addr.sun_path + 1, sizeof(fz.addr.sun_path) - 1, "callorch-fuzz-http-%ld",
                     (long)getpid());
    fz.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    fz.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fz.lfd < 0 || bind(fz.lfd, (struct sockaddr *)&fz.addr, fz.addrlen) < 0 ||
        listen(fz.lfd, 16) < 0)
        fuzz_fail("cannot listen", strerror(errno));

    /* as child_http.c sets them up, but a smaller header limit (as cheap
     * to reach for the fuzzer as the body limit) */
    struct http_server_opts opts = {
        .max_connections = fz.cfg_key->max_connections,
        .max_body = fz.cfg_key->max_body,
        .max_header_bytes = 2048,
        .idle_timeout = fz.cfg_key->idle_timeout,
        .read_timeout = fz.cfg_key->idle_timeout,
    };
    fz.srv = http_server_new(fz.loop, &fz.lfd, 1, &opts, handle, NULL);
    if (fz.srv == NULL)
        fuzz_fail("http_server_new failed", NULL);
    http_server_observe(fz.srv, observe, NULL);
    return 0;
}

/* ------------------------------------------------------------- client -- */

static void out_add(struct out *o, const char *p, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n)
            cap *= 2;
        char *q = realloc(o->p, cap);
        if (q == NULL)
            fuzz_fail("out of memory", NULL);
        o->p = q;
        o->cap = cap;
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

/* Read what the server sent; returns 1 if anything came, sets *EOF at EOF. */
static int client_read(int fd, struct out *o, int *eof)
{
    char buf[16384];
    int got = 0;
    while (!*eof) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            out_add(o, buf, (size_t)n);
            got = 1;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            *eof = 1; /* EOF, or ECONNRESET after the server closed */
        } else {
            break;
        }
    }
    return got;
}

/* Bytes written by the client that the server has not read yet. */
static int client_unread(int fd)
{
    int q = 0;
    if (ioctl(fd, SIOCOUTQ, &q) < 0)
        fuzz_fail("SIOCOUTQ", strerror(errno));
    return q;
}

/* ------------------------------------------------- checking the answers -- */

struct resp_check {
    int index;                   /* final responses completed so far */
    int in_message;
    int status;
};

static int rc_begin(http_parser *p)
{
    struct resp_check *rc = p->data;
    rc->in_message = 1;
    return 0;
}

/* Return 1 ("no body") for the answer to a HEAD request. */
static int rc_headers(http_parser *p)
{
    struct resp_check *rc = p->data;
    rc->status = (int)p->status_code;
    if (p->status_code < 100 || p->status_code > 599)
        fuzz_fail("response with a status out of range", NULL);
    if (p->status_code >= 200 && rc->index < fz.n_requests && rc->index < MAX_REQUESTS &&
        fz.methods[rc->index] == HTTP_HEAD)
        return 1;
    return 0;
}

static int rc_complete(http_parser *p)
{
    struct resp_check *rc = p->data;
    rc->in_message = 0;
    if (rc->status >= 200)
        rc->index++;
    return 0;
}

/* The output must be complete HTTP/1.1 responses: one per request that
 * reached the handler (fewer when the client left first), plus at most
 * one error answered by the HTTP layer. */
static void check_output(const struct out *o, int early_eof)
{
    static const http_parser_settings s = {
        .on_message_begin = rc_begin,
        .on_headers_complete = rc_headers,
        .on_message_complete = rc_complete,
    };
    struct resp_check rc = { 0 };
    http_parser p;

    if (fz.show)
        fprintf(stderr, "--- server output (%zu bytes) ---\n%.*s\n---\n", o->len, (int)o->len,
                o->p ? o->p : "");
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &rc;
    size_t n = http_parser_execute(&p, &s, o->p ? o->p : "", o->len);
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK || n != o->len) {
        fprintf(stderr, "fuzz_http: output parse error %s at %zu of %zu\n%.*s\n",
                http_errno_name(HTTP_PARSER_ERRNO(&p)), n, o->len, (int)o->len, o->p);
        abort();
    }
    if (rc.in_message)
        fuzz_fail("the output ends inside a response", NULL);
    if (rc.index > fz.n_requests + 1)
        fuzz_fail("more responses than requests", NULL);
    if (!early_eof && rc.index < fz.n_requests)
        fuzz_fail("a request handed to the handler was not answered", NULL);
}

/* ---------------------------------------------------------- one input -- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct out out = { 0 };
    size_t off = 0;
    int early_eof = (size & 1) != 0, shut = 0, eof = 0;
    int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (cfd < 0 || connect(cfd, (struct sockaddr *)&fz.addr, fz.addrlen) < 0)
        fuzz_fail("cannot connect", strerror(errno));
    fz.n_requests = 0;
    for (int i = 0;; i++) {
        unsigned long before = fz.invoked;
        int moved = 0;

        if (i == MAX_ITERATIONS)
            fuzz_fail("the connection neither ends nor settles", NULL);
        if (off < size) {
            ssize_t n = send(cfd, data + off, size - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += (size_t)n;
                moved = 1;
            } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                off = size; /* the server closed: the rest is never read */
            }
        }
        if (off == size && early_eof && !shut) {
            shutdown(cfd, SHUT_WR);
            shut = 1;
        }
        moved |= client_read(cfd, &out, &eof);
        ev_run(fz.loop, EVRUN_NOWAIT);
        moved |= fz.invoked != before;
        if (shut && eof && http_server_connections(fz.srv) == 0 && fuzz_stubs_idle())
            break;
        if (!shut && off == size && !moved && fuzz_stubs_idle() && client_unread(cfd) == 0) {
            shutdown(cfd, SHUT_WR); /* settled: now the end of the connection */
            shut = 1;
        }
    }
    client_read(cfd, &out, &eof);
    close(cfd);
    check_output(&out, early_eof);
    free(out.p);
    fuzz_stubs_reset();
    return 0;
}
