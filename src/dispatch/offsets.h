/*
 * offsets.h — in-order offset commits for messages handled out of order.
 *
 * Owns the bookkeeping that lets a Kafka child work on many messages of one
 * partition at once yet commit an offset only when every message before it
 * was handled: committing past a message still in flight would lose it if
 * the child crashed.  Per partition: the offsets in arrival order, each
 * marked done when handled; the committable offset is one past the longest
 * done prefix.
 */
#ifndef CO_OFFSETS_H
#define CO_OFFSETS_H

#include <stdint.h>

struct offsets;

struct offsets *offsets_new(void);
void offsets_free(struct offsets *o);

/* A message of PARTITION at OFFSET arrived; returns a handle for done, or
 * NULL when out of memory. */
struct offset_mark *offsets_track(struct offsets *o, int32_t partition, int64_t offset);

/* Mark M handled.  Returns the offset to commit for its partition (one past
 * the last message of a fully handled prefix), or -1 when nothing new can
 * be committed yet.  *partition is set to M's partition. */
int64_t offsets_done(struct offsets *o, struct offset_mark *m, int32_t *partition);

/* Forget PARTITION (revoked): its marks stay valid but commit nothing. */
void offsets_forget(struct offsets *o, int32_t partition);

/* Messages tracked and not yet done, over all partitions. */
int offsets_in_flight(const struct offsets *o);

#endif
