/*
 * redis_slots.h — kept so that callers written before the split still
 * build: the slot rules now live in dispatch/slots.h, the connection in
 * net/redis.h.  New code includes "dispatch/slots.h"; once no caller
 * includes this file, delete it.
 */
#ifndef CO_REDIS_SLOTS_H
#define CO_REDIS_SLOTS_H

#include "dispatch/slots.h"

#endif
