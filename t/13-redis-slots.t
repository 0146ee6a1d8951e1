#!/usr/bin/perl
# src/dispatch/slots.c and src/net/redis.c (the redis_slots API) against a
# real server: starts Redis with the harness, runs t/unit_redis_slots with
# CALLORCH_TEST_REDIS_PORT set and passes its TAP through.  The C program
# asks for the server to be stopped and started again (the restart case)
# with "# redisctl stop" / "# redisctl start" (run_tap_program); a restarted
# Redis keeps its port and is empty (no persistence).
use strict;
use warnings;
use CallorchTest;

unless (grep { -x "$_/redis-server" } split /:/, $ENV{PATH} // '') {
    print "1..0 # SKIP redis-server not found (Debian package redis-server)\n";
    exit 0;
}
my $s = CallorchTest->new;
$s->start_redis;
$ENV{CALLORCH_TEST_REDIS_PORT} = $s->redis_port;
$ENV{CALLORCH_TEST_REDIS_CTL} = 'stdio';
my $status = $s->run_tap_program('unit_redis_slots',
    redisctl => sub { $_[0] eq 'stop' ? $s->stop_redis : $s->start_redis });
# The harness stops Redis when $s goes away; keep the C program's status.
undef $s;
exit($status == 0 ? 0 : 1);
