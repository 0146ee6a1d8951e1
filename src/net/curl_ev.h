/*
 * curl_ev.h — outgoing HTTP requests on a libev loop, through libcurl's
 * multi_socket interface.
 *
 * Owns: one CURLM handle per struct curl_ev (and with it the connection
 * cache, so keep-alive connections are reused across requests to the same
 * host), one ev_io per socket libcurl asks us to watch, one ev_timer for
 * libcurl's timeout, and one easy handle per request in flight with copies
 * of everything it needs.  Completed transfers are collected with
 * curl_multi_info_read() and reported to their callback.
 *
 * Used by callorchd's kafka children (the provider client) and by
 * callorch-provider-sim (its webhooks).  Many requests are in flight at once;
 * nothing here ever blocks the loop (name resolution uses libcurl's
 * threaded resolver as Debian builds it).
 *
 * Every easy handle gets: CURLOPT_NOSIGNAL (no SIGALRM in a daemon),
 * CURLOPT_PROXY "" (the environment's http_proxy is ignored: the target is a
 * configured URL, not the operator's browsing), TCP_NODELAY, http and https
 * only, no redirects followed, no "Expect: 100-continue", and a response
 * body capped at CURL_EV_MAX_BODY bytes.
 *
 * Process-wide setup: curl_global_init() is called by curl_ev_global_init(),
 * which main() calls once, before it forks or starts threads (callorchd's
 * master, the simulator's main).  curl_ev_new() calls it too when nobody did
 * (libcurl reference-counts it), which is safe in a single-threaded process.
 *
 * Not thread-safe: one struct curl_ev belongs to one loop in one thread.
 */
#ifndef CO_CURL_EV_H
#define CO_CURL_EV_H

#include <curl/curl.h>
#include <ev.h>
#include <stddef.h>

/* Response bytes kept; the rest is read and discarded (body_truncated). */
#define CURL_EV_MAX_BODY (64 * 1024)

struct curl_ev;

struct curl_ev_request {
    const char *method; /* "GET", "POST", "PUT", "DELETE", "HEAD", ...; NULL = GET */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" list, or NULL */
    const char *body;           /* may be NULL; sent for any method if body_len > 0 */
    size_t body_len;
    double timeout_s; /* whole transfer, connect included; <= 0: none */
};

struct curl_ev_response {
    long status;             /* HTTP status; 0 when no HTTP answer arrived */
    CURLcode result;         /* CURLE_OK when an answer arrived (any status) */
    const char *error;       /* NULL when result is CURLE_OK, else curl's message */
    const char *body;        /* never NULL; NUL-terminated, "" when empty */
    size_t body_len;         /* <= CURL_EV_MAX_BODY */
    int body_truncated;      /* 1 when the answer was longer than the cap */
    const char *retry_after; /* the Retry-After header's value, or NULL */
    double total_time;       /* s, from curl_ev_send() to completion */
};

/* The pointers in RESP are valid during the call only. */
typedef void (*curl_ev_done_cb)(void *arg, const struct curl_ev_response *resp);

/* curl_global_init(CURL_GLOBAL_DEFAULT) once per process.  0 or -1. */
int curl_ev_global_init(void);

/* A multi handle driven by LOOP.  NULL (logged) on failure. */
struct curl_ev *curl_ev_new(struct ev_loop *loop);

/*
 * Free CE.  Every request still in flight is failed first: its callback is
 * called, from inside this function, with status 0, result
 * CURLE_ABORTED_BY_CALLBACK and error "aborted: client shut down", so an
 * owner's per-request state is always released through the callback.
 * Those callbacks must not call curl_ev_send() (it fails) nor curl_ev_free().
 * Must not be called from a done callback of CE itself.
 */
void curl_ev_free(struct curl_ev *ce);

/*
 * Start REQ.  Method, URL, headers and body are copied, so REQ may go away
 * when this returns.  CB(ARG, response) is called exactly once, always from
 * the loop (never from inside curl_ev_send), also for errors libcurl finds
 * later (bad URL, refused connection, timeout).  A done callback may start
 * new requests.  Returns 0, or -1 (logged; CB will not be called) when the
 * request could not even be set up: out of memory, or CE is being freed.
 */
int curl_ev_send(struct curl_ev *ce, const struct curl_ev_request *req, curl_ev_done_cb cb,
                 void *arg);

/* Requests started and not yet completed. */
int curl_ev_in_flight(const struct curl_ev *ce);

#endif
