/*
 * kafka-check — proves a Kafka broker (normally t/kafka-broker, in another
 * process) works for what callorchd needs: producing, consuming in a
 * consumer group, and committing offsets that outlive the consumer.
 *
 * Usage: kafka-check -b BROKERS [-t TOPIC] [-n COUNT] [-g GROUP] [-k TAG]
 *                    [-w SECONDS] [-m all|produce|consume|verify] [-X PROPERTY=VALUE]...
 *
 *   produce  send COUNT messages "TAG:i" and wait until all are delivered;
 *   consume  join GROUP (from the earliest offset), read until all COUNT
 *            messages of TAG were seen, commit synchronously, leave;
 *   verify   from a fresh handle in GROUP (it does not join), fetch the
 *            committed offsets of every partition of TOPIC from the broker
 *            and check that they equal the high watermarks;
 *   all      (default) produce, consume, verify.
 *
 * -X sets a librdkafka property on every client (e.g. -X debug=cgrp).
 * Messages of other tags in the topic are skipped, so the check can share a
 * topic with other tests.  Exit status: 0 success, 1 failure (or timeout
 * after -w seconds, default 30), 2 usage error.  Progress goes to stderr.
 */
/* Standalone: not the project's config.h (which src/util/config.h would shadow). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define KAFKA_PROG "kafka-check"
#include "kafka-common.h"

#define MAX_PROPS 64

struct opts {
    const char *brokers;
    const char *topic;
    int count;
    const char *group;
    const char *tag;
    int wait_s;
    const char *mode;
    char *props[MAX_PROPS]; /* -X name=value, passed to every client */
    int nprops;
};

static int delivered_ok;
static int delivered_failed;

static void usage(FILE *fp)
{
    fprintf(
        fp,
        "usage: kafka-check -b BROKERS [-t TOPIC] [-n COUNT] [-g GROUP] [-k TAG]\n"
        "                   [-w SECONDS] [-m all|produce|consume|verify] [-X PROPERTY=VALUE]...\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Set one property or report it; returns 0 or -1. */
static int set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka-check: %s=%s: %s\n", name, value, errstr);
        return -1;
    }
    return 0;
}

/* librdkafka error callback: report and let the deadline decide. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    fprintf(stderr, "kafka-check: %s: %s: %s\n", rd_kafka_name(rk),
            rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* Delivery report callback: count successes and failures. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    if (m->err) {
        if (delivered_failed++ == 0)
            fprintf(stderr, "kafka-check: delivery failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        delivered_ok++;
    }
}

/* A configuration with the settings every client here shares. */
static rd_kafka_conf_t *base_conf(const struct opts *o)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set_error_cb(conf, on_error);
    if (set(conf, "bootstrap.servers", o->brokers) != 0 ||
        set(conf, "client.id", "kafka-check") != 0 ||
        /* Recover quickly after the broker comes back (chaos tests). */
        set(conf, "reconnect.backoff.max.ms", "1000") != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (int i = 0; i < o->nprops; i++) {
        char *eq = strchr(o->props[i], '=');
        int bad;

        *eq = '\0';
        bad = set(conf, o->props[i], eq + 1);
        *eq = '=';
        if (bad) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    return conf;
}

/* Produce COUNT messages "TAG:i"; returns 0 when every one was delivered. */
static int do_produce(const struct opts *o)
{
    char errstr[512], buf[256], tmo[32];
    rd_kafka_conf_t *conf = base_conf(o);
    rd_kafka_t *rk;
    double t0 = now_s();

    if (conf == NULL)
        return -1;
    /* Give up on a message at the deadline, so a dead broker fails the check. */
    snprintf(tmo, sizeof tmo, "%d", o->wait_s * 1000);
    if (set(conf, "message.timeout.ms", tmo) != 0 || set(conf, "acks", "all") != 0 ||
        set(conf, "linger.ms", "5") != 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        fprintf(stderr, "kafka-check: producer: %s\n", errstr);
        return -1;
    }
    for (int i = 0; i < o->count; i++) {
        int len = snprintf(buf, sizeof buf, "%s:%d", o->tag, i);
        rd_kafka_resp_err_t err;

        for (;;) {
            err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(o->topic),
                                    RD_KAFKA_V_VALUE(buf, (size_t)len),
                                    RD_KAFKA_V_KEY(buf, (size_t)len),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                break;
            rd_kafka_poll(rk, 100);
        }
        if (err) {
            fprintf(stderr, "kafka-check: produce: %s\n", rd_kafka_err2str(err));
            rd_kafka_destroy(rk);
            return -1;
        }
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, o->wait_s * 1000 + 1000);
    rd_kafka_destroy(rk);
    fprintf(stderr, "kafka-check: produced %d/%d message(s) to %s in %.2fs\n", delivered_ok,
            o->count, o->topic, now_s() - t0);
    return delivered_ok == o->count && delivered_failed == 0 ? 0 : -1;
}

/*
 * Print the committed offset of every partition in PARTS and compare it
 * with the high watermark; returns 0 when all match.  PARTS must hold the
 * result of rd_kafka_committed().
 */
static int compare_with_watermarks(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                                   int wait_ms)
{
    int bad = 0;

    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi, wait_ms);

        if (err || p->err) {
            fprintf(stderr, "kafka-check: %s[%" PRId32 "]: %s\n", p->topic, p->partition,
                    rd_kafka_err2str(err ? err : p->err));
            bad = 1;
            continue;
        }
        fprintf(stderr, "kafka-check: %s[%" PRId32 "] committed %" PRId64 " high %" PRId64 "\n",
                p->topic, p->partition, p->offset, hi);
        /* A partition never read has no commit (-1001); fine only if empty. */
        if (p->offset != hi && !(p->offset == RD_KAFKA_OFFSET_INVALID && hi == 0))
            bad = 1;
    }
    return bad ? -1 : 0;
}

/*
 * Join the group, read until every message of TAG was seen, commit
 * synchronously and leave; returns 0 on success.
 */
static int do_consume(const struct opts *o)
{
    char errstr[512];
    rd_kafka_conf_t *conf = base_conf(o);
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *sub;
    rd_kafka_resp_err_t err;
    unsigned char *seen = calloc((size_t)o->count, 1);
    size_t taglen = strlen(o->tag);
    int nseen = 0, others = 0, dups = 0, rc = -1;
    double t0 = now_s(), deadline = t0 + o->wait_s, t_first = 0;

    if (conf == NULL || seen == NULL) {
        free(seen);
        if (conf != NULL)
            rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* Commit by hand, only after everything was read: that is what is checked. */
    if (set(conf, "group.id", o->group) != 0 || set(conf, "auto.offset.reset", "earliest") != 0 ||
        set(conf, "enable.auto.commit", "false") != 0) {
        rd_kafka_conf_destroy(conf);
        free(seen);
        return -1;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        fprintf(stderr, "kafka-check: consumer: %s\n", errstr);
        free(seen);
        return -1;
    }
    rd_kafka_poll_set_consumer(rk);
    sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, o->topic, RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        fprintf(stderr, "kafka-check: subscribe: %s\n", rd_kafka_err2str(err));
        goto out;
    }

    while (nseen < o->count && now_s() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        long idx;
        char *end;

        if (m == NULL)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "kafka-check: consume: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        if (t_first == 0)
            t_first = now_s();
        /* Values are "TAG:i"; anything else belongs to someone else. */
        if (m->len > taglen + 1 && m->len < taglen + 24 &&
            memcmp(m->payload, o->tag, taglen) == 0 && ((char *)m->payload)[taglen] == ':') {
            char num[24];
            memcpy(num, (char *)m->payload + taglen + 1, m->len - taglen - 1);
            num[m->len - taglen - 1] = '\0';
            idx = strtol(num, &end, 10);
            if (*end == '\0' && idx >= 0 && idx < o->count) {
                if (seen[idx])
                    dups++;
                else
                    nseen++;
                seen[idx] = 1;
            } else {
                others++;
            }
        } else {
            others++;
        }
        rd_kafka_message_destroy(m);
    }
    fprintf(stderr,
            "kafka-check: consumed %d/%d message(s) in group %s (%d duplicate(s), %d other(s)); "
            "first after %.2fs, all after %.2fs\n",
            nseen, o->count, o->group, dups, others, t_first > 0 ? t_first - t0 : -1.0,
            now_s() - t0);
    if (nseen != o->count)
        goto out;

    /* Synchronous commit of the current positions of the whole assignment. */
    err = rd_kafka_commit(rk, NULL, 0);
    if (err) {
        fprintf(stderr, "kafka-check: commit: %s\n", rd_kafka_err2str(err));
        goto out;
    }
    rc = 0;

out:
    err = rd_kafka_consumer_close(rk);
    if (err) {
        fprintf(stderr, "kafka-check: close: %s\n", rd_kafka_err2str(err));
        rc = -1;
    }
    rd_kafka_destroy(rk);
    free(seen);
    return rc;
}

/*
 * From a fresh handle in the group (it does not join), fetch the committed
 * offsets of every partition of the topic and compare them with the high
 * watermarks; returns 0 when the previous consumer's commit is there.
 */
static int do_verify(const struct opts *o)
{
    char errstr[512];
    rd_kafka_conf_t *conf = base_conf(o);
    rd_kafka_t *rk;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt;
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_resp_err_t err;
    int rc = -1;

    if (conf == NULL)
        return -1;
    if (set(conf, "group.id", o->group) != 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        fprintf(stderr, "kafka-check: consumer: %s\n", errstr);
        return -1;
    }
    rkt = rd_kafka_topic_new(rk, o->topic, NULL);
    err = rd_kafka_metadata(rk, 0, rkt, &md, o->wait_s * 1000);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "kafka-check: metadata for %s: %s\n", o->topic,
                rd_kafka_err2str(err                  ? err
                                 : md->topic_cnt != 1 ? RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC
                                                      : md->topics[0].err));
        goto out;
    }
    parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, o->topic, md->topics[0].partitions[i].id);
    err = rd_kafka_committed(rk, parts, o->wait_s * 1000);
    if (err)
        fprintf(stderr, "kafka-check: committed: %s\n", rd_kafka_err2str(err));
    else
        rc = compare_with_watermarks(rk, parts, o->wait_s * 1000);
    rd_kafka_topic_partition_list_destroy(parts);
    fprintf(stderr, "kafka-check: committed offsets of group %s %s\n", o->group,
            rc == 0 ? "match the high watermarks" : "do NOT match");

out:
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o = { .topic = "calls", .count = 100, .wait_s = 30, .mode = "all" };
    char tagbuf[64], groupbuf[128];
    int opt, rc;

    while ((opt = getopt(argc, argv, "b:t:n:g:k:w:m:X:h")) != -1) {
        switch (opt) {
        case 'b': o.brokers = optarg; break;
        case 't': o.topic = optarg; break;
        case 'n': o.count = parse_count(optarg, "count", 10000000); break;
        case 'g': o.group = optarg; break;
        case 'k': o.tag = optarg; break;
        case 'w': o.wait_s = parse_count(optarg, "wait", 10000000); break;
        case 'm': o.mode = optarg; break;
        case 'X':
            if (strchr(optarg, '=') == NULL || o.nprops == MAX_PROPS) {
                fprintf(stderr, "kafka-check: -X wants NAME=VALUE (at most %d), got '%s'\n",
                        MAX_PROPS, optarg);
                return 2;
            }
            o.props[o.nprops++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || o.brokers == NULL ||
        (strcmp(o.mode, "all") != 0 && strcmp(o.mode, "produce") != 0 &&
         strcmp(o.mode, "consume") != 0 && strcmp(o.mode, "verify") != 0)) {
        usage(stderr);
        return 2;
    }
    /* A tag and group unique to this run keep repeated checks independent. */
    if (o.tag == NULL) {
        snprintf(tagbuf, sizeof tagbuf, "check-%ld-%ld", (long)getpid(), (long)time(NULL));
        o.tag = tagbuf;
    }
    if (o.group == NULL) {
        snprintf(groupbuf, sizeof groupbuf, "kafka-check-%s", o.tag);
        o.group = groupbuf;
    }

    if (strcmp(o.mode, "produce") == 0)
        rc = do_produce(&o);
    else if (strcmp(o.mode, "consume") == 0)
        rc = do_consume(&o);
    else if (strcmp(o.mode, "verify") == 0)
        rc = do_verify(&o);
    else
        rc = do_produce(&o) == 0 && do_consume(&o) == 0 && do_verify(&o) == 0 ? 0 : -1;
    fprintf(stderr, "kafka-check: %s %s\n", o.mode, rc == 0 ? "ok" : "FAILED");
    return rc == 0 ? 0 : 1;
}
