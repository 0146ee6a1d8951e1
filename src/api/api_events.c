/*
 * api_events.c — GET /api/v1/calls/{id}/events: a call's client events
 * and their delivery state (DESIGN.md section 10).
 *
 * Owns: turning the request into one store statement (store/events.h) and
 * its result into the answer.  PostgreSQL renders the JSON array, in seq
 * order; the text goes to the client as the database produced it.
 */
#include <stdlib.h>

#include "api/api.h"
#include "store/events.h"

static void listed(void *ctx, const struct store_err *e, const struct store_events_doc *doc)
{
    struct api_req *r = ctx;
    if (e != NULL)
        api_store_failed(r->req, e, "events");
    else if (doc == NULL)
        api_call_not_found(r->req, r->id);
    else
        api_json(r->req, 200, doc->text, doc->len, NULL);
    free(r);
}

void api_events_list(struct api *api, struct http_request *req, const char *id)
{
    struct api_req *r = api_req_new(req, id);
    if (r != NULL && store_events_list(api->pg, id, listed, r) < 0) {
        api_unavailable(req, API_DB_UNREACHABLE);
        free(r);
    }
}
