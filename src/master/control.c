/*
 * control.c — the control socket: creating it, serving it on the master's
 * loop, and the client side callorchctl uses (see control.h).
 *
 * The server is a tiny state machine per connection: read one line (bounded,
 * with an idle timer), answer it, write the answer without blocking, close.
 * The master never blocks on a client and never holds more than
 * CONTROL_MAX_CLIENTS of them; the rest wait in the listen backlog.
 *
 * Two locks on the door: the socket file's mode (0600, owned by the
 * [daemon] user), and the peer's credentials (SO_PEERCRED), so that a mode
 * loosened by hand still lets only root and the user the master runs as
 * give commands.  Anyone else gets a refusal, logged once per connection.
 */
#include <auto-config.h>

#include "master/control.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "util/log.h"
#include "util/strbuf.h"

#define ACCEPT_RETRY 1.0 /* seconds, after EMFILE and the like */
#define CLIENT_MAX_ANSWER (4 * 1024 * 1024)

/* A connection answers one request, then closes; after "stop" it instead
 * acts on it once the answer is out and lingers, open, until we exit. */
enum conn_state { CONN_SERVING, CONN_STOP_AFTER_ANSWER, CONN_LINGERING };

struct conn {
    struct control *ctl;
    int fd;
    ev_io io;
    ev_timer idle;
    struct ucred peer;
    bool allowed; /* root or the master's own user */
    char in[CONTROL_MAX_REQUEST];
    size_t in_len;
    char *out; /* the answer, once there is one */
    size_t out_len, out_off;
    enum conn_state state;
};

struct control {
    char *path;
    int fd;
    struct ev_loop *loop; /* NULL while not serving */
    const struct control_ops *ops;
    void *arg;
    ev_io accept_io;
    ev_timer accept_retry;
    struct conn *conns[CONTROL_MAX_CLIENTS];
    int n_conns;
};

/* ---------------------------------------------------------- creating */

static int unix_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        snprintf(err, errlen, "control socket path %s is too long (at most %zu bytes)", path,
                 sizeof(sa->sun_path) - 1);
        return -1;
    }
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return 0;
}

/* Whether something accepts connections at SA: 1 yes, 0 no, -1 error. */
static int answers(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    int e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN) /* EAGAIN: a live listener with a full backlog */
        return 1;
    errno = e;
    return e == ECONNREFUSED ? 0 : -1;
}

/* Make room at SA's path: nothing there, or a stale socket we remove. */
static int claim_path(const struct sockaddr_un *sa, char *err, size_t errlen)
{
    const char *path = sa->sun_path;
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "control socket %s: exists and is not a socket", path);
        return -1;
    }
    int live = answers(sa);
    if (live != 0) {
        if (live > 0)
            snprintf(err, errlen, "another callorchd is running (it answers on %s)", path);
        else
            snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
        return -1;
    }
    if (unlink(path) < 0) {
        snprintf(err, errlen, "cannot remove stale control socket %s: %s", path, strerror(errno));
        return -1;
    }
    co_info("removed a stale control socket", "path=%s", path);
    return 0;
}

/* Bind and listen at SA with mode 0600 (and owner UID:GID); the fd or -1. */
static int bind_socket(const struct sockaddr_un *sa, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "control socket: %s", strerror(errno));
        return -1;
    }
    mode_t old = umask(0177); /* born 0600: never a moment with wider access */
    int rc = bind(fd, (const struct sockaddr *)sa, sizeof(*sa));
    umask(old);
    if (rc < 0 || chmod(sa->sun_path, 0600) < 0 ||
        (uid != (uid_t)-1 && lchown(sa->sun_path, uid, gid) < 0) || listen(fd, 16) < 0) {
        snprintf(err, errlen, "control socket %s: %s", sa->sun_path, strerror(errno));
        if (rc == 0)
            unlink(sa->sun_path);
        close(fd);
        return -1;
    }
    return fd;
}

struct control *control_open(const char *path, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    if (unix_addr(path, &sa, err, errlen) < 0 || claim_path(&sa, err, errlen) < 0)
        return NULL;
    struct control *ctl = calloc(1, sizeof(*ctl));
    if (ctl == NULL || (ctl->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "control socket: out of memory");
        free(ctl);
        return NULL;
    }
    if ((ctl->fd = bind_socket(&sa, uid, gid, err, errlen)) < 0) {
        free(ctl->path);
        free(ctl);
        return NULL;
    }
    return ctl;
}

/* ------------------------------------------------------- connections */

static void on_conn_io(struct ev_loop *loop, ev_io *w, int revents);
static void on_conn_idle(struct ev_loop *loop, ev_timer *w, int revents);

/* Accept while there is room; stop watching the socket when full. */
static void update_accepting(struct control *ctl)
{
    if (ctl->n_conns < CONTROL_MAX_CLIENTS && !ev_is_active(&ctl->accept_retry))
        ev_io_start(ctl->loop, &ctl->accept_io);
    else
        ev_io_stop(ctl->loop, &ctl->accept_io);
}

static void conn_free(struct conn *c)
{
    struct control *ctl = c->ctl;
    ev_io_stop(ctl->loop, &c->io);
    ev_timer_stop(ctl->loop, &c->idle);
    close(c->fd);
    free(c->out);
    for (int i = 0; i < ctl->n_conns; i++) {
        if (ctl->conns[i] == c) {
            ctl->conns[i] = ctl->conns[--ctl->n_conns];
            break;
        }
    }
    free(c);
    update_accepting(ctl);
}

static void conn_new(struct control *ctl, int fd)
{
    struct conn *c = calloc(1, sizeof(*c));
    socklen_t len = sizeof(struct ucred);
    if (c == NULL) {
        close(fd);
        return;
    }
    c->ctl = ctl;
    c->fd = fd;
    c->peer.pid = -1;
    c->peer.uid = (uid_t)-1;
    /* unknown credentials are refused like a stranger's */
    c->allowed = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->peer, &len) == 0 &&
                 control_peer_allowed(c->peer.uid, geteuid());
    ev_io_init(&c->io, on_conn_io, fd, EV_READ);
    c->io.data = c;
    ev_init(&c->idle, on_conn_idle);
    c->idle.repeat = CONTROL_IDLE_TIMEOUT;
    c->idle.data = c;
    ev_io_start(ctl->loop, &c->io);
    ev_timer_again(ctl->loop, &c->idle);
    ctl->conns[ctl->n_conns++] = c;
}

bool control_peer_allowed(uid_t peer, uid_t master)
{
    return peer == 0 || peer == master;
}

static void on_accept_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    update_accepting(w->data);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct control *ctl = w->data;
    while (ctl->n_conns < CONTROL_MAX_CLIENTS) {
        int fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_new(ctl, fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            co_warn("control socket: cannot accept; retrying", "error=\"%s\"", strerror(errno));
            ev_timer_set(&ctl->accept_retry, ACCEPT_RETRY, 0.);
            ev_timer_start(loop, &ctl->accept_retry);
        }
        break; /* EAGAIN, or a client that gave up (ECONNABORTED) */
    }
    update_accepting(ctl);
}

static void on_conn_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct conn *c = w->data;
    co_debug("control client timed out", "peer_pid=%d", (int)c->peer.pid);
    conn_free(c);
}

/* ----------------------------------------------------------- answers */

static json_t *error_answer(const char *fmt, ...) CO_PRINTF(1, 2);

static json_t *error_answer(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

/* Seconds, rounded to the millisecond. */
static double msec(double seconds)
{
    return round(seconds * 1000.) / 1000.;
}

static json_t *child_json(const struct control_child *ch)
{
    return json_pack("{s:s, s:i, s:o, s:i, s:f, s:i, s:b, s:s}", "kind", ch->kind, "slot", ch->slot,
                     "pid", ch->pid > 0 ? json_integer(ch->pid) : json_null(), "generation",
                     (int)ch->generation, "uptime", msec(ch->uptime), "restarts", (int)ch->restarts,
                     "ready", ch->ready, "state", ch->state);
}

static json_t *status_json(const struct control_status *st)
{
    json_t *children = json_array();
    for (int i = 0; i < st->n_children; i++)
        json_array_append_new(children, child_json(&st->children[i]));
    return json_pack("{s:b, s:i, s:s, s:s, s:f, s:s, s:i, s:b, s:i, s:i, s:o}", "ok", 1, "pid",
                     (int)getpid(), "version", PACKAGE_VERSION, "config_file", st->config_file,
                     "uptime", msec(st->uptime), "state", st->state, "generation",
                     (int)st->generation, "paused", st->paused, "slots_in_use", st->slots_in_use,
                     "max_concurrent_calls", st->max_concurrent_calls, "children", children);
}

static json_t *cmd_status(struct conn *c)
{
    struct control_status st = { 0 };
    if (c->ctl->ops->status(c->ctl->arg, &st) < 0)
        return error_answer("out of memory");
    json_t *answer = status_json(&st);
    free(st.children);
    return answer;
}

static json_t *cmd_reload(struct conn *c)
{
    char err[1024];
    unsigned generation;
    if (c->ctl->ops->reload(c->ctl->arg, &generation, err, sizeof(err)) < 0)
        return error_answer("%s", err);
    return json_pack("{s:b, s:i}", "ok", 1, "generation", (int)generation);
}

static json_t *cmd_stop(struct conn *c)
{
    c->state = CONN_STOP_AFTER_ANSWER;
    return json_pack("{s:b, s:i, s:f}", "ok", 1, "pid", (int)getpid(), "shutdown_timeout",
                     c->ctl->ops->shutdown_timeout(c->ctl->arg));
}

static json_t *set_paused(struct conn *c, int paused)
{
    int was = c->ctl->ops->set_paused(c->ctl->arg, paused);
    if (was < 0)
        return error_answer("the shared state is not available");
    return json_pack("{s:b, s:b, s:b}", "ok", 1, "paused", paused, "changed", was != paused);
}

static json_t *cmd_pause(struct conn *c)
{
    return set_paused(c, 1);
}

static json_t *cmd_resume(struct conn *c)
{
    return set_paused(c, 0);
}

static const struct {
    const char *name;
    json_t *(*run)(struct conn *c);
} commands[] = {
    { "status", cmd_status }, { "reload", cmd_reload }, { "stop", cmd_stop },
    { "pause", cmd_pause },   { "resume", cmd_resume },
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* The refusal of a peer that is neither root nor the master's user. */
static json_t *refusal(const struct conn *c)
{
    char msg[256];
    co_warn("control socket: client refused (neither root nor the daemon's user)",
            "peer_uid=%ld peer_pid=%ld", c->peer.uid == (uid_t)-1 ? -1L : (long)c->peer.uid,
            (long)c->peer.pid);
    snprintf(msg, sizeof msg,
             "permission denied: uid %ld may not give commands (root or the [daemon] user "
             "only)",
             c->peer.uid == (uid_t)-1 ? -1L : (long)c->peer.uid);
    return json_pack("{s:b, s:b, s:s}", "ok", 0, "denied", 1, "error", msg);
}

/* The answer to the request in c->in[0..len). */
static json_t *answer_request(struct conn *c, size_t len)
{
    if (!c->allowed)
        return refusal(c); /* the request is not even parsed */
    json_error_t jerr;
    json_t *req = json_loadb(c->in, len, 0, &jerr);
    const char *name = json_string_value(json_object_get(req, "command"));
    json_t *answer = NULL;

    if (req == NULL)
        answer = error_answer("malformed request: %s", jerr.text);
    else if (name == NULL)
        answer = error_answer("malformed request: no \"command\" string");
    for (size_t i = 0; answer == NULL && i < N_COMMANDS; i++) {
        if (strcmp(name, commands[i].name) == 0) {
            co_info("control command", "command=%s peer_uid=%d peer_pid=%d", name, (int)c->peer.uid,
                    (int)c->peer.pid);
            answer = commands[i].run(c);
        }
    }
    if (answer == NULL)
        answer = error_answer("unknown command \"%s\"", name);
    json_decref(req);
    return answer;
}

/* ----------------------------------------------------------- the wire */

/* The answer is out (or the client is gone): close, or act on "stop". */
static void conn_finish(struct conn *c)
{
    if (c->state != CONN_STOP_AFTER_ANSWER) {
        conn_free(c);
        return;
    }
    /* keep the connection: the client sees it close when the master exits */
    ev_io_stop(c->ctl->loop, &c->io);
    ev_timer_stop(c->ctl->loop, &c->idle);
    c->state = CONN_LINGERING;
    c->ctl->ops->stop(c->ctl->arg);
}

static void conn_write(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (errno == EAGAIN) {
            ev_timer_again(c->ctl->loop, &c->idle);
            return; /* the watcher waits for EV_WRITE */
        } else if (errno != EINTR) {
            break;
        }
    }
    conn_finish(c);
}

static void send_answer(struct conn *c, json_t *answer)
{
    size_t flags = JSON_COMPACT | JSON_REAL_PRECISION(15);
    char *text = answer != NULL ? json_dumps(answer, flags) : NULL;
    struct strbuf line = { 0 };
    json_decref(answer);
    if (text != NULL) {
        strbuf_adds(&line, text);
        strbuf_addc(&line, '\n');
    }
    free(text);
    c->out_len = line.len;
    c->out = strbuf_take(&line);
    if (c->out == NULL) {
        co_error("control socket: cannot build an answer", "error=\"out of memory\"");
        conn_finish(c);
        return;
    }
    ev_io_stop(c->ctl->loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_WRITE);
    ev_io_start(c->ctl->loop, &c->io);
    conn_write(c);
}

/* Read what there is; answer once a line (or the client's EOF) is in. */
static void conn_read(struct conn *c)
{
    for (;;) {
        size_t room = sizeof(c->in) - c->in_len;
        if (room == 0) {
            send_answer(c,
                        error_answer("request too long (at most %d bytes)", CONTROL_MAX_REQUEST));
            return;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, room);
        if (n > 0) {
            char *nl = memchr(c->in + c->in_len, '\n', (size_t)n);
            c->in_len += (size_t)n;
            if (nl != NULL) {
                send_answer(c, answer_request(c, (size_t)(nl - c->in)));
                return;
            }
            ev_timer_again(c->ctl->loop, &c->idle);
        } else if (n == 0 && c->in_len > 0) { /* no newline: EOF ends the request */
            send_answer(c, answer_request(c, c->in_len));
            return;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else if (n == 0 || errno != EINTR) {
            conn_free(c);
            return;
        }
    }
}

static void on_conn_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    if (c->out != NULL)
        conn_write(c);
    else
        conn_read(c);
}

/* ----------------------------------------------------------- serving */

void control_start(struct control *ctl, struct ev_loop *loop, const struct control_ops *ops,
                   void *arg)
{
    ctl->loop = loop;
    ctl->ops = ops;
    ctl->arg = arg;
    ev_io_init(&ctl->accept_io, on_accept, ctl->fd, EV_READ);
    ctl->accept_io.data = ctl;
    ev_init(&ctl->accept_retry, on_accept_retry);
    ctl->accept_retry.data = ctl;
    ev_io_start(loop, &ctl->accept_io);
}

void control_stop(struct control *ctl)
{
    if (ctl == NULL || ctl->loop == NULL)
        return;
    ev_io_stop(ctl->loop, &ctl->accept_io);
    ev_timer_stop(ctl->loop, &ctl->accept_retry);
    for (int i = 0; i < ctl->n_conns; i++) {
        ev_io_stop(ctl->loop, &ctl->conns[i]->io);
        ev_timer_stop(ctl->loop, &ctl->conns[i]->idle);
    }
    ctl->loop = NULL;
}

void control_close_inherited(struct control *ctl)
{
    if (ctl == NULL)
        return;
    close(ctl->fd);
    for (int i = 0; i < ctl->n_conns; i++)
        close(ctl->conns[i]->fd);
}

void control_close(struct control *ctl)
{
    if (ctl == NULL)
        return;
    control_stop(ctl);
    close(ctl->fd);
    if (unlink(ctl->path) < 0 && errno != ENOENT)
        co_warn("cannot remove the control socket (the next start replaces it)",
                "path=%s error=\"%s\"", ctl->path, strerror(errno));
    /* A "stop" client waits for its connection to close: left to the kernel,
     * which closes it as the process exits, so the client returns only once
     * we are gone (atexit handlers included). */
    for (int i = 0; i < ctl->n_conns; i++) {
        if (ctl->conns[i]->state != CONN_LINGERING)
            close(ctl->conns[i]->fd);
        free(ctl->conns[i]->out);
        free(ctl->conns[i]);
    }
    free(ctl->path);
    free(ctl);
}

/* ------------------------------------------------------------ client */

static void set_timeout(int fd, double timeout)
{
    struct timeval tv = { .tv_sec = (time_t)timeout };
    tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* The result of a failed connect() with errno E, and its message. */
static enum control_result connect_error(const char *path, int e, char *err, size_t errlen)
{
    if (e == ENOENT || e == ENOTDIR) {
        snprintf(err, errlen, "callorchd is not running (no control socket at %s)", path);
        return CONTROL_NOT_RUNNING;
    }
    if (e == ECONNREFUSED) {
        snprintf(err, errlen, "callorchd is not running (nothing listens on the control socket %s)",
                 path);
        return CONTROL_NOT_RUNNING;
    }
    if (e == EACCES || e == EPERM) {
        snprintf(err, errlen,
                 "permission denied on the control socket %s (run as root or as the "
                 "[daemon] user)",
                 path);
        return CONTROL_DENIED;
    }
    snprintf(err, errlen, "cannot connect to the control socket %s: %s", path,
             e == EAGAIN || e == EINPROGRESS ? "timed out" : strerror(e));
    return CONTROL_FAILED;
}

enum control_result control_connect(const char *path, double timeout, int *fd, char *err,
                                    size_t errlen)
{
    struct sockaddr_un sa;
    if (unix_addr(path, &sa, err, errlen) < 0)
        return CONTROL_FAILED;
    *fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return CONTROL_FAILED;
    }
    set_timeout(*fd, timeout);
    if (connect(*fd, (const struct sockaddr *)&sa, sizeof(sa)) == 0)
        return CONTROL_OK;
    int e = errno;
    close(*fd);
    *fd = -1;
    return connect_error(path, e, err, errlen);
}

static enum control_result send_all(int fd, const char *buf, size_t len, char *err, size_t errlen)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot send the request: %s",
                     errno == EAGAIN ? "timed out" : strerror(errno));
            return CONTROL_FAILED;
        }
        buf += n;
        len -= (size_t)n;
    }
    return CONTROL_OK;
}

/* Why a read of the answer ended (N is what read() returned). */
static void read_error(ssize_t n, char *err, size_t errlen)
{
    if (n == 0)
        snprintf(err, errlen, "callorchd closed the connection without answering");
    else if (errno == EAGAIN)
        snprintf(err, errlen, "no answer from callorchd in time");
    else
        snprintf(err, errlen, "cannot read the answer: %s", strerror(errno));
}

/* Read up to the first newline into a malloc'd string (without it). */
static enum control_result read_line(int fd, char **line, char *err, size_t errlen)
{
    struct strbuf b = { .max = CLIENT_MAX_ANSWER };
    char chunk[4096];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            read_error(n, err, errlen);
            break;
        }
        const char *nl = memchr(chunk, '\n', (size_t)n);
        size_t take = nl != NULL ? (size_t)(nl - chunk) : (size_t)n;
        if (strbuf_add(&b, chunk, take) < 0) {
            snprintf(err, errlen,
                     b.len + take > b.max ? "the answer is too long" : "out of memory");
            break;
        }
        if (nl != NULL) {
            *line = b.len > 0 ? strbuf_take(&b) : strdup("");
            strbuf_free(&b);
            if (*line != NULL)
                return CONTROL_OK;
            snprintf(err, errlen, "out of memory");
            return CONTROL_FAILED;
        }
    }
    strbuf_free(&b);
    return CONTROL_FAILED;
}

enum control_result control_exchange(int fd, const char *command, char **answer, char *err,
                                     size_t errlen)
{
    json_t *req = json_pack("{s:s}", "command", command);
    char *text = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (text == NULL) {
        snprintf(err, errlen, "out of memory");
        return CONTROL_FAILED;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* the terminating NUL becomes the line's end */
    enum control_result rc = send_all(fd, text, len + 1, err, errlen);
    free(text);
    return rc == CONTROL_OK ? read_line(fd, answer, err, errlen) : rc;
}

int control_wait_closed(int fd, double timeout)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int ms = timeout * 1000 > 2e9 ? 2000000000 : (int)(timeout * 1000);
    char c;
    for (;;) {
        int n = poll(&p, 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        ssize_t r = read(fd, &c, 1);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return 0;
        if (r < 0 && errno != EINTR && errno != EAGAIN)
            return -1;
    }
}
