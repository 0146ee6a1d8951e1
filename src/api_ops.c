/*
 * api_ops.c — the operational endpoints: /healthz, /readyz and the JSON
 * /api/v1/metrics (counts by status, slots).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"

void api_ops_healthz(struct api *api, struct http_request *req)
{
    char body[64];
    /* the pid tells operators (and tests) which worker answered */
    int n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"pid\":%ld}", (long)getpid());
    api_json(req, 200, body, (size_t)n, NULL);
}

void api_ops_readyz(struct api *api, struct http_request *req)
{
    char body[160];
    int up = pg_pool_is_up(api->pg);
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"%s\",\"postgres\":\"%s\",\"redis\":\"unknown\","
                     "\"kafka\":\"unknown\"}",
                     up ? "ready" : "unavailable", up ? "up" : "down");
    if (up) {
        api_json(req, 200, body, (size_t)n, NULL);
    } else {
        char ra[32];
        snprintf(ra, sizeof(ra), "Retry-After: %d\r\n", API_RETRY_AFTER);
        api_json(req, 503, body, (size_t)n, ra);
    }
}

static const char COUNTS_SQL[] = "SELECT status, count(*) FROM calls GROUP BY status";

static const char *const statuses[] = { "PENDING", "IN_PROGRESS", "COMPLETED", "FAILED",
                                        "CANCELLED" };

static void counted(struct api *api, struct http_request *req, const PGresult *res,
                    const char *unused)
{
    char body[512];
    long long counts[5] = { 0 };
    for (int r = 0; r < PQntuples(res); r++)
        for (int i = 0; i < 5; i++)
            if (strcmp(PQgetvalue(res, r, 0), statuses[i]) == 0)
                counts[i] = strtoll(PQgetvalue(res, r, 1), NULL, 10);
    /* inFlight counts the slots held in Redis once dispatch runs */
    int n = snprintf(body, sizeof(body),
                     "{\"PENDING\":%lld,\"IN_PROGRESS\":%lld,\"COMPLETED\":%lld,"
                     "\"FAILED\":%lld,\"CANCELLED\":%lld,\"inFlight\":%d,\"maxConcurrent\":%d}",
                     counts[0], counts[1], counts[2], counts[3], counts[4], 0,
                     api->cfg->max_concurrent_calls);
    api_json(req, 200, body, (size_t)n, NULL);
}

void api_ops_metrics_json(struct api *api, struct http_request *req)
{
    api_query(api, req, COUNTS_SQL, 0, NULL, counted, NULL);
}
