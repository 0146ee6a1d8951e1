/*
 * api_ops.c — the operational endpoints: /healthz, /readyz and the JSON
 * /api/v1/metrics (counts by status, slots).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "net/kafka_producer.h"
#include "net/redis_slots.h"
#include "util/shm.h"

void api_ops_healthz(struct api *api, struct http_request *req)
{
    char body[64];
    /* the pid tells operators (and tests) which worker answered */
    int n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"pid\":%ld}", (long)getpid());
    api_json(req, 200, body, (size_t)n, NULL);
}

void api_ops_readyz(struct api *api, struct http_request *req)
{
    char body[200];
    int up = pg_pool_is_up(api->pg);
    /* readiness is PostgreSQL's: a 201 needs only it; Redis and Kafka are
     * reported for the operator */
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"%s\",\"postgres\":\"%s\",\"redis\":\"%s\","
                     "\"kafkaPending\":%d}",
                     up ? "ready" : "unavailable", up ? "up" : "down",
                     redis_slots_is_up(api->redis) ? "up" : "down",
                     kafka_producer_pending(api->producer));
    if (up) {
        api_json(req, 200, body, (size_t)n, NULL);
    } else {
        char ra[32];
        snprintf(ra, sizeof(ra), "Retry-After: %d\r\n", API_RETRY_AFTER);
        api_json(req, 503, body, (size_t)n, ra);
    }
}

static const char COUNTS_SQL[] = "SELECT status, count(*) FROM calls GROUP BY status";

/* Counts by status, in the order of statuses[] below. */
static void read_counts(const PGresult *res, long long counts[5]);

static const char *const statuses[] = { "PENDING", "IN_PROGRESS", "COMPLETED", "FAILED",
                                        "CANCELLED" };

/* The slots in use travel in the id slot of api_query (-1: unknown). */
static void read_counts(const PGresult *res, long long counts[5])
{
    memset(counts, 0, 5 * sizeof(counts[0]));
    for (int r = 0; r < PQntuples(res); r++)
        for (int i = 0; i < 5; i++)
            if (strcmp(PQgetvalue(res, r, 0), statuses[i]) == 0)
                counts[i] = strtoll(PQgetvalue(res, r, 1), NULL, 10);
}

static void counted(struct api *api, struct http_request *req, const PGresult *res,
                    const char *in_flight)
{
    char body[512];
    long long counts[5];
    read_counts(res, counts);
    int n = snprintf(body, sizeof(body),
                     "{\"PENDING\":%lld,\"IN_PROGRESS\":%lld,\"COMPLETED\":%lld,"
                     "\"FAILED\":%lld,\"CANCELLED\":%lld,\"inFlight\":%s,\"maxConcurrent\":%d}",
                     counts[0], counts[1], counts[2], counts[3], counts[4],
                     in_flight[0] == '-' ? "null" : in_flight, api->cfg->max_concurrent_calls);
    api_json(req, 200, body, (size_t)n, NULL);
}

/* Both metrics endpoints read the slots in Redis first (-1 while Redis is
 * down), then the counts from PostgreSQL; the slot count travels to the
 * second step in api_query's id string. */
struct metrics_ctx {
    struct api *api;
    struct http_request *req;
    api_rows_fn render;
};

static void slots_counted(void *arg, int in_use, const char *err)
{
    struct metrics_ctx *m = arg;
    char n[16];
    snprintf(n, sizeof(n), "%d", err != NULL ? -1 : in_use);
    if (err == NULL && co_shm != NULL)
        atomic_store(&co_shm->slots_in_use, in_use);
    api_query(m->api, m->req, COUNTS_SQL, 0, NULL, m->render, n);
    free(m);
}

static void read_slots_then(struct api *api, struct http_request *req, api_rows_fn render)
{
    struct metrics_ctx *m = malloc(sizeof(*m));
    if (m == NULL) {
        api_internal_error(req, "metrics", "out of memory");
        return;
    }
    m->api = api;
    m->req = req;
    m->render = render;
    if (redis_slots_count(api->redis, slots_counted, m) < 0)
        slots_counted(m, 0, "redis unavailable");
}

void api_ops_metrics_json(struct api *api, struct http_request *req)
{
    read_slots_then(api, req, counted);
}

static void prometheus_counted(struct api *api, struct http_request *req, const PGresult *res,
                               const char *in_flight)
{
    struct shm_gauges g = { .slots_in_use = atoi(in_flight),
                            .max_slots = api->cfg->max_concurrent_calls };
    read_counts(res, g.by_status);
    size_t len;
    char *text = shm_prometheus(&g, &len);
    if (text == NULL) {
        api_internal_error(req, "metrics", "out of memory");
        return;
    }
    http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
    free(text);
}

void api_ops_prometheus(struct api *api, struct http_request *req)
{
    read_slots_then(api, req, prometheus_counted);
}
