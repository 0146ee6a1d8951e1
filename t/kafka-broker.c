/*
 * kafka-broker — a standalone Kafka-protocol broker for the integration
 * tests, the demo and the benchmarks, built from librdkafka's mock cluster.
 *
 * Owns: one mock cluster of N brokers listening on 127.0.0.1 (ports chosen
 * by the kernel), the topics named on the command line, and the signals
 * that stop it (SIGTERM, SIGINT) or fail it (SIGUSR1 all brokers down,
 * SIGUSR2 all up again).  The first line on stdout is the bootstrap list
 * "127.0.0.1:PORT[,127.0.0.1:PORT…]"; -o writes the same line to a file.
 *
 * Usage: kafka-broker [-b BROKERS] [-t TOPIC:PARTITIONS[:REPLICAS]]… [-o FILE] [-P]
 *
 * What a client in another process needs to know (checked with
 * t/kafka-check against librdkafka 2.0.2):
 *  - Producing (acks=all), consumer groups with the default assignor
 *    (JoinGroup/SyncGroup/Heartbeat/LeaveGroup), OffsetCommit and
 *    OffsetFetch all work over the loopback sockets; committed offsets
 *    survive the consumer and are fetched by the next client of the
 *    group; two members of one group split the partitions.  Nothing is
 *    persisted: the state lives as long as this process.
 *  - No special client property is required.  Those that matter:
 *      auto.offset.reset=earliest — a group without a committed offset
 *        otherwise starts at the end and misses what was produced before
 *        it joined;
 *      session.timeout.ms — unlike a real broker, the mock completes a
 *        rebalance after a member left (even with LeaveGroup) or died only
 *        when session.timeout.ms - 1 s has passed: 44 s with the default,
 *        during which the remaining members consume nothing.  Use 6000 or
 *        less when consumers come and go (respawns, reloads);
 *      reconnect.backoff.max.ms — after SIGUSR2 a client reconnects only
 *        when its backoff expires (up to 10 s by default); lower it for a
 *        quick recovery in chaos tests;
 *      topic.metadata.refresh.interval.ms — not needed, defaults work;
 *      allow.auto.create.topics — not needed: the mock creates an unknown
 *        topic (4 partitions) as soon as a producer asks for it, but a
 *        consumer subscribed to a missing topic just waits and receives
 *        nothing; create the topics up front with -t instead.
 *  - The first join of a new group takes about 3 s (the mock's
 *    group.initial.rebalance.delay.ms).
 *  - SIGUSR1 closes the listening sockets and the connections (clients see
 *    "Connection refused"); SIGUSR2 listens again on the same ports, with
 *    topics, messages and committed offsets intact.
 */
/* Standalone: not the project's config.h (which src/util/config.h would shadow). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define KAFKA_PROG "kafka-broker"
#include "kafka-common.h"

#define MAX_TOPICS 64

struct topic_spec {
    char name[250]; /* Kafka allows 249 characters */
    int partitions;
    int replicas;
};

static volatile sig_atomic_t got_stop;
static volatile sig_atomic_t got_down;
static volatile sig_atomic_t got_up;

/* Signal handler: only records which signal came; the main loop acts. */
static void on_signal(int sig)
{
    switch (sig) {
    case SIGTERM:
    case SIGINT: got_stop = 1; break;
    case SIGUSR1: got_down = 1; break;
    case SIGUSR2: got_up = 1; break;
    }
}

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: kafka-broker [-b BROKERS] [-t TOPIC:PARTITIONS[:REPLICAS]]... [-o FILE] [-P]\n"
            "  -b N       number of mock brokers (default 1)\n"
            "  -t SPEC    create topic, e.g. calls:4 (repeatable; replicas default 1)\n"
            "  -o FILE    also write the bootstrap list to FILE (atomically)\n"
            "  -P         exit when the parent process exits\n"
            "signals: TERM/INT stop, USR1 all brokers down, USR2 all brokers up\n");
}

/*
 * Parse "name:partitions[:replicas]" into SPEC or exit with a usage error.
 * Works on a copy: argv stays intact for ps and /proc/PID/cmdline.
 */
static void parse_topic(const char *arg, struct topic_spec *spec)
{
    const char *colon = strchr(arg, ':');
    char num[32];
    char *colon2;
    size_t len = colon != NULL ? (size_t)(colon - arg) : 0;

    if (len == 0 || len >= sizeof spec->name || strlen(colon + 1) >= sizeof num) {
        fprintf(stderr, "kafka-broker: bad topic '%s' (want NAME:PARTITIONS[:REPLICAS])\n", arg);
        exit(2);
    }
    memcpy(spec->name, arg, len);
    spec->name[len] = '\0';
    strcpy(num, colon + 1);
    colon2 = strchr(num, ':');
    if (colon2 != NULL)
        *colon2 = '\0';
    spec->partitions = parse_count(num, "partition count", 10000);
    spec->replicas = colon2 != NULL ? parse_count(colon2 + 1, "replication factor", 10000) : 1;
}

/*
 * Write LINE to PATH via a temporary file and rename(), so a test polling
 * for PATH never reads a half-written address.
 */
static int write_file_atomically(const char *path, const char *line)
{
    size_t len = strlen(path) + 16;
    char *tmp = malloc(len);
    FILE *fp;
    int ok;

    if (tmp == NULL)
        return -1;
    snprintf(tmp, len, "%s.tmp%ld", path, (long)getpid());
    fp = fopen(tmp, "w");
    if (fp == NULL) {
        free(tmp);
        return -1;
    }
    ok = fprintf(fp, "%s\n", line) >= 0;
    ok = (fclose(fp) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

/*
 * librdkafka log callback: the hosting handle has no bootstrap servers on
 * purpose, so drop its one warning about that and pass everything else on.
 */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers") != NULL)
        return;
    fprintf(stderr, "kafka-broker: %d %s: %s\n", level, fac, buf);
}

/* Set every broker of the cluster up or down; report failures, keep going. */
static void set_all_brokers(rd_kafka_mock_cluster_t *mc, int brokers, int up)
{
    for (int id = 1; id <= brokers; id++) {
        rd_kafka_resp_err_t err =
            up ? rd_kafka_mock_broker_set_up(mc, id) : rd_kafka_mock_broker_set_down(mc, id);
        if (err)
            fprintf(stderr, "kafka-broker: broker %d %s: %s\n", id, up ? "up" : "down",
                    rd_kafka_err2str(err));
    }
    fprintf(stderr, "kafka-broker: all %d broker(s) %s\n", brokers, up ? "up" : "down");
}

int main(int argc, char **argv)
{
    struct topic_spec topics[MAX_TOPICS];
    int ntopics = 0;
    int brokers = 1;
    const char *outfile = NULL;
    int die_with_parent = 0;
    char errstr[512];
    struct sigaction sa;
    sigset_t block, orig;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    const char *bootstraps;
    int opt;

    while ((opt = getopt(argc, argv, "b:t:o:Ph")) != -1) {
        switch (opt) {
        case 'b': brokers = parse_count(optarg, "broker count", 10000); break;
        case 't':
            if (ntopics == MAX_TOPICS) {
                fprintf(stderr, "kafka-broker: at most %d topics\n", MAX_TOPICS);
                return 2;
            }
            parse_topic(optarg, &topics[ntopics++]);
            break;
        case 'o': outfile = optarg; break;
        case 'P': die_with_parent = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    for (int i = 0; i < ntopics; i++) {
        if (topics[i].replicas > brokers) {
            fprintf(stderr, "kafka-broker: topic %s: replication factor %d > %d broker(s)\n",
                    topics[i].name, topics[i].replicas, brokers);
            return 2;
        }
    }

    /*
     * A test harness that is SIGKILLed cannot clean up; -P makes sure the
     * broker does not outlive it.  Checking getppid() afterwards closes the
     * race where the parent died before prctl().
     */
    if (die_with_parent) {
        pid_t parent = getppid();
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
            return 1;
    }

    /*
     * Block the signals before librdkafka starts its threads: they inherit
     * the mask, so only the main thread ever receives them, and the loop
     * below can wait for them with sigsuspend() without a lost wake-up.
     */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    sigprocmask(SIG_BLOCK, &block, &orig);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The handle only hosts the cluster; it never connects anywhere itself. */
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "client.id", "kafka-broker", errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka-broker: %s\n", errstr);
        return 1;
    }
    rd_kafka_conf_set_log_cb(conf, on_log);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        fprintf(stderr, "kafka-broker: rd_kafka_new: %s\n", errstr);
        return 1;
    }
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        fprintf(stderr, "kafka-broker: cannot create mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (int i = 0; i < ntopics; i++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
            mc, topics[i].name, topics[i].partitions, topics[i].replicas);
        if (err) {
            fprintf(stderr, "kafka-broker: create topic %s: %s\n", topics[i].name,
                    rd_kafka_err2str(err));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }

    bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (outfile != NULL && write_file_atomically(outfile, bootstraps) != 0) {
        fprintf(stderr, "kafka-broker: cannot write %s: %s\n", outfile, strerror(errno));
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 1;
    }
    printf("%s\n", bootstraps);
    fflush(stdout);

    /* Clear each flag before acting on it, so a signal during the action is not lost. */
    while (!got_stop) {
        sigsuspend(&orig);
        if (got_down) {
            got_down = 0;
            set_all_brokers(mc, brokers, 0);
        }
        if (got_up) {
            got_up = 0;
            set_all_brokers(mc, brokers, 1);
        }
    }

    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    if (outfile != NULL)
        unlink(outfile);
    return 0;
}
