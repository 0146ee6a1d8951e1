/*
 * supervisor.h — the master's child table and its signal handling.
 *
 * Owns: forking the http, kafka and sched children of DESIGN.md section 2,
 * logging and respawning them with a per-slot exponential backoff, the
 * generations that a reload replaces, graceful/fast stop with escalation to
 * SIGKILL, the systemd notifications, and what the control socket shows
 * and does (status, reload, stop, pause/resume; the socket itself is
 * control.c's).  The master holds no database, Redis or Kafka connection:
 * all of that lives in the children.
 */
#ifndef CO_SUPERVISOR_H
#define CO_SUPERVISOR_H

#include "master/control.h"
#include "master/listen.h"
#include "util/config.h"

/* Respawn throttle: the first respawn after a stable run is immediate, the
 * next ones wait co_tunables.respawn_min doubling up to respawn_max; a child
 * that stayed up respawn_stable seconds resets the delay (util/tunables.h). */

/*
 * Run the master until it is told to stop.  Takes ownership of CFG and LS
 * (a reload replaces them).  CONFIG_PATH is re-read on SIGHUP: it must be
 * absolute, as a daemonized master has moved to /.  CTL (may be
 * NULL) is served on the master's loop while it runs; the caller closes it.
 * Returns the process exit status.
 */
int supervisor_run(struct co_config *cfg, struct listen_set *ls, struct control *ctl,
                   const char *config_path);

#endif
