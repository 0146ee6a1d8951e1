/*
 * provider_sim.c — main() of callorch-provider-sim: options, the listening
 * socket, the loop, signals.  The provider itself is sim.c.
 *
 * Runs in the foreground, logs to stderr with role "sim", stops on SIGTERM
 * or SIGINT (exit 0; pending webhooks are not sent).  Every knob is a
 * command-line option; there is no config file.  This is the only place
 * that decides the process exits.
 */
#include <auto-config.h>

#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "master/listen.h"
#include "net/curl_ev.h"
#include "net/http_server.h"
#include "sim/sim.h"
#include "util/config.h"
#include "util/log.h"

#define EXIT_USAGE 2
#define MAX_FORCED_OPTS 1000 /* --outcome options; more through /control/outcomes */

struct options {
    const char *listen;
    struct sim_opts sim;
    struct sim_forced forced[MAX_FORCED_OPTS];
    int max_connections;
    enum co_log_level log_level;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: callorch-provider-sim --secret SECRET [OPTION]...\n"
            "Simulates callorch's AI voice provider (callorch DESIGN section 5) over HTTP:\n"
            "POST /api/v1/calls answers 202 {\"callId\",\"status\":\"INITIATED\"}, and after a\n"
            "delay the outcome is POSTed to the call's webhookUrl, signed as Standard\n"
            "Webhooks.  GET /stats reports counters as JSON, POST /stats/reset zeroes them,\n"
            "GET /healthz answers 200.  Runs in the foreground; SIGTERM or SIGINT stops it.\n"
            "\n"
            "A start carrying \"Idempotency-Key: <reference>\" for a reference already\n"
            "started is answered 202 with the same callId and starts nothing (a key that\n"
            "differs from reference: 400).  GET /api/v1/calls?reference=REF answers 200\n"
            "{\"callId\",\"reference\",\"status\"} (INITIATED, IN_PROGRESS, then the outcome)\n"
            "or 404; callorchd's [provider] status_url is then\n"
            "http://HOST:PORT/api/v1/calls?reference={reference}.  PUT\n"
            "/control/outcomes/{e164} {\"status\":S[,\"disposition\":\"OPT_OUT\"]} forces the\n"
            "outcome of calls to a number, DELETE clears it, GET /control/outcomes lists\n"
            "them.  Lookups and /control need the --api-key bearer key when it is set.\n"
            "\n"
            "  -l, --listen HOST:PORT     address to serve on (default 127.0.0.1:9090;\n"
            "                             [::1]:PORT for IPv6)\n"
            "  -s, --secret SECRET        callorchd's [provider] callback_secret: whsec_<base64>\n"
            "                             (signs with the first of two comma-separated keys);\n"
            "                             with --callback-auth api-key, the token (required)\n"
            "  -k, --api-key KEY          require \"Authorization: Bearer KEY\" on initiations\n"
            "                             (401 otherwise; default: no check)\n"
            "      --callback-auth MODE   hmac (default): webhook-id, webhook-timestamp and\n"
            "                             webhook-signature headers; api-key: X-Api-Key: SECRET\n"
            "  -d, --delay MIN-MAX        time from initiation to webhook, uniformly random\n"
            "                             (default 10s-30s); units ms, s, m, h; MIN without a\n"
            "                             unit takes MAX's (\"0-50ms\"); one value: fixed\n"
            "      --success-rate P       share of calls that end COMPLETED (default 0.9); the\n"
            "                             others end FAILED, BUSY or NO_ANSWER, a third each\n"
            "      --fail-5xx P           share of initiations answered 503 (default 0)\n"
            "      --fail-429 P           share answered 429 with Retry-After: 1 (default 0)\n"
            "      --hang P               share never answered; the connection stays open\n"
            "                             until the client closes it (default 0)\n"
            "      --duplicate P          share of calls whose webhook is sent twice: after the\n"
            "                             first is delivered, the same request again (same\n"
            "                             webhook-id, timestamp, signature and body) (default 0)\n"
            "      --early P              share of calls whose webhook is sent at once and\n"
            "                             delivered before the 202 is answered (default 0)\n"
            "      --drop P               share of calls that never send a webhook (default 0);\n"
            "                             wins over --early and --duplicate\n"
            "                             Shares are probabilities 0..1 drawn per initiation;\n"
            "                             hang, then 5xx, then 429 decide refusals, in order.\n"
            "      --lose-answer P        share of started calls whose initiation is never\n"
            "                             answered: the call runs and sends its webhook, the\n"
            "                             connection stays open until the client gives up\n"
            "                             (default 0)\n"
            "      --slow-answer P        share of started calls answered 202 only after\n"
            "                             --slow-answer-delay (default 0)\n"
            "      --slow-answer-delay D  (default 30s, beyond callorchd's [provider] timeout)\n"
            "      --bad-call-id P        share of started calls answered 202 without a valid\n"
            "                             callId: missing, empty, 299 characters, a newline,\n"
            "                             a number, or not JSON, in turn (default 0)\n"
            "                             Lost, then slow, then bad-callId decide, in order.\n"
            "      --outcomes LIST        shares of all started calls that end VOICEMAIL,\n"
            "                             REJECTED or INVALID_NUMBER: STATUS:P[,STATUS:P]...;\n"
            "                             taken after --success-rate's COMPLETED, FAILED, BUSY\n"
            "                             and NO_ANSWER share what is left (default none)\n"
            "      --opt-out P            share of COMPLETED calls whose webhook carries\n"
            "                             \"disposition\":\"OPT_OUT\" (default 0)\n"
            "      --outcome NUMBER=STATUS[,opt-out]\n"
            "                             every call to NUMBER ends STATUS (any of the seven),\n"
            "                             with OPT_OUT if asked; repeatable (up to 1000)\n"
            "      --max-records N        references (and call ids) remembered for replays,\n"
            "                             lookups and the counters below; the oldest not in\n"
            "                             progress are forgotten beyond N (default 100000)\n"
            "      --seed N               seed of the random draws, for reproducible runs\n"
            "                             (default: from time and pid)\n"
            "      --webhook-retries N    extra attempts of a webhook after a connection\n"
            "                             error, timeout, 5xx or 429, backoff 0.25s doubling\n"
            "                             (default 3); a 4xx is not retried\n"
            "      --webhook-timeout D    timeout of one webhook request (default 10s)\n"
            "      --max-connections N    simultaneous client connections (default 4096)\n"
            "      --log-level LEVEL      error, warn, info (default) or debug\n"
            "  -h, --help                 print this help and exit\n"
            "  -V, --version              print the version and exit\n"
            "\n"
            "GET /stats: started (initiations accepted), rejected {5xx, 429, hang},\n"
            "unauthorized, badRequests, badReferences (accepted, but not \"<uuid>:<attempt>\"),\n"
            "inProgress (accepted and not yet ended: a call ends when its webhook is first\n"
            "sent, or would be for --drop), maxInProgress, maxPerPhone (most in progress at\n"
            "once for one \"to\"), webhooksSent (POSTs answered 2xx, replays included),\n"
            "webhookRetries, webhookFailures (deliveries given up), duplicateStarts\n"
            "(initiations of a reference already accepted before: a caller bug), dropped,\n"
            "early, duplicated, byStatus (calls that sent a webhook, by outcome), optOuts,\n"
            "idempotentReplays (starts answered from the reference table),\n"
            "startedWhileLive (starts of a call id, the reference before its last ':',\n"
            "while a call of it was in progress), startedAfterCompleted (starts of a\n"
            "call id after a call of it ended COMPLETED), lostAnswers, slowAnswers,\n"
            "badCallIds, statusLookups, recordsEvicted (since start).\n"
            "POST /stats/reset zeroes the counters; inProgress stays, the maxima restart\n"
            "from it, and references accepted before still count as started.\n"
            "\n"
            "Exit status: 0 after SIGTERM or SIGINT, 1 on a setup error (e.g. the address\n"
            "is in use), 2 on a usage error.\n");
}

enum {
    OPT_AUTH = 256,
    OPT_SUCCESS,
    OPT_5XX,
    OPT_429,
    OPT_HANG,
    OPT_DUP,
    OPT_EARLY,
    OPT_DROP,
    OPT_SEED,
    OPT_RETRIES,
    OPT_WTIMEOUT,
    OPT_MAXCONN,
    OPT_LOGLEVEL,
    OPT_LOSE,
    OPT_SLOW,
    OPT_SLOW_DELAY,
    OPT_BAD_ID,
    OPT_OUTCOMES,
    OPT_OPT_OUT,
    OPT_OUTCOME,
    OPT_MAX_RECORDS
};

static const struct option long_opts[] = {
    { "listen", required_argument, NULL, 'l' },
    { "secret", required_argument, NULL, 's' },
    { "api-key", required_argument, NULL, 'k' },
    { "callback-auth", required_argument, NULL, OPT_AUTH },
    { "delay", required_argument, NULL, 'd' },
    { "success-rate", required_argument, NULL, OPT_SUCCESS },
    { "fail-5xx", required_argument, NULL, OPT_5XX },
    { "fail-429", required_argument, NULL, OPT_429 },
    { "hang", required_argument, NULL, OPT_HANG },
    { "duplicate", required_argument, NULL, OPT_DUP },
    { "early", required_argument, NULL, OPT_EARLY },
    { "drop", required_argument, NULL, OPT_DROP },
    { "lose-answer", required_argument, NULL, OPT_LOSE },
    { "slow-answer", required_argument, NULL, OPT_SLOW },
    { "slow-answer-delay", required_argument, NULL, OPT_SLOW_DELAY },
    { "bad-call-id", required_argument, NULL, OPT_BAD_ID },
    { "outcomes", required_argument, NULL, OPT_OUTCOMES },
    { "opt-out", required_argument, NULL, OPT_OPT_OUT },
    { "outcome", required_argument, NULL, OPT_OUTCOME },
    { "max-records", required_argument, NULL, OPT_MAX_RECORDS },
    { "seed", required_argument, NULL, OPT_SEED },
    { "webhook-retries", required_argument, NULL, OPT_RETRIES },
    { "webhook-timeout", required_argument, NULL, OPT_WTIMEOUT },
    { "max-connections", required_argument, NULL, OPT_MAXCONN },
    { "log-level", required_argument, NULL, OPT_LOGLEVEL },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
};

/* ----------------------------------------------------------- parsing ---- */

static int bad(const char *opt, const char *arg, const char *why)
{
    fprintf(stderr, "callorch-provider-sim: --%s \"%s\": %s\n", opt, arg, why);
    return -1;
}

static int parse_share(const char *opt, const char *arg, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end != '\0' || !(v >= 0.0 && v <= 1.0))
        return bad(opt, arg, "a number from 0 to 1 is required");
    *out = v;
    return 0;
}

static int parse_ull(const char *opt, const char *arg, unsigned long long max,
                     unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno || end == arg || *end != '\0' || arg[0] == '-' || v > max)
        return bad(opt, arg, "a non-negative integer in range is required");
    *out = v;
    return 0;
}

static int parse_int_opt(const char *opt, const char *arg, int min, int max, int *out)
{
    unsigned long long v;
    if (parse_ull(opt, arg, (unsigned long long)max, &v) < 0)
        return -1;
    if ((long long)v < min)
        return bad(opt, arg, "too small");
    *out = (int)v;
    return 0;
}

static int parse_level(const char *arg, enum co_log_level *out)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    for (int i = 0; i < 4; i++)
        if (strcmp(arg, names[i]) == 0) {
            *out = (enum co_log_level)i;
            return 0;
        }
    return bad("log-level", arg, "use error, warn, info or debug");
}

static int parse_auth(const char *arg, enum sim_callback_auth *out)
{
    if (strcmp(arg, "hmac") == 0)
        *out = SIM_AUTH_HMAC;
    else if (strcmp(arg, "api-key") == 0)
        *out = SIM_AUTH_API_KEY;
    else
        return bad("callback-auth", arg, "use hmac or api-key");
    return 0;
}

/* One option; 0, or -1 after printing why. */
static int parse_one(int c, const char *arg, struct options *o)
{
    struct sim_opts *s = &o->sim;
    char err[256];
    unsigned long long u;

    switch (c) {
    case 'l': o->listen = arg; return 0;
    case 's': s->secret = arg; return 0;
    case 'k': s->api_key = arg; return 0;
    case OPT_AUTH: return parse_auth(arg, &s->callback_auth);
    case 'd':
        if (sim_parse_delay(arg, &s->delay_min, &s->delay_max, err, sizeof(err)) < 0)
            return bad("delay", arg, err);
        return 0;
    case OPT_SUCCESS: return parse_share("success-rate", arg, &s->success_rate);
    case OPT_5XX: return parse_share("fail-5xx", arg, &s->fail_5xx);
    case OPT_429: return parse_share("fail-429", arg, &s->fail_429);
    case OPT_HANG: return parse_share("hang", arg, &s->hang);
    case OPT_DUP: return parse_share("duplicate", arg, &s->duplicate);
    case OPT_EARLY: return parse_share("early", arg, &s->early);
    case OPT_DROP: return parse_share("drop", arg, &s->drop);
    case OPT_LOSE: return parse_share("lose-answer", arg, &s->lose_answer);
    case OPT_SLOW: return parse_share("slow-answer", arg, &s->slow_answer);
    case OPT_SLOW_DELAY:
        if (co_parse_duration(arg, &s->slow_delay, err, sizeof(err)) < 0)
            return bad("slow-answer-delay", arg, err);
        if (s->slow_delay <= 0)
            return bad("slow-answer-delay", arg, "must be more than 0");
        return 0;
    case OPT_BAD_ID: return parse_share("bad-call-id", arg, &s->bad_call_id);
    case OPT_OUTCOMES:
        if (sim_parse_shares(arg, s->share, err, sizeof(err)) < 0)
            return bad("outcomes", arg, err);
        return 0;
    case OPT_OPT_OUT: return parse_share("opt-out", arg, &s->opt_out);
    case OPT_OUTCOME:
        if (s->n_forced >= MAX_FORCED_OPTS)
            return bad("outcome", arg, "at most 1000 --outcome options; use /control/outcomes");
        if (sim_parse_forced(arg, &o->forced[s->n_forced], err, sizeof(err)) < 0)
            return bad("outcome", arg, err);
        s->n_forced++;
        return 0;
    case OPT_MAX_RECORDS:
        if (parse_ull("max-records", arg, 100000000ULL, &u) < 0)
            return -1;
        if (u < 1)
            return bad("max-records", arg, "must be at least 1");
        s->max_records = (size_t)u;
        return 0;
    case OPT_SEED:
        if (parse_ull("seed", arg, ~0ULL, &u) < 0)
            return -1;
        s->seed = u;
        s->have_seed = 1;
        return 0;
    case OPT_RETRIES: return parse_int_opt("webhook-retries", arg, 0, 100, &s->webhook_retries);
    case OPT_WTIMEOUT:
        if (co_parse_duration(arg, &s->webhook_timeout, err, sizeof(err)) < 0)
            return bad("webhook-timeout", arg, err);
        if (s->webhook_timeout <= 0)
            return bad("webhook-timeout", arg, "must be more than 0");
        return 0;
    case OPT_MAXCONN: return parse_int_opt("max-connections", arg, 1, 1000000, &o->max_connections);
    case OPT_LOGLEVEL: return parse_level(arg, &o->log_level);
    default: return -1;
    }
}

static void defaults(struct options *o)
{
    memset(o, 0, sizeof(*o));
    o->listen = "127.0.0.1:9090";
    o->sim.callback_auth = SIM_AUTH_HMAC;
    o->sim.delay_min = 10.0;
    o->sim.delay_max = 30.0;
    o->sim.success_rate = 0.9;
    o->sim.webhook_retries = 3;
    o->sim.webhook_timeout = 10.0;
    o->sim.slow_delay = 30.0;
    o->sim.max_records = 100000;
    o->sim.forced = o->forced;
    o->max_connections = 4096;
    o->log_level = CO_LOG_INFO;
}

/* Returns -1 to go on, or an exit status. */
static int parse_options(int argc, char **argv, struct options *o)
{
    int c;

    defaults(o);
    while ((c = getopt_long(argc, argv, "l:s:k:d:hV", long_opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        if (c == 'V') {
            printf("callorch-provider-sim %s\n", PACKAGE_VERSION);
            return 0;
        }
        if (c == '?' || parse_one(c, optarg, o) < 0) {
            fprintf(stderr, "Try 'callorch-provider-sim --help'.\n");
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "callorch-provider-sim: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    double sum = o->sim.success_rate;
    for (int i = SIM_VOICEMAIL; i < SIM_OUTCOME_N; i++)
        sum += o->sim.share[i];
    if (sum > 1.0 + 1e-9) {
        fprintf(stderr,
                "callorch-provider-sim: --success-rate %g plus the --outcomes shares "
                "is %g, more than 1\n",
                o->sim.success_rate, sum);
        return EXIT_USAGE;
    }
    if (o->sim.secret == NULL) {
        fprintf(stderr, "callorch-provider-sim: --secret is required (callorchd's "
                        "[provider] callback_secret)\n");
        return EXIT_USAGE;
    }
    return -1;
}

/* ------------------------------------------------------------ socket ---- */

/* Bind HOST:PORT through listen.c, the daemon's own binder. */
static int open_listener(const char *addr, int *fd, char *err, size_t errlen)
{
    static struct co_config cfg; /* only listen[0] is read */
    struct listen_set ls;
    const char *colon = strrchr(addr, ':');
    const char *host = addr;
    size_t hlen = colon ? (size_t)(colon - addr) : 0;

    if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    if (colon == NULL || hlen == 0 || hlen >= sizeof(cfg.listen[0].host) ||
        strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof(cfg.listen[0].port) ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
        snprintf(err, errlen, "--listen \"%s\": HOST:PORT is required", addr);
        return -1;
    }
    memcpy(cfg.listen[0].host, host, hlen);
    cfg.listen[0].host[hlen] = '\0';
    snprintf(cfg.listen[0].port, sizeof(cfg.listen[0].port), "%s", colon + 1);
    cfg.n_listen = 1;
    cfg.workers = 1;
    if (listen_open(&cfg, &ls, err, errlen) < 0)
        return -1;
    *fd = ls.addr[0].fds[0];
    return 0;
}

/* The address FD is bound to, for the log (the port may have been 0). */
static void bound_name(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[NI_MAXHOST], port[NI_MAXSERV];

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, len, "?");
        return;
    }
    snprintf(out, len, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
}

/* Thousands of calls in flight hold as many sockets: raise the soft
 * descriptor limit to the hard one. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---------------------------------------------------------------- run ---- */

static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    co_info("stopping", "signal=%s", w->signum == SIGTERM ? "TERM" : "INT");
    ev_break(loop, EVBREAK_ALL);
}

/* Serve on FD until a stop signal; returns the exit status. */
static int serve(const struct options *o, int fd)
{
    struct ev_loop *loop = EV_DEFAULT;
    char err[512], name[128];
    ev_signal sterm, sint;

    struct sim *sim = sim_new(loop, &o->sim, err, sizeof(err));
    if (sim == NULL) {
        co_error("cannot start", "error=%s", CO_LOG_Q(err));
        return 1;
    }
    struct http_server_opts hopts = { .max_connections = o->max_connections };
    struct http_server *srv = http_server_new(loop, &fd, 1, &hopts, sim_handle, sim);
    if (srv == NULL) {
        sim_free(sim);
        return 1;
    }
    ev_signal_init(&sterm, stop_cb, SIGTERM);
    ev_signal_init(&sint, stop_cb, SIGINT);
    ev_signal_start(loop, &sterm);
    ev_signal_start(loop, &sint);
    bound_name(fd, name, sizeof(name));
    co_info("callorch-provider-sim ready",
            "version=%s listen=%s delay_s=%.3f-%.3f success_rate=%g fail_5xx=%g fail_429=%g "
            "hang=%g duplicate=%g early=%g drop=%g lose_answer=%g slow_answer=%g "
            "bad_call_id=%g opt_out=%g forced=%zu callback_auth=%s api_key=%s",
            PACKAGE_VERSION, name, o->sim.delay_min, o->sim.delay_max, o->sim.success_rate,
            o->sim.fail_5xx, o->sim.fail_429, o->sim.hang, o->sim.duplicate, o->sim.early,
            o->sim.drop, o->sim.lose_answer, o->sim.slow_answer, o->sim.bad_call_id, o->sim.opt_out,
            o->sim.n_forced, o->sim.callback_auth == SIM_AUTH_HMAC ? "hmac" : "api-key",
            o->sim.api_key ? "set" : "none");
    ev_run(loop, 0);
    ev_signal_stop(loop, &sterm);
    ev_signal_stop(loop, &sint);
    http_server_free(srv);
    sim_free(sim);
    co_info("callorch-provider-sim stopped", NULL);
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    char err[512];
    int fd;

    int rc = parse_options(argc, argv, &o);
    if (rc >= 0)
        return rc;
    co_log_open("stderr", o.log_level);
    co_log_set_role("sim");
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (curl_ev_global_init() < 0)
        return 1;
    if (open_listener(o.listen, &fd, err, sizeof(err)) < 0) {
        co_error("cannot start", "error=%s", CO_LOG_Q(err));
        return 1;
    }
    rc = serve(&o, fd);
    close(fd);
    curl_global_cleanup();
    return rc;
}
