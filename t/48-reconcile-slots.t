#!/usr/bin/perl
# src/dispatch/slots.c's reconcile side (issue 9) against a real server:
# starts Redis with the harness and runs t/unit_reconcile_slots with
# CALLORCH_TEST_REDIS_PORT set, passing its TAP through.
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
my $status = $s->run_tap_program('unit_reconcile_slots');
undef $s;
exit($status == 0 ? 0 : 1);
