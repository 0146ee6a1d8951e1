/*
 * http_server.c — the HTTP/1.1 connection layer of an http child.
 *
 * Owns: the accept watchers on the listening sockets, every client
 * connection (socket, input and output buffers, http-parser state, one
 * timer), the request objects handed to the handler, and graceful stop.
 *
 * How a connection works: bytes are read into an input buffer and fed to
 * http-parser.  When a request is complete the parser is paused, the
 * request goes to the handler and nothing more is parsed until
 * http_respond() queued its answer; then parsing resumes on the bytes
 * already buffered.  That keeps pipelined answers in request order without
 * a queue of requests, and bounds the memory a client can make us hold to
 * one request plus an IN_MAX input buffer plus OUT_HIGH unsent bytes.
 *
 * http_respond() never runs the parser (nor so the handler) itself: an
 * answer given later, from another callback, sends what it can and puts
 * the connection on the server's ready list when more requests are
 * buffered; a zero timer parses them on the next loop iteration.  So a
 * caller answering several requests in a loop (a failed batch, a refused
 * queue) is never re-entered by the next pipelined request of one of them.
 * An answer given at once by the handler needs no deferral: conn_process()
 * is on the stack and goes on parsing when the handler returns.
 *
 * One ev_timer per connection, restarted with ev_timer_again(); its meaning
 * follows what the connection waits for (enum conn_tmode).  The read
 * deadline is set once when a request's first byte arrives and is not
 * extended by later bytes, so a client trickling a byte at a time
 * (slowloris) is cut off after read_timeout all the same.
 *
 * Closing after a response goes through a "lingering close": shutdown the
 * write side and discard input until EOF or LINGER_TIMEOUT, because closing
 * a socket with unread input makes the kernel send a RST that can destroy
 * the response (e.g. a 413 while the client is still sending the body).
 */
#include "net/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/problem.h"
#include "util/log.h"
#include "util/strbuf.h"

#define IN_INITIAL 4096          /* first input buffer of a connection */
#define IN_READ_MIN 1024         /* grow the input buffer below this much room */
#define IN_MAX (64 * 1024)       /* input buffer while a request is in the handler */
#define IN_HELD_MAX (IN_MAX - 1) /* unparsed bytes it holds: its last byte is strbuf's NUL */
#define OUT_HIGH (64 * 1024)     /* unsent output above which pipelined parsing waits */
#define LINGER_TIMEOUT 2.0       /* s; longest a closing connection drains input */
#define LINGER_READS 16          /* recv() calls per wakeup while lingering */
#define ACCEPT_RETRY 1.0         /* s; accept pause after EMFILE and friends */

/* ------------------------------------------------------------ buffers ---- */

/* Undo a failed append: back to LEN bytes, and appends allowed again (a
 * short refusal may still fit where a whole answer did not). */
static void buf_rollback(struct strbuf *b, size_t len)
{
    b->len = len;
    b->failed = false;
    if (b->p != NULL)
        b->p[len] = '\0';
}

/* -------------------------------------------------------------- types ---- */

/* Where http-parser's header callbacks are: a name and its value arrive in
 * pieces, and hbuf gets a NUL after each. */
enum hdr_state { HDR_NONE, HDR_NAME, HDR_VALUE };

/* A connection serves requests while OPEN; once CLOSING it takes no more
 * and flushes what is queued, then LINGERING it has shut its write side
 * and discards input until the client's EOF. */
enum conn_phase { CONN_OPEN, CONN_CLOSING, CONN_LINGERING };

struct hdr {
    size_t name, value; /* offsets into http_request.hbuf */
};

struct http_request {
    struct http_server *srv;          /* NULL once the server was freed */
    struct http_conn *conn;           /* NULL once the client is gone */
    struct http_request *prev, *next; /* srv->pending, while in the handler */
    int method;
    unsigned short http_major, http_minor;
    int keep_alive;
    struct strbuf url;  /* request target as received */
    struct strbuf hbuf; /* "name\0value\0name\0value\0..." */
    struct hdr *hdrs;
    size_t nhdrs, hdrs_cap;
    enum hdr_state hstate; /* where the parser is in the header block */
    char *path;            /* one allocation: path\0query\0 */
    char *query;           /* points into path's allocation, or NULL */
    struct strbuf body;
    size_t max_body;     /* this request's limit (opts.max_body_for) */
    int tag;             /* the handler's label, for the observer */
    ev_tstamp handed_at; /* when the handler got it */
};

/* What the connection timer currently measures. */
enum conn_tmode {
    TM_NONE,   /* request in the handler: its business */
    TM_IDLE,   /* waiting for the next request */
    TM_READ,   /* deadline for the request being received */
    TM_WRITE,  /* client must accept output this often */
    TM_LINGER, /* closing: deadline for the client's EOF */
};

struct http_conn {
    struct http_server *srv;
    struct http_conn *prev, *next; /* srv->conns */
    int fd;
    char peer[64]; /* "addr:port" for logs */
    ev_io rio, wio;
    ev_timer timer;
    enum conn_tmode tmode;
    size_t undelivered_mark; /* conn_undelivered() when the timer was armed */
    http_parser parser;
    struct strbuf in; /* bytes in.p[in_off..in.len) not parsed yet */
    size_t in_off;
    struct strbuf out; /* bytes out.p[out_off..out.len) not sent yet */
    size_t out_off;
    struct http_request *req;      /* being received */
    struct http_request *inflight; /* in the handler, waiting for http_respond() */
    size_t hdr_bytes;              /* header block size of req so far */
    const char *exec_start;        /* the bytes http_parser_execute() is parsing now */
    const char *exec_end;
    char tail;                /* last non-blank byte parsed before exec_start */
    unsigned value_ended : 1; /* the last header value data ended at its line end */
    int reject_status;        /* set by a parser callback that refuses req */
    char reject_detail[160];
    enum conn_phase phase;
    unsigned in_process : 1; /* inside conn_process(): respond must not recurse */
    unsigned ready : 1;      /* on srv->ready: buffered requests to parse */
    struct http_conn *ready_prev, *ready_next;
    unsigned ready_round; /* srv->ready_round when it got on the list */
};

struct http_server {
    struct ev_loop *loop;
    struct http_server_opts opts;
    http_handler_fn handler;
    void *arg;
    ev_io *accept_w;
    int n_accept;
    ev_timer accept_retry;
    int accepting;     /* 0 after http_server_stop_accepting() */
    int accept_paused; /* resource shortage, see srv_accept_error() */
    struct http_conn *conns;
    int n_conns;
    struct http_request *pending; /* handed to the handler, not answered yet */
    int n_pending;
    http_observer_fn observer;
    void *observer_arg;
    int draining;
    void (*drain_done)(void *);
    void *drain_arg;
    ev_timer drain_timer;                 /* calls drain_done from the loop */
    struct http_conn *ready, *ready_tail; /* to parse on the next iteration */
    ev_timer ready_timer;                 /* zero timer that parses them */
    unsigned ready_round;                 /* counts srv_ready_cb() runs */
    time_t date_at;
    char date[64];
};

/* A response about to be queued. */
struct resp {
    int status;
    const char *content_type; /* NULL: no Content-Type */
    const char *extra;        /* NULL or "Name: value\r\n..." */
    const char *body;
    size_t len;
    int head;               /* HEAD request: headers only */
    const char *connection; /* "close", "keep-alive" or NULL */
};

static void conn_process(struct http_conn *c);
static void conn_unready(struct http_conn *c);
static void conn_close(struct http_conn *c);
static void srv_update_accept(struct http_server *s);
static void srv_check_drained(struct http_server *s);

/* ----------------------------------------------------------- requests ---- */

static struct http_request *req_new(struct http_conn *c)
{
    struct http_request *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->conn = c;
    r->srv = c->srv;
    return r;
}

static void req_free(struct http_request *r)
{
    if (r == NULL)
        return;
    strbuf_free(&r->url);
    strbuf_free(&r->hbuf);
    strbuf_free(&r->body);
    free(r->hdrs);
    free(r->path);
    free(r);
}

/* Start a new header line: its name begins at the end of hbuf. */
static int req_push_header(struct http_request *r)
{
    if (r->nhdrs == r->hdrs_cap) {
        size_t cap = r->hdrs_cap ? r->hdrs_cap * 2 : 16;
        struct hdr *h = realloc(r->hdrs, cap * sizeof(*h));
        if (h == NULL)
            return -1;
        r->hdrs = h;
        r->hdrs_cap = cap;
    }
    r->hdrs[r->nhdrs].name = r->hbuf.len;
    r->hdrs[r->nhdrs].value = 0;
    r->nhdrs++;
    return 0;
}

/* Close the last header's value and trim trailing blanks off every value
 * (http-parser skips leading blanks but may pass trailing ones). */
static int req_finish_headers(struct http_request *r)
{
    if (r->hstate == HDR_NAME) { /* a name without value: give it "" */
        if (strbuf_addc(&r->hbuf, '\0') < 0)
            return -1;
        r->hdrs[r->nhdrs - 1].value = r->hbuf.len;
        r->hstate = HDR_VALUE;
    }
    if (r->hstate == HDR_VALUE && strbuf_addc(&r->hbuf, '\0') < 0)
        return -1;
    for (size_t i = 0; i < r->nhdrs; i++) {
        char *v = r->hbuf.p + r->hdrs[i].value;
        size_t n = strlen(v);
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            v[--n] = '\0';
    }
    return 0;
}

/* Copy the (offset, length) field F of U out of URL, or "" if unset. */
static void url_field(const char *url, const struct http_parser_url *u, int f, const char **at,
                      size_t *len)
{
    if (u->field_set & (1u << f)) {
        *at = url + u->field_data[f].off;
        *len = u->field_data[f].len;
    } else {
        *at = "";
        *len = 0;
    }
}

/* Split the request target into path and query with http-parser's URL
 * parser (origin form "/p?q", absolute form "http://h/p?q", "*", or the
 * authority of CONNECT).  Returns 0, or -1 for a target it rejects. */
static int req_split_target(struct http_request *r)
{
    struct http_parser_url u;
    const char *path = "*", *query = "";
    size_t plen = 1, qlen = 0;
    int has_query = 0;

    if (r->url.len == 0 || r->url.len > UINT16_MAX) /* not empty: NUL-terminated */
        return -1;
    http_parser_url_init(&u);
    if (strcmp(r->url.p, "*") != 0) {
        if (http_parser_parse_url(r->url.p, r->url.len, r->method == HTTP_CONNECT, &u) != 0)
            return -1;
        url_field(r->url.p, &u, UF_PATH, &path, &plen);
        url_field(r->url.p, &u, UF_QUERY, &query, &qlen);
        has_query = (u.field_set & (1u << UF_QUERY)) != 0;
        if (plen == 0) {
            path = "/";
            plen = 1;
        }
    }
    r->path = malloc(plen + qlen + 2);
    if (r->path == NULL)
        return -1;
    memcpy(r->path, path, plen);
    r->path[plen] = '\0';
    memcpy(r->path + plen + 1, query, qlen);
    r->path[plen + 1 + qlen] = '\0';
    r->query = has_query ? r->path + plen + 1 : NULL;
    return 0;
}

/* The pending list lets drain wait for, and free detach, requests that
 * are in the handler, including those whose connection is already gone. */
static void srv_pending_add(struct http_server *s, struct http_request *r)
{
    r->prev = NULL;
    r->next = s->pending;
    if (s->pending)
        s->pending->prev = r;
    s->pending = r;
    s->n_pending++;
}

static void srv_pending_remove(struct http_request *r)
{
    struct http_server *s = r->srv;
    if (s == NULL)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        s->pending = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    s->n_pending--;
    srv_check_drained(s);
}

/* ---------------------------------------------------------- responses ---- */

/* IMF-fixdate for the Date header, formatted once per second.  Names are
 * spelled out because strftime's %a and %b follow the locale. */
static const char *srv_date(struct http_server *s)
{
    static const char *const wday[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    time_t now = (time_t)ev_now(s->loop);
    struct tm tm;

    if (now != s->date_at && gmtime_r(&now, &tm) != NULL) {
        snprintf(s->date, sizeof(s->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 wday[tm.tm_wday % 7], tm.tm_mday, mon[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        s->date_at = now;
    }
    return s->date;
}

/* Append status line, headers and body of RS to the output buffer.
 * Returns 0, or -1 (no memory; the buffer is left as it was). */
static int conn_queue_response(struct http_conn *c, const struct resp *rs)
{
    struct strbuf *o = &c->out;
    size_t before = o->len;
    int bodyless = rs->status == 204 || rs->status == 304;
    int rc = strbuf_addf(o, "HTTP/1.1 %d %s\r\nServer: callorch\r\nDate: %s\r\n", rs->status,
                         http_status_str((enum http_status)rs->status), srv_date(c->srv));

    if (rs->content_type)
        rc |= strbuf_addf(o, "Content-Type: %s\r\n", rs->content_type);
    if (!bodyless) /* RFC 9110 8.6: no Content-Length in a 204 */
        rc |= strbuf_addf(o, "Content-Length: %zu\r\n", rs->len);
    if (rs->connection)
        rc |= strbuf_addf(o, "Connection: %s\r\n", rs->connection);
    if (rs->extra && rs->extra[0]) {
        size_t n = strlen(rs->extra);
        rc |= strbuf_add(o, rs->extra, n);
        if (n < 2 || memcmp(rs->extra + n - 2, "\r\n", 2) != 0)
            rc |= strbuf_adds(o, "\r\n");
    }
    rc |= strbuf_adds(o, "\r\n");
    if (!rs->head && !bodyless)
        rc |= strbuf_add(o, rs->body, rs->len);
    if (rc != 0) {
        buf_rollback(o, before);
        return -1;
    }
    return 0;
}

/* Stop reading requests: answer what is queued, then close. */
static void conn_set_closing(struct http_conn *c)
{
    if (c->phase == CONN_OPEN)
        c->phase = CONN_CLOSING;
    c->in_off = c->in.len; /* pipelined requests after this one are dropped */
}

/* Queue an error of this layer (400, 408, 411, ...) and close after it. */
static void conn_error_response(struct http_conn *c, int status, const char *detail)
{
    size_t len;
    /* problem.c's body, so this layer's errors carry the handlers' types */
    char *body = problem_body(status, detail, &len);
    struct resp rs = { .status = status,
                       .content_type = PROBLEM_CONTENT_TYPE,
                       .body = body,
                       .len = len,
                       .connection = "close" };

    if (conn_queue_response(c, &rs) < 0)
        co_warn("http response dropped", "client=%s status=%d error=\"out of memory\"", c->peer,
                status);
    free(body);
    conn_set_closing(c);
}

/* ------------------------------------------------------------- timers ---- */

static double conn_tmode_after(const struct http_conn *c, enum conn_tmode m)
{
    switch (m) {
    case TM_READ: return c->srv->opts.read_timeout;
    case TM_LINGER: return LINGER_TIMEOUT;
    default: return c->srv->opts.idle_timeout;
    }
}

/* Bytes the client has not received yet: our unsent output plus what the
 * kernel still holds (SIOCOUTQ).  send() progress alone is too coarse a
 * sign of a reading client: the kernel buffers megabytes and reports the
 * socket writable only once much of that is gone. */
static size_t conn_undelivered(const struct http_conn *c)
{
    int q = 0;
    if (ioctl(c->fd, SIOCOUTQ, &q) < 0 || q < 0)
        q = 0;
    return c->out.len - c->out_off + (size_t)q;
}

/* Switch the timer to mode M.  Staying in the same mode keeps the running
 * deadline unless RESTART (a new request, or output progress). */
static void conn_timer(struct http_conn *c, enum conn_tmode m, int restart)
{
    if (m == c->tmode && !restart)
        return;
    c->tmode = m;
    if (m == TM_NONE) {
        ev_timer_stop(c->srv->loop, &c->timer);
        return;
    }
    if (m == TM_IDLE || m == TM_WRITE)
        c->undelivered_mark = conn_undelivered(c);
    c->timer.repeat = conn_tmode_after(c, m);
    ev_timer_again(c->srv->loop, &c->timer);
}

/* At an idle or send timeout: if the client received something since the
 * timer was armed, it is slow but alive; give it another period (so an
 * idle period starts when the last byte of the answer was delivered). */
static int conn_still_receiving(struct http_conn *c)
{
    size_t left = conn_undelivered(c);

    if (left >= c->undelivered_mark)
        return 0;
    c->undelivered_mark = left;
    ev_timer_again(c->srv->loop, &c->timer);
    return 1;
}

/* What the connection waits for now, in order of precedence. */
static enum conn_tmode conn_wanted_tmode(const struct http_conn *c)
{
    if (c->phase == CONN_LINGERING)
        return TM_LINGER;
    if (c->req)
        return TM_READ;
    if (c->out_off < c->out.len)
        return TM_WRITE;
    if (c->inflight)
        return TM_NONE;
    return TM_IDLE;
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct http_conn *c = w->data;
    (void)loop;
    (void)revents;

    switch (c->tmode) {
    case TM_READ:
        co_debug("http read timeout", "client=%s timeout_s=%.3f", c->peer,
                 c->srv->opts.read_timeout);
        req_free(c->req);
        c->req = NULL;
        conn_error_response(c, 408, "the request was not received in time");
        conn_process(c);
        return;
    case TM_IDLE:
        if (conn_still_receiving(c))
            return;
        co_debug("http idle timeout", "client=%s", c->peer);
        break;
    case TM_WRITE:
        if (conn_still_receiving(c))
            return;
        co_debug("http send timeout", "client=%s unsent=%zu", c->peer, c->out.len - c->out_off);
        break;
    case TM_LINGER:
    case TM_NONE: break;
    }
    conn_close(c);
}

/* ------------------------------------------------------- parser hooks ---- */

/* Refuse the request being parsed: the answer is STATUS with a printf-style
 * detail.  Returns -1 so a callback can `return conn_refuse(...)`, which
 * stops http-parser with an HPE_CB_* error; conn_reject() then answers. */
static int conn_refuse(struct http_conn *c, int status, const char *fmt, ...) CO_PRINTF(3, 4);
static int conn_refuse(struct http_conn *c, int status, const char *fmt, ...)
{
    va_list ap;
    c->reject_status = status;
    va_start(ap, fmt);
    vsnprintf(c->reject_detail, sizeof(c->reject_detail), fmt, ap);
    va_end(ap);
    return -1;
}

/* Count header block bytes.  Counted here rather than with
 * http_parser_set_max_header_size(), which is global to the process; the
 * parser's own 80 KiB limit stays as a backstop (whitespace we never see). */
static int conn_count_header(struct http_conn *c, size_t len)
{
    size_t max = c->srv->opts.max_header_bytes;
    c->hdr_bytes += len;
    if (c->hdr_bytes > max)
        return conn_refuse(c, 431, "the request target and headers exceed %zu bytes", max);
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = p->data;
    req_free(c->req);
    c->req = req_new(c);
    c->hdr_bytes = 0;
    conn_timer(c, TM_READ, 1); /* the whole request must arrive by then */
    return c->req ? 0 : conn_refuse(c, 500, "out of memory");
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    if (conn_count_header(c, len) < 0)
        return -1;
    return strbuf_add(&c->req->url, at, len) < 0 ? conn_refuse(c, 500, "out of memory") : 0;
}

/* http-parser may split a name or a value over several calls (one per
 * read); a name call after a value call starts a new header. */
static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    struct http_request *r = c->req;

    if (conn_count_header(c, len + (r->hstate != HDR_NAME ? 4 : 0)) < 0) /* ": " and CRLF */
        return -1;
    /* http-parser (not strict) passes "Name :" and still honours it, e.g.
     * as Content-Length; RFC 9112 5.1 says a server MUST answer 400. */
    if (memchr(at, ' ', len) != NULL)
        return conn_refuse(c, 400, "whitespace between a header field name and the colon");
    if (r->hstate != HDR_NAME) {
        if ((r->hstate == HDR_VALUE && strbuf_addc(&r->hbuf, '\0') < 0) || req_push_header(r) < 0)
            return conn_refuse(c, 500, "out of memory");
        r->hstate = HDR_NAME;
    }
    return strbuf_add(&r->hbuf, at, len) < 0 ? conn_refuse(c, 500, "out of memory") : 0;
}

/* Whether the header value starting at AT follows a line break (over
 * blanks only): "Name:\r\n value", an obs-fold right after the colon. */
static int value_after_newline(const struct http_conn *c, const char *at)
{
    const char *q = at;
    while (q > c->exec_start && (q[-1] == ' ' || q[-1] == '\t'))
        q--;
    return (q > c->exec_start ? q[-1] : c->tail) == '\n';
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    struct http_request *r = c->req;

    if (conn_count_header(c, len) < 0)
        return -1;
    /* obs-fold (RFC 9112 5.2): a value continued on a line starting with a
     * blank.  http-parser accepts it (and reads Content-Length through it),
     * a proxy in front of us may not: refuse it rather than risk reading
     * the request differently.  More data for a value whose line already
     * ended (not just a read boundary) can only be a folded line. */
    if (len > 0 && (r->hstate == HDR_VALUE ? c->value_ended : value_after_newline(c, at)))
        return conn_refuse(c, 400, "obsolete line folding in header fields is not accepted");
    c->value_ended = at + len < c->exec_end;
    if (r->hstate != HDR_VALUE) {
        if (strbuf_addc(&r->hbuf, '\0') < 0)
            return conn_refuse(c, 500, "out of memory");
        r->hdrs[r->nhdrs - 1].value = r->hbuf.len;
        r->hstate = HDR_VALUE;
    }
    return strbuf_add(&r->hbuf, at, len) < 0 ? conn_refuse(c, 500, "out of memory") : 0;
}

/* Expect: 100-continue is answered before the body arrives, so clients
 * that wait for it (curl, for larger bodies) do not stall for a second. */
static int conn_expect(struct http_conn *c, const struct http_parser *p)
{
    const char *e = http_request_header(c->req, "Expect");
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

    if (e == NULL)
        return 0;
    if (strcasecmp(e, "100-continue") != 0)
        return conn_refuse(c, 417, "only \"Expect: 100-continue\" is supported");
    size_t before = c->out.len;
    if (p->http_minor >= 1 && (p->flags & F_CONTENTLENGTH) && p->content_length > 0 &&
        strbuf_add(&c->out, cont, sizeof(cont) - 1) < 0) {
        buf_rollback(&c->out, before);
        return conn_refuse(c, 500, "out of memory");
    }
    return 0;
}

/* Decide on the request before its body: bodies come by Content-Length
 * only, and a too large one is refused without reading it. */
static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    struct http_request *r = c->req;
    size_t max_body = c->srv->opts.max_body;

    r->method = (int)p->method;
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    if (req_finish_headers(r) < 0)
        return conn_refuse(c, 500, "out of memory");
    if (p->http_major != 1)
        return conn_refuse(c, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
    if (req_split_target(r) < 0)
        return conn_refuse(c, 400, "invalid request target");
    if (c->srv->opts.max_body_for != NULL)
        max_body = c->srv->opts.max_body_for(r->path, r->method, c->srv->arg);
    r->max_body = max_body;
    if (http_request_header(r, "Transfer-Encoding"))
        return conn_refuse(c, 411,
                           "request bodies must be sent with Content-Length, "
                           "not Transfer-Encoding");
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > max_body)
        return conn_refuse(c, 413, "the request body exceeds %zu bytes", max_body);
    if ((p->flags & F_CONTENTLENGTH) && strbuf_reserve(&r->body, (size_t)p->content_length) < 0)
        return conn_refuse(c, 500, "out of memory");
    return conn_expect(c, p);
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    struct strbuf *b = &c->req->body;

    if (b->len + len > c->req->max_body) /* cannot happen with Content-Length */
        return conn_refuse(c, 413, "the request body exceeds %zu bytes", c->req->max_body);
    return strbuf_add(b, at, len) < 0 ? conn_refuse(c, 500, "out of memory") : 0;
}

/* Pausing here makes http_parser_execute() return right after this
 * request, leaving the next pipelined one in the input buffer. */
static int on_message_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    if (strbuf_add(&c->req->body, "", 0) < 0) /* an empty body gets its NUL too */
        return conn_refuse(c, 500, "out of memory");
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* --------------------------------------------------------- processing ---- */

/* Whether buffered input may be parsed now: not while a request is in the
 * handler (ordering), nor while the client does not read its answers. */
static int conn_may_parse(const struct http_conn *c)
{
    return c->phase == CONN_OPEN && c->inflight == NULL && c->in_off < c->in.len &&
           c->out.len - c->out_off <= OUT_HIGH;
}

/* Hand the complete request to the handler (which may respond at once). */
static void conn_dispatch(struct http_conn *c)
{
    struct http_request *r = c->req;
    struct http_server *s = c->srv;

    c->req = NULL;
    c->inflight = r;
    srv_pending_add(s, r);
    conn_timer(c, TM_NONE, 0);
    co_debug("http request", "client=%s method=%s path=%s body=%zu", c->peer,
             http_method_str((enum http_method)r->method), CO_LOG_Q(r->path), r->body.len);
    r->handed_at = ev_time();
    s->handler(r, s->arg);
}

/* The parser stopped with error E: answer it and close. */
static void conn_reject(struct http_conn *c, enum http_errno e)
{
    int status = c->reject_status;
    const char *detail = c->reject_detail;

    if (status == 0) {
        status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
        detail = http_errno_description(e);
    }
    co_debug("http request rejected", "client=%s status=%d error=%s", c->peer, status,
             http_errno_name(e));
    req_free(c->req);
    c->req = NULL;
    conn_error_response(c, status, detail);
}

/* Parse buffered input until it is used up or a request is in the handler. */
static void conn_parse(struct http_conn *c)
{
    while (conn_may_parse(c)) {
        size_t avail = c->in.len - c->in_off;
        size_t n;
        enum http_errno e;

        if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
            http_parser_pause(&c->parser, 0);
        c->exec_start = c->in.p + c->in_off;
        c->exec_end = c->exec_start + avail;
        n = http_parser_execute(&c->parser, &parser_settings, c->exec_start, avail);
        for (size_t i = n; i > 0; i--) /* for value_after_newline() next time */
            if (c->exec_start[i - 1] != ' ' && c->exec_start[i - 1] != '\t') {
                c->tail = c->exec_start[i - 1];
                break;
            }
        c->in_off += n;
        e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED && c->req)
            conn_dispatch(c);
        else if (e != HPE_OK)
            conn_reject(c, e);
        else if (n < avail) /* stopped without error: not HTTP any more */
            conn_reject(c, HPE_UNKNOWN);
    }
}

static void conn_log_io_error(const struct http_conn *c, const char *op, int err)
{
    if (err == ECONNRESET || err == EPIPE || err == ETIMEDOUT)
        co_debug("http client gone", "client=%s op=%s error=\"%s\"", c->peer, op, strerror(err));
    else
        co_warn("http socket error", "client=%s op=%s error=\"%s\"", c->peer, op, strerror(err));
}

/* Send queued output until done or the socket is full.  Returns -1 when
 * the connection was closed (and freed) because sending failed. */
static int conn_flush(struct http_conn *c)
{
    int progress = 0;

    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n >= 0) {
            c->out_off += (size_t)n;
            progress = 1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            conn_log_io_error(c, "send", errno);
            conn_close(c);
            return -1;
        }
    }
    if (progress && c->tmode == TM_WRITE) /* the client reads: give it time again */
        conn_timer(c, TM_WRITE, 1);
    if (c->out_off == c->out.len) {
        strbuf_reset(&c->out);
        c->out_off = 0;
    }
    return 0;
}

static int conn_is_idle(const struct http_conn *c)
{
    return !c->req && !c->inflight && c->phase == CONN_OPEN && c->out_off == c->out.len &&
           c->in_off == c->in.len;
}

static void conn_watch(struct http_conn *c, ev_io *w, int want)
{
    if (want && !ev_is_active(w))
        ev_io_start(c->srv->loop, w);
    else if (!want && ev_is_active(w))
        ev_io_stop(c->srv->loop, w);
}

/* All output sent on a closing connection: shut the write side (the client
 * sees EOF after our last byte) and discard what it still sends. */
static void conn_start_linger(struct http_conn *c)
{
    if (shutdown(c->fd, SHUT_WR) < 0) {
        conn_close(c);
        return;
    }
    c->phase = CONN_LINGERING;
    strbuf_free(&c->in);
    c->in_off = 0;
    conn_watch(c, &c->wio, 0);
    conn_watch(c, &c->rio, 1);
    conn_timer(c, TM_LINGER, 1);
}

/* Bring watchers and timer in line with what the connection waits for.
 * May close (and free) the connection. */
static void conn_update(struct http_conn *c)
{
    int out_pending = c->out_off < c->out.len;

    if (c->phase == CONN_LINGERING)
        return;
    if (c->phase == CONN_CLOSING && !out_pending) {
        conn_start_linger(c);
        return;
    }
    if (c->srv->draining && conn_is_idle(c)) {
        conn_close(c);
        return;
    }
    if (conn_is_idle(c)) { /* hold no buffers while waiting, maybe for long */
        strbuf_free(&c->in);
        strbuf_free(&c->out);
        c->in_off = c->out_off = 0;
    }
    conn_watch(c, &c->rio, c->phase == CONN_OPEN && c->in.len - c->in_off < IN_HELD_MAX);
    conn_watch(c, &c->wio, out_pending);
    conn_timer(c, conn_wanted_tmode(c), 0);
}

/* Parse and dispatch what is buffered, send what is queued, repeat while
 * sending made room for more pipelined answers.  May free C. */
static void conn_process(struct http_conn *c)
{
    conn_unready(c); /* parsed now: nothing left for the ready timer */
    c->in_process = 1;
    do {
        conn_parse(c);
        if (conn_flush(c) < 0)
            return;
    } while (conn_may_parse(c));
    c->in_process = 0;
    conn_update(c);
}

/* Put C on the ready list: its buffered requests are parsed by
 * srv_ready_cb() on the next loop iteration, in the order of the list. */
static void conn_schedule(struct http_conn *c)
{
    struct http_server *s = c->srv;

    if (c->ready)
        return;
    c->ready = 1;
    c->ready_round = s->ready_round;
    c->ready_next = NULL;
    c->ready_prev = s->ready_tail;
    if (s->ready_tail)
        s->ready_tail->ready_next = c;
    else
        s->ready = c;
    s->ready_tail = c;
    if (!ev_is_active(&s->ready_timer)) {
        ev_timer_set(&s->ready_timer, 0., 0.);
        ev_timer_start(s->loop, &s->ready_timer);
    }
}

/* Take C off the ready list (closing, or about to be processed). */
static void conn_unready(struct http_conn *c)
{
    struct http_server *s = c->srv;

    if (!c->ready)
        return;
    if (c->ready_prev)
        c->ready_prev->ready_next = c->ready_next;
    else
        s->ready = c->ready_next;
    if (c->ready_next)
        c->ready_next->ready_prev = c->ready_prev;
    else
        s->ready_tail = c->ready_prev;
    c->ready_prev = c->ready_next = NULL;
    c->ready = 0;
}

/* A request of C was answered outside conn_process(): send what is queued
 * now, and leave the next buffered request to the loop (see the top of the
 * file).  May free C. */
static void conn_resume(struct http_conn *c)
{
    if (conn_flush(c) < 0)
        return;
    if (conn_may_parse(c))
        conn_schedule(c);
    conn_update(c);
}

/* The ready timer: parse the connections that were on the list when it
 * fired; those that get on it meanwhile wait for the next iteration, so
 * other events are served in between. */
static void srv_ready_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct http_server *s = w->data;
    unsigned round = ++s->ready_round;
    (void)loop;
    (void)revents;

    /* processing one connection may close others: always take the head */
    while (s->ready != NULL && s->ready->ready_round != round) {
        struct http_conn *c = s->ready;
        conn_unready(c);
        conn_process(c);
    }
    if (s->ready != NULL) {
        ev_timer_set(&s->ready_timer, 0., 0.);
        ev_timer_start(s->loop, &s->ready_timer);
    }
}

/* Make room in the input buffer, doubling it up to IN_MAX bytes.  Returns
 * the free space (0 when IN_HELD_MAX unparsed bytes are held), or -1 when
 * out of memory.  recv() writes into the buffer directly, short of the
 * byte strbuf keeps for its NUL. */
static ssize_t conn_in_room(struct http_conn *c)
{
    struct strbuf *b = &c->in;

    if (c->in_off > 0) {
        memmove(b->p, b->p + c->in_off, b->len - c->in_off);
        b->len -= c->in_off;
        b->p[b->len] = '\0';
        c->in_off = 0;
    }
    size_t room = b->cap > b->len ? b->cap - b->len - 1 : 0;
    if (room < IN_READ_MIN && b->cap < IN_MAX) {
        size_t cap = b->cap ? b->cap * 2 : IN_INITIAL;
        if (strbuf_reserve(b, (cap < IN_MAX ? cap : IN_MAX) - b->len - 1) < 0)
            return -1;
        room = b->cap - b->len - 1;
    }
    return (ssize_t)room;
}

/* Closing: read and drop input until EOF, error or LINGER_TIMEOUT. */
static void conn_linger_read(struct http_conn *c)
{
    char junk[4096];

    for (int i = 0; i < LINGER_READS; i++) {
        ssize_t n = recv(c->fd, junk, sizeof(junk), 0);
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break; /* EOF or error: the client is done */
    }
    conn_close(c);
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct http_conn *c = w->data;
    ssize_t room, n;
    (void)loop;
    (void)revents;

    if (c->phase == CONN_LINGERING) {
        conn_linger_read(c);
        return;
    }
    room = conn_in_room(c);
    if (room <= 0) {
        if (room < 0)
            co_warn("http connection dropped", "client=%s error=\"out of memory\"", c->peer);
        if (room < 0)
            conn_close(c);
        else
            conn_update(c); /* buffer full: stop reading until it is parsed */
        return;
    }
    n = recv(c->fd, c->in.p + c->in.len, (size_t)room, 0);
    if (n > 0) {
        c->in.len += (size_t)n;
        c->in.p[c->in.len] = '\0';
        conn_process(c);
    } else if (n == 0) {
        /* EOF: also when a request is in the handler — as nginx does, a
         * half-close counts as the client giving up; the request is "gone". */
        co_debug("http client closed", "client=%s", c->peer);
        conn_close(c);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        conn_log_io_error(c, "recv", errno);
        conn_close(c);
    }
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_process(w->data);
}

/* "addr:port" of the peer, for logs. */
static void format_peer(const struct sockaddr_storage *sa, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, outlen, sa->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

static void conn_new(struct http_server *s, int fd, const struct sockaddr_storage *sa)
{
    struct http_conn *c = calloc(1, sizeof(*c));
    int one = 1;

    if (c == NULL) {
        co_warn("http connection dropped", "error=\"out of memory\"");
        close(fd);
        return;
    }
    c->srv = s;
    c->fd = fd;
    format_peer(sa, c->peer, sizeof(c->peer));
    /* Each answer is written whole; Nagle would only delay the last segment. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    ev_init(&c->timer, conn_timer_cb);
    c->rio.data = c->wio.data = c->timer.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    co_debug("http connection accepted", "client=%s fd=%d connections=%d", c->peer, fd, s->n_conns);
    conn_update(c);
}

/* Close and free C.  A request still in the handler stays alive, marked
 * gone, until its http_respond(). */
static void conn_close(struct http_conn *c)
{
    struct http_server *s = c->srv;

    ev_io_stop(s->loop, &c->rio);
    ev_io_stop(s->loop, &c->wio);
    ev_timer_stop(s->loop, &c->timer);
    conn_unready(c);
    close(c->fd);
    if (c->inflight) {
        co_debug("http client gone during request", "client=%s", c->peer);
        c->inflight->conn = NULL;
    }
    req_free(c->req);
    strbuf_free(&c->in);
    strbuf_free(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    free(c);
    srv_update_accept(s);
    srv_check_drained(s);
}

/* -------------------------------------------------------------- accept ---- */

/* Start the accept watchers when we may take connections, stop them
 * otherwise (cap reached, stopping, or pausing after a resource error). */
static void srv_update_accept(struct http_server *s)
{
    int want = s->accepting && !s->accept_paused && s->n_conns < s->opts.max_connections;

    for (int i = 0; i < s->n_accept; i++) {
        if (want && !ev_is_active(&s->accept_w[i]))
            ev_io_start(s->loop, &s->accept_w[i]);
        else if (!want && ev_is_active(&s->accept_w[i]))
            ev_io_stop(s->loop, &s->accept_w[i]);
    }
}

/* Classify a failed accept4().  Returns 1 to try the next connection,
 * 0 to stop for now.  Out of descriptors or memory, the socket would stay
 * readable and the loop would spin: pause accepting for ACCEPT_RETRY. */
static int srv_accept_error(struct http_server *s, int err)
{
    if (err == EAGAIN || err == EWOULDBLOCK)
        return 0; /* drained, or another process took it */
    if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN ||
        err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH ||
        err == EOPNOTSUPP || err == ENETUNREACH)
        return 1; /* that one connection failed (see accept(2) on Linux) */
    co_warn("http accept failed, pausing accepts", "error=\"%s\" retry_s=%.1f", strerror(err),
            ACCEPT_RETRY);
    s->accept_paused = 1;
    ev_timer_set(&s->accept_retry, ACCEPT_RETRY, 0.);
    ev_timer_start(s->loop, &s->accept_retry);
    return 0;
}

static void srv_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct http_server *s = w->data;
    (void)loop;
    (void)revents;

    while (s->accepting && !s->accept_paused && s->n_conns < s->opts.max_connections) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        int fd = accept4(w->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd >= 0)
            conn_new(s, fd, &sa);
        else if (!srv_accept_error(s, errno))
            break;
    }
    srv_update_accept(s);
}

static void srv_accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct http_server *s = w->data;
    (void)loop;
    (void)revents;
    s->accept_paused = 0;
    srv_update_accept(s);
}

/* ---------------------------------------------------------- lifecycle ---- */

/* When draining and nothing is left, call drain_done from the loop (a
 * zero timer), so it never runs inside a respond or close of ours. */
static void srv_check_drained(struct http_server *s)
{
    if (s->draining && s->drain_done && s->n_conns == 0 && s->n_pending == 0 &&
        !ev_is_active(&s->drain_timer)) {
        ev_timer_set(&s->drain_timer, 0., 0.);
        ev_timer_start(s->loop, &s->drain_timer);
    }
}

static void srv_drain_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct http_server *s = w->data;
    void (*done)(void *) = s->drain_done;
    (void)loop;
    (void)revents;

    s->drain_done = NULL;
    if (done)
        done(s->drain_arg);
}

static int opts_resolve(struct http_server_opts *o, const struct http_server_opts *in)
{
    *o = *in;
    if (o->max_connections == 0)
        o->max_connections = HTTP_DEFAULT_MAX_CONNECTIONS;
    if (o->max_body == 0)
        o->max_body = HTTP_DEFAULT_MAX_BODY;
    if (o->max_header_bytes == 0)
        o->max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
    if (o->idle_timeout == 0)
        o->idle_timeout = HTTP_DEFAULT_IDLE_TIMEOUT;
    if (o->read_timeout == 0)
        o->read_timeout = HTTP_DEFAULT_READ_TIMEOUT;
    if (o->max_connections < 0 || o->idle_timeout < 0 || o->read_timeout < 0) {
        co_error("http server: invalid options",
                 "max_connections=%d idle_timeout=%g read_timeout=%g", o->max_connections,
                 o->idle_timeout, o->read_timeout);
        return -1;
    }
    return 0;
}

/* Make the listening sockets non-blocking: the accept loop stops at
 * EAGAIN, and should another process accept on the same socket (the master
 * gives each socket to one worker at a time, but hands it over at a
 * reload) the one that loses the race gets EAGAIN, not a hang. */
static int srv_init_accept(struct http_server *s, const int *fds, int n)
{
    s->accept_w = calloc((size_t)n, sizeof(*s->accept_w));
    if (s->accept_w == NULL) {
        co_error("http server: out of memory", "n_fds=%d", n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0) {
            co_error("http server: listening socket unusable", "fd=%d error=\"%s\"", fds[i],
                     strerror(errno));
            return -1;
        }
        ev_io_init(&s->accept_w[i], srv_accept_cb, fds[i], EV_READ);
        s->accept_w[i].data = s;
    }
    s->n_accept = n;
    return 0;
}

struct http_server *http_server_new(struct ev_loop *loop, const int *listen_fds, int n_fds,
                                    const struct http_server_opts *opts, http_handler_fn handler,
                                    void *arg)
{
    struct http_server *s = calloc(1, sizeof(*s));

    if (s == NULL || n_fds < 1 || handler == NULL || opts_resolve(&s->opts, opts) < 0 ||
        srv_init_accept(s, listen_fds, n_fds) < 0) {
        if (s && (n_fds < 1 || handler == NULL))
            co_error("http server: no listening socket or no handler", "n_fds=%d", n_fds);
        if (s)
            free(s->accept_w);
        free(s);
        return NULL;
    }
    s->loop = loop;
    s->handler = handler;
    s->arg = arg;
    s->date_at = (time_t)-1;
    ev_init(&s->accept_retry, srv_accept_retry_cb);
    s->accept_retry.data = s;
    ev_init(&s->drain_timer, srv_drain_timer_cb);
    s->drain_timer.data = s;
    ev_init(&s->ready_timer, srv_ready_cb);
    s->ready_timer.data = s;
    s->accepting = 1;
    srv_update_accept(s);
    return s;
}

void http_server_stop_accepting(struct http_server *s)
{
    s->accepting = 0;
    ev_timer_stop(s->loop, &s->accept_retry);
    srv_update_accept(s);
}

void http_server_drain(struct http_server *s, void (*done)(void *), void *arg)
{
    http_server_stop_accepting(s);
    s->draining = 1;
    s->drain_done = done;
    s->drain_arg = arg;
    for (struct http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (conn_is_idle(c) && !c->in_process)
            conn_close(c);
    }
    co_debug("http draining", "connections=%d pending=%d", s->n_conns, s->n_pending);
    srv_check_drained(s);
}

void http_server_free(struct http_server *s)
{
    if (s == NULL)
        return;
    http_server_stop_accepting(s);
    s->drain_done = NULL;
    ev_timer_stop(s->loop, &s->drain_timer);
    ev_timer_stop(s->loop, &s->ready_timer);
    while (s->conns)
        conn_close(s->conns);
    for (struct http_request *r = s->pending; r; r = r->next)
        r->srv = NULL; /* freed by their http_respond(), which must not touch s */
    free(s->accept_w);
    free(s);
}

void http_server_observe(struct http_server *s, http_observer_fn fn, void *arg)
{
    s->observer = fn;
    s->observer_arg = arg;
}

void http_request_set_tag(struct http_request *r, int tag)
{
    r->tag = tag;
}

int http_server_connections(const struct http_server *s)
{
    return s->n_conns;
}

/* ---------------------------------------------------- request access ---- */

int http_request_method(const struct http_request *r)
{
    return r->method;
}

const char *http_request_path(const struct http_request *r)
{
    return r->path;
}

const char *http_request_query(const struct http_request *r)
{
    return r->query;
}

const char *http_request_header(const struct http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nhdrs; i++)
        if (strcasecmp(r->hbuf.p + r->hdrs[i].name, name) == 0)
            return r->hbuf.p + r->hdrs[i].value;
    return NULL;
}

const char *http_request_body(const struct http_request *r, size_t *len)
{
    if (len)
        *len = r->body.len;
    return r->body.p ? r->body.p : "";
}

int http_request_is_gone(const struct http_request *r)
{
    return r->conn == NULL;
}

/* ------------------------------------------------------------ respond ---- */

/* The Connection header for the answer to R: "close" when we close after
 * it, "keep-alive" for an HTTP/1.0 client that asked to keep it. */
static const char *resp_connection(const struct http_request *r, int closing)
{
    if (closing)
        return "close";
    if (r->http_major == 1 && r->http_minor == 0)
        return "keep-alive";
    return NULL;
}

void http_respond(struct http_request *r, int status, const char *content_type,
                  const char *extra_headers, const char *body, size_t len)
{
    struct http_conn *c = r->conn;
    int closing;

    if (r->srv != NULL && r->srv->observer != NULL && r->handed_at > 0)
        r->srv->observer(r->srv->observer_arg, r->tag, status, ev_time() - r->handed_at);
    srv_pending_remove(r);
    if (c == NULL) {
        co_debug("http response dropped, client gone", "status=%d", status);
        req_free(r);
        return;
    }
    if (status < 200 || status > 599) {
        co_warn("http handler gave an invalid status, sending 500", "status=%d path=%s", status,
                CO_LOG_Q(r->path));
        status = 500;
        content_type = extra_headers = body = NULL;
        len = 0;
    }
    if (body == NULL)
        len = 0;
    closing = !r->keep_alive || c->srv->draining;
    struct resp rs = { status,
                       content_type,
                       extra_headers,
                       body,
                       len,
                       r->method == HTTP_HEAD,
                       resp_connection(r, closing) };
    if (conn_queue_response(c, &rs) < 0) {
        co_warn("http response dropped", "client=%s status=%d error=\"out of memory\"", c->peer,
                status);
        closing = 1;
    }
    c->inflight = NULL;
    req_free(r);
    if (closing)
        conn_set_closing(c);
    if (!c->in_process) /* answered later: send now, parse from the loop */
        conn_resume(c);
}

void http_respond_problem(struct http_request *r, int status, const char *detail,
                          const char *extra_headers)
{
    size_t len;
    char *body = problem_body(status, detail, &len);

    http_respond(r, status, PROBLEM_CONTENT_TYPE, extra_headers, body ? body : "", len);
    free(body);
}
