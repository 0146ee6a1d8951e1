/*
 * offsets.c — in-order commit tracking (see offsets.h).
 *
 * A mark lives in a per-partition FIFO; done marks at the head are popped.
 * Offsets arrive in increasing order per partition (Kafka guarantees it for
 * one consumer), so the FIFO is sorted.
 */
#include "dispatch/offsets.h"

#include <stdlib.h>

struct offset_mark {
    struct offset_mark *next;
    struct partition *part;
    int64_t offset;
    int done;
};

struct partition {
    struct partition *next;
    int32_t id;
    int forgotten;
    struct offset_mark *head, *tail;
};

struct offsets {
    struct partition *parts;
    int in_flight;
};

struct offsets *offsets_new(void)
{
    return calloc(1, sizeof(struct offsets));
}

static struct partition *find(struct offsets *o, int32_t id, int create)
{
    for (struct partition *p = o->parts; p != NULL; p = p->next)
        if (p->id == id && !p->forgotten)
            return p;
    if (!create)
        return NULL;
    struct partition *p = calloc(1, sizeof(*p));
    if (p != NULL) {
        p->id = id;
        p->next = o->parts;
        o->parts = p;
    }
    return p;
}

struct offset_mark *offsets_track(struct offsets *o, int32_t partition, int64_t offset)
{
    struct partition *p = find(o, partition, 1);
    struct offset_mark *m = p ? calloc(1, sizeof(*m)) : NULL;
    if (m == NULL)
        return NULL;
    m->part = p;
    m->offset = offset;
    if (p->tail != NULL)
        p->tail->next = m;
    else
        p->head = m;
    p->tail = m;
    o->in_flight++;
    return m;
}

/* Drop partitions that are forgotten and empty. */
static void reap(struct offsets *o)
{
    struct partition **pp = &o->parts;
    while (*pp != NULL) {
        struct partition *p = *pp;
        if (p->forgotten && p->head == NULL) {
            *pp = p->next;
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

int64_t offsets_done(struct offsets *o, struct offset_mark *m, int32_t *partition)
{
    struct partition *p = m->part;
    int64_t commit = -1;
    m->done = 1;
    o->in_flight--;
    *partition = p->id;
    while (p->head != NULL && p->head->done) {
        struct offset_mark *h = p->head;
        commit = h->offset + 1;
        p->head = h->next;
        if (p->head == NULL)
            p->tail = NULL;
        free(h);
    }
    if (p->forgotten) {
        commit = -1;
        reap(o);
    }
    return commit;
}

void offsets_forget(struct offsets *o, int32_t partition)
{
    struct partition *p = find(o, partition, 0);
    if (p != NULL)
        p->forgotten = 1;
    reap(o);
}

int offsets_in_flight(const struct offsets *o)
{
    return o->in_flight;
}

void offsets_free(struct offsets *o)
{
    if (o == NULL)
        return;
    while (o->parts != NULL) {
        struct partition *p = o->parts;
        o->parts = p->next;
        while (p->head != NULL) {
            struct offset_mark *m = p->head;
            p->head = m->next;
            free(m);
        }
        free(p);
    }
    free(o);
}
