/*
 * http_server.h — the HTTP/1.1 connection layer of an http child.
 *
 * Owns: accepting on the listening sockets the master bound, one
 * non-blocking connection per client on a libev loop, parsing requests with
 * http-parser, keep-alive and pipelining (answers strictly in request
 * order), the limits and timeouts of DESIGN.md section 4 (max_connections,
 * max_body, 16 KiB header block, idle and read timeouts) and the errors this
 * layer answers by itself (400, 408, 411, 413, 417, 431), graceful stop.
 *
 * Does not own: routing, authentication, JSON bodies — the handler does that
 * on top of the accessors below and answers with http_respond(), at once or
 * later from another callback (e.g. when the database answered).
 *
 * One http_server per process, driven by one ev loop; not thread-safe.
 */
#ifndef CO_HTTP_SERVER_H
#define CO_HTTP_SERVER_H

#include <ev.h>
#include <stddef.h>

struct http_server;
struct http_request;

/* Called once per complete request, in the order requests arrive on a
 * connection.  The next request of that connection is not parsed before
 * http_respond() was called for this one, and never from inside
 * http_respond(): the handler is not re-entered by an answer, so a caller
 * may answer several requests in a loop.  (Answered at once, from the
 * handler, the next one is parsed when the handler returned; answered
 * later, on a following loop iteration.) */
typedef void (*http_handler_fn)(struct http_request *req, void *arg);

/* A zero field takes the default below. */
struct http_server_opts {
    int max_connections; /* per process; accepting pauses at the cap */
    size_t max_body;     /* larger Content-Length: 413 before reading it */
    /* NULL, or the limit of one request by its path and method (a route
     * that takes bulk bodies), called with the handler's ARG once the
     * request line and headers are in; replaces max_body for it. */
    size_t (*max_body_for)(const char *path, int method, void *arg);
    size_t max_header_bytes; /* request target + header lines; larger: 431 */
    double idle_timeout;     /* s; keep-alive connection with no request
                              * in progress is closed silently; also the
                              * longest a client may leave a response unread */
    double read_timeout;     /* s; from a request's first byte until it is
                              * complete, else 408 and close */
};

#define HTTP_DEFAULT_MAX_CONNECTIONS 1024
#define HTTP_DEFAULT_MAX_BODY (64 * 1024)
#define HTTP_DEFAULT_MAX_HEADER_BYTES (16 * 1024)
#define HTTP_DEFAULT_IDLE_TIMEOUT 30.0
#define HTTP_DEFAULT_READ_TIMEOUT 10.0

/*
 * Serve on LISTEN_FDS (already bound and listening, owned by the caller,
 * who closes them after http_server_free()); they are made non-blocking.
 * HANDLER(req, ARG) gets every complete request.  Returns NULL (logged) on
 * bad options or no memory.
 */
struct http_server *http_server_new(struct ev_loop *loop, const int *listen_fds, int n_fds,
                                    const struct http_server_opts *opts, http_handler_fn handler,
                                    void *arg);

/* Graceful stop, step 1: stop accepting; queued connections stay in the
 * kernel's backlog for the other (or the next generation of) children. */
void http_server_stop_accepting(struct http_server *s);

/*
 * Graceful stop, step 2 (implies step 1): close idle connections now; a
 * request being received or in the handler is finished and answered with
 * "Connection: close".  DONE(ARG) is called once, from the loop (never from
 * inside this call), when no connection is left and no request is waiting
 * for its http_respond() (including requests whose client went away).
 */
void http_server_drain(struct http_server *s, void (*done)(void *), void *arg);

/*
 * Close every connection at once and free the server.  Requests still in the
 * handler become "gone": their http_respond() only frees them.  Must not be
 * called from inside the handler.
 */
void http_server_free(struct http_server *s);

/* Called for every answer the handler gives, with the tag it set on the
 * request, the status, and the seconds since the handler got it (metrics). */
typedef void (*http_observer_fn)(void *arg, int tag, int status, double seconds);
void http_server_observe(struct http_server *s, http_observer_fn fn, void *arg);

/* Label R for the observer (e.g. its route). */
void http_request_set_tag(struct http_request *r, int tag);

/* Number of open connections (for metrics and tests). */
int http_server_connections(const struct http_server *s);

/* --- request accessors; valid until http_respond() ----------------------- */

/* enum http_method from <http_parser.h> (HTTP_GET, HTTP_POST, ...). */
int http_request_method(const struct http_request *r);

/* The path of the request target, without query or fragment, exactly as
 * sent (not percent-decoded), NUL-terminated; "/" when the target had none. */
const char *http_request_path(const struct http_request *r);

/* The query string after '?' (not decoded), or NULL when there was no '?'. */
const char *http_request_query(const struct http_request *r);

/* The value of header NAME (case-insensitive), surrounding blanks removed;
 * the first one if it was repeated; NULL if absent. */
const char *http_request_header(const struct http_request *r, const char *name);

/* The body (NUL-terminated for convenience, "" when none) and its length. */
const char *http_request_body(const struct http_request *r, size_t *len);

/* 1 when the client closed the connection while the request was in the
 * handler: the answer will not be sent, but http_respond() must still be
 * called to free the request. */
int http_request_is_gone(const struct http_request *r);

/* --- answering ------------------------------------------------------------ */

/*
 * Answer R and free it: exactly once per request, now or later from any
 * callback on the same loop.  STATUS 200..599 (else 500 is sent and a
 * warning logged).  CONTENT_TYPE may be NULL (no Content-Type header).
 * EXTRA_HEADERS is NULL or complete lines "Name: value\r\n..."; it must not
 * contain Content-Length, Date, Server or Connection, which this layer
 * writes.  BODY/LEN are copied; a HEAD request gets the headers only, and a
 * 204 or 304 never carries a body.  R must not be used afterwards.
 */
void http_respond(struct http_request *r, int status, const char *content_type,
                  const char *extra_headers, const char *body, size_t len);

/* Answer R with problem.c's application/problem+json body for STATUS and
 * DETAIL (NULL: none); EXTRA_HEADERS as for http_respond(). */
void http_respond_problem(struct http_request *r, int status, const char *detail,
                          const char *extra_headers);

#endif
