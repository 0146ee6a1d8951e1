/*
 * kafka_producer.c — librdkafka producer driven by libev (see the header).
 *
 * librdkafka writes a byte to our pipe when its main queue (delivery
 * reports, errors, logs) becomes non-empty; the loop then serves it with
 * rd_kafka_poll(rk, 0), which runs the delivery callbacks in this thread.
 */
#include "net/kafka_producer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "net/kafka_consumer.h"
#include "util/log.h"

struct kafka_producer {
    struct ev_loop *loop;
    rd_kafka_t *rk;
    rd_kafka_topic_t *topic;
    rd_kafka_queue_t *main_queue;
    int wake[2];
    ev_io wake_watcher;
    ev_timer poll_timer;
    ev_timer flush_timer;
    ev_tstamp flush_deadline;
    void (*flush_done)(void *);
    void *flush_arg;
};

struct delivery {
    kafka_delivery_fn done;
    void *arg;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    struct delivery *d = msg->_private;
    if (d == NULL)
        return;
    if (msg->err)
        co_warn("kafka delivery failed", "error=%s", rd_kafka_err2name(msg->err));
    d->done(d->arg, msg->err ? rd_kafka_err2str(msg->err) : NULL);
    free(d);
}

static void serve(struct kafka_producer *kp)
{
    rd_kafka_poll(kp->rk, 0);
}

static void on_wake(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kafka_producer *kp = w->data;
    char buf[64];
    while (read(kp->wake[0], buf, sizeof(buf)) > 0)
        ;
    serve(kp);
}

static void on_poll_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    serve(w->data); /* safety net against a missed wake-up */
}

static int producer_conf(rd_kafka_conf_t *conf, const struct co_config *cfg, char *err,
                         size_t errlen)
{
    const char *fixed[][2] = {
        /* no duplicates or reordering from internal retries */
        { "enable.idempotence", "true" },
        /* PostgreSQL holds the call; the scheduler publishes what Kafka
         * did not take within this time */
        { "message.timeout.ms", "30000" },
        { "linger.ms", "1" },
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (rd_kafka_conf_set(conf, fixed[i][0], fixed[i][1], err, errlen) != RD_KAFKA_CONF_OK)
            return -1;
    if (kafka_conf_apply(conf, cfg, err, errlen) < 0)
        return -1;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    return 0;
}

static int watch_main_queue(struct kafka_producer *kp)
{
    if (pipe2(kp->wake, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    kp->main_queue = rd_kafka_queue_get_main(kp->rk);
    rd_kafka_queue_io_event_enable(kp->main_queue, kp->wake[1], "1", 1);
    ev_io_init(&kp->wake_watcher, on_wake, kp->wake[0], EV_READ);
    kp->wake_watcher.data = kp;
    ev_io_start(kp->loop, &kp->wake_watcher);
    ev_timer_init(&kp->poll_timer, on_poll_timer, 0.5, 0.5);
    kp->poll_timer.data = kp;
    ev_timer_start(kp->loop, &kp->poll_timer);
    ev_unref(kp->loop); /* the safety-net timer alone keeps nothing alive */
    return 0;
}

struct kafka_producer *kafka_producer_new(struct ev_loop *loop, const struct co_config *cfg,
                                          char *err, size_t errlen)
{
    struct kafka_producer *kp = calloc(1, sizeof(*kp));
    if (kp == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    kp->wake[0] = kp->wake[1] = -1;
    kp->loop = loop;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (producer_conf(conf, cfg, err, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        free(kp);
        return NULL;
    }
    kp->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
    if (kp->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        free(kp);
        return NULL;
    }
    kp->topic = rd_kafka_topic_new(kp->rk, cfg->kafka_topic, NULL);
    if (kp->topic == NULL || watch_main_queue(kp) < 0) {
        snprintf(err, errlen, "kafka producer set-up: %s", strerror(errno));
        kafka_producer_free(kp);
        return NULL;
    }
    return kp;
}

int kafka_producer_send(struct kafka_producer *kp, const char *key, const char *value, size_t len,
                        kafka_delivery_fn done, void *arg)
{
    struct delivery *d = NULL;
    if (done != NULL) {
        d = malloc(sizeof(*d));
        if (d == NULL)
            return -1;
        d->done = done;
        d->arg = arg;
    }
    if (rd_kafka_produce(kp->topic, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, (void *)value, len,
                         key, key ? strlen(key) : 0, d) < 0) {
        co_warn("kafka produce refused", "error=%s", rd_kafka_err2name(rd_kafka_last_error()));
        free(d);
        return -1;
    }
    return 0;
}

int kafka_producer_pending(const struct kafka_producer *kp)
{
    return rd_kafka_outq_len(kp->rk);
}

static void on_flush_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kafka_producer *kp = w->data;
    serve(kp);
    if (rd_kafka_outq_len(kp->rk) > 0 && ev_now(loop) < kp->flush_deadline)
        return;
    if (rd_kafka_outq_len(kp->rk) > 0)
        co_warn("kafka flush timed out; the scheduler will publish the rest", "pending=%d",
                rd_kafka_outq_len(kp->rk));
    ev_timer_stop(loop, w);
    kp->flush_done(kp->flush_arg);
}

void kafka_producer_flush(struct kafka_producer *kp, double timeout, void (*done)(void *),
                          void *arg)
{
    kp->flush_done = done;
    kp->flush_arg = arg;
    kp->flush_deadline = ev_now(kp->loop) + timeout;
    ev_timer_init(&kp->flush_timer, on_flush_timer, 0., 0.05);
    kp->flush_timer.data = kp;
    ev_timer_start(kp->loop, &kp->flush_timer);
}

void kafka_producer_free(struct kafka_producer *kp)
{
    if (kp == NULL)
        return;
    ev_io_stop(kp->loop, &kp->wake_watcher);
    if (ev_is_active(&kp->poll_timer)) {
        ev_ref(kp->loop);
        ev_timer_stop(kp->loop, &kp->poll_timer);
    }
    ev_timer_stop(kp->loop, &kp->flush_timer);
    if (kp->main_queue != NULL)
        rd_kafka_queue_destroy(kp->main_queue);
    if (kp->topic != NULL)
        rd_kafka_topic_destroy(kp->topic);
    if (kp->rk != NULL) {
        /* undelivered messages are dropped: their calls are in PostgreSQL */
        rd_kafka_purge(kp->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(kp->rk, 0);
        rd_kafka_destroy(kp->rk);
    }
    if (kp->wake[0] >= 0) {
        close(kp->wake[0]);
        close(kp->wake[1]);
    }
    free(kp);
}

int kafka_call_message(char *buf, size_t size, const char *call_id, int attempt)
{
    int n = snprintf(buf, size, "{\"id\":\"%s\",\"attempt\":%d}", call_id, attempt);
    return n < 0 || (size_t)n >= size ? -1 : n;
}
