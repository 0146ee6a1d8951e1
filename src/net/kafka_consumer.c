/*
 * kafka_consumer.c — librdkafka consumer driven by libev (see the header).
 *
 * librdkafka runs its own threads; it tells us that the consumer queue went
 * from empty to non-empty by writing to a pipe (rd_kafka_queue_io_event_
 * enable).  The loop then drains the queue with zero-timeout polls.  A slow
 * timer polls too, as a safety net against a missed wake-up.
 */
#include "net/kafka_consumer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

#define DRAIN_BATCH 256

struct kafka_consumer {
    struct ev_loop *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    int wake[2];
    ev_io wake_watcher;
    ev_timer poll_timer;
    ev_idle more; /* drain continues next iteration */
    kafka_message_fn on_message;
    void *arg;
    int closing;
    int paused;
    char *topic;
    void (*revoke_fn)(void *, int32_t);
    void *revoke_arg;
    void (*closed_cb)(void *);
    void *closed_arg;
};

static void log_partitions(const char *what, const rd_kafka_topic_partition_list_t *parts)
{
    char buf[512];
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < parts->cnt && off < sizeof(buf) - 32; i++)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s/%d", i ? "," : "",
                                parts->elems[i].topic, parts->elems[i].partition);
    co_info(what, "partitions=%s count=%d", off ? buf : "-", parts->cnt);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct kafka_consumer *kc = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_partitions("partitions assigned", parts);
        rd_kafka_assign(rk, parts);
        return;
    }
    log_partitions("partitions revoked", parts);
    if (kc != NULL && kc->revoke_fn != NULL)
        for (int i = 0; i < parts->cnt; i++)
            kc->revoke_fn(kc->revoke_arg, parts->elems[i].partition);
    rd_kafka_assign(rk, NULL);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    /* transport errors are retried by librdkafka itself; only report */
    co_warn("kafka error", "error=%s reason=%s", rd_kafka_err2name(err), CO_LOG_Q(reason));
}

static void on_library_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    enum co_log_level l = level <= 3   ? CO_LOG_ERROR
                          : level <= 4 ? CO_LOG_WARN
                          : level <= 6 ? CO_LOG_INFO
                                       : CO_LOG_DEBUG;
    co_log(l, "librdkafka", "facility=%s detail=%s", CO_LOG_Q(fac), CO_LOG_Q(buf));
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        co_warn("offset commit failed", "error=%s", rd_kafka_err2name(err));
}

int kafka_conf_apply(rd_kafka_conf_t *conf, const struct co_config *cfg, char *err, size_t errlen)
{
    const char *fixed[][2] = {
        { "bootstrap.servers", cfg->kafka_brokers },
        { "client.id", "callorchd" },
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (rd_kafka_conf_set(conf, fixed[i][0], fixed[i][1], err, errlen) != RD_KAFKA_CONF_OK)
            return -1;
    for (int i = 0; i < cfg->n_rdkafka_props; i++) {
        const struct co_kv *kv = &cfg->rdkafka_props[i];
        char why[256];
        if (rd_kafka_conf_set(conf, kv->name, kv->value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "[kafka] rdkafka.%s: %s", kv->name, why);
            return -1;
        }
    }
    rd_kafka_conf_set_log_cb(conf, on_library_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    return 0;
}

static int consumer_conf(rd_kafka_conf_t *conf, const struct co_config *cfg, char *err,
                         size_t errlen)
{
    const char *fixed[][2] = {
        { "group.id", cfg->kafka_group_id },
        /* we commit what we handled, never what we merely received */
        { "enable.auto.commit", "false" },
        { "auto.offset.reset", "earliest" },
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (rd_kafka_conf_set(conf, fixed[i][0], fixed[i][1], err, errlen) != RD_KAFKA_CONF_OK)
            return -1;
    /* pass-through keys come last so an operator can override the above */
    if (kafka_conf_apply(conf, cfg, err, errlen) < 0)
        return -1;
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    return 0;
}

static void finish_close(struct kafka_consumer *kc)
{
    if (kc->closed_cb != NULL) {
        void (*cb)(void *) = kc->closed_cb;
        kc->closed_cb = NULL;
        ev_idle_stop(kc->loop, &kc->more);
        ev_io_stop(kc->loop, &kc->wake_watcher);
        ev_timer_stop(kc->loop, &kc->poll_timer);
        cb(kc->closed_arg);
    }
}

/* Handle up to DRAIN_BATCH events; keep going on the next iteration if the
 * queue still has some, so one busy consumer cannot starve the loop. */
static void drain(struct kafka_consumer *kc)
{
    for (int i = 0; i < DRAIN_BATCH; i++) {
        if (kc->paused && !kc->closing) {
            ev_idle_stop(kc->loop, &kc->more);
            return;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(kc->rk, 0);
        if (msg == NULL) {
            ev_idle_stop(kc->loop, &kc->more);
            if (kc->closing && rd_kafka_consumer_closed(kc->rk))
                finish_close(kc);
            return;
        }
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR && !kc->closing)
            kc->on_message(msg, kc->arg);
        else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && msg->err)
            co_warn("kafka consume error", "error=%s detail=%s", rd_kafka_err2name(msg->err),
                    CO_LOG_Q(rd_kafka_message_errstr(msg)));
        rd_kafka_message_destroy(msg);
    }
    ev_idle_start(kc->loop, &kc->more);
}

static void on_wake(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kafka_consumer *kc = w->data;
    char buf[64];
    while (read(kc->wake[0], buf, sizeof(buf)) > 0)
        ;
    drain(kc);
}

static void on_poll_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    drain(w->data);
}

static void on_more(struct ev_loop *loop, ev_idle *w, int revents)
{
    drain(w->data);
}

static int watch_queue(struct kafka_consumer *kc)
{
    if (pipe2(kc->wake, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    kc->queue = rd_kafka_queue_get_consumer(kc->rk);
    rd_kafka_queue_io_event_enable(kc->queue, kc->wake[1], "1", 1);
    ev_io_init(&kc->wake_watcher, on_wake, kc->wake[0], EV_READ);
    kc->wake_watcher.data = kc;
    ev_io_start(kc->loop, &kc->wake_watcher);
    ev_timer_init(&kc->poll_timer, on_poll_timer, 0.5, 0.5);
    kc->poll_timer.data = kc;
    ev_timer_start(kc->loop, &kc->poll_timer);
    ev_idle_init(&kc->more, on_more);
    kc->more.data = kc;
    return 0;
}

static int subscribe(struct kafka_consumer *kc, const char *topic, char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(kc->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "subscribe %s: %s", topic, rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

struct kafka_consumer *kafka_consumer_new(struct ev_loop *loop, const struct co_config *cfg,
                                          kafka_message_fn on_message, void *arg, char *err,
                                          size_t errlen)
{
    struct kafka_consumer *kc = calloc(1, sizeof(*kc));
    if (kc == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    kc->wake[0] = kc->wake[1] = -1;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (consumer_conf(conf, cfg, err, errlen) < 0)
        goto fail;
    kc->loop = loop;
    kc->on_message = on_message;
    kc->arg = arg;
    kc->topic = strdup(cfg->kafka_topic);
    if (kc->topic == NULL)
        goto fail;
    rd_kafka_conf_set_opaque(conf, kc);
    kc->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errlen);
    if (kc->rk == NULL)
        goto fail;
    conf = NULL; /* owned by rk now */
    rd_kafka_poll_set_consumer(kc->rk);
    if (watch_queue(kc) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    if (subscribe(kc, cfg->kafka_topic, err, errlen) < 0)
        goto fail;
    return kc;
fail:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    kafka_consumer_free(kc);
    return NULL;
}

void kafka_consumer_commit(struct kafka_consumer *kc, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offs, kc->topic, partition)->offset = offset;
    rd_kafka_resp_err_t e = rd_kafka_commit(kc->rk, offs, 1 /* async */);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        co_warn("offset commit failed", "error=%s", rd_kafka_err2name(e));
    rd_kafka_topic_partition_list_destroy(offs);
}

void kafka_consumer_pause(struct kafka_consumer *kc, int paused)
{
    kc->paused = paused;
    if (!paused)
        ev_idle_start(kc->loop, &kc->more); /* pick up what queued meanwhile */
}

void kafka_consumer_on_revoke(struct kafka_consumer *kc, void (*fn)(void *, int32_t), void *arg)
{
    kc->revoke_fn = fn;
    kc->revoke_arg = arg;
}

void kafka_consumer_close(struct kafka_consumer *kc, void (*done)(void *), void *arg)
{
    kc->closing = 1;
    kc->closed_cb = done;
    kc->closed_arg = arg;
    /* leaves the group through the queue we already serve: no blocking */
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(kc->rk, kc->queue);
    if (e != NULL) {
        co_warn("kafka close failed", "error=\"%s\"", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        finish_close(kc);
        return;
    }
    drain(kc);
}

void kafka_consumer_free(struct kafka_consumer *kc)
{
    if (kc == NULL)
        return;
    if (kc->loop != NULL) {
        ev_io_stop(kc->loop, &kc->wake_watcher);
        ev_timer_stop(kc->loop, &kc->poll_timer);
        ev_idle_stop(kc->loop, &kc->more);
    }
    if (kc->queue != NULL)
        rd_kafka_queue_destroy(kc->queue);
    /* a graceful stop closed the consumer already; a fast one must not
     * block here waiting for the group to rebalance */
    if (kc->rk != NULL)
        rd_kafka_destroy_flags(kc->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (kc->wake[0] >= 0) {
        close(kc->wake[0]);
        close(kc->wake[1]);
    }
    free(kc->topic);
    free(kc);
}
