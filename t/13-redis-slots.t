#!/usr/bin/perl
# src/redis_slots.c against a real server: starts Redis with the harness,
# runs t/unit_redis_slots with CALLORCH_TEST_REDIS_PORT set and passes its
# TAP through.
#
# The C program may ask for the server to be stopped and started again (the
# restart case): it prints "# redisctl stop" or "# redisctl start" and waits
# for a line on its stdin, which we send once the harness did it.  A
# restarted Redis keeps its port and is empty (no persistence).
use strict;
use warnings;
use IPC::Open2;
use CallorchTest;

$| = 1;
unless (grep { -x "$_/redis-server" } split /:/, $ENV{PATH} // '') {
    print "1..0 # SKIP redis-server not found (Debian package redis-server)\n";
    exit 0;
}
my $bin = CallorchTest::builddir() . '/t/unit_redis_slots';
-x $bin or die "$bin not built (make check builds it)\n";

my $s = CallorchTest->new;
$s->start_redis;
$ENV{CALLORCH_TEST_REDIS_PORT} = $s->redis_port;
my $can_restart = $s->can('stop_redis') && $s->can('start_redis');
$ENV{CALLORCH_TEST_REDIS_CTL} = 'stdio' if $can_restart;

my $pid = open2(my $from, my $to, $bin);
while (my $line = <$from>) {
    print $line;
    if ($can_restart && $line =~ /^# redisctl (stop|start)$/) {
        $1 eq 'stop' ? $s->stop_redis : $s->start_redis;
        print {$to} "done\n";
        $to->flush;
    }
}
close $to;
waitpid($pid, 0);
my $status = $?;
# The harness stops Redis when $s goes away; keep the C program's status.
undef $s;
exit($status == 0 ? 0 : 1);
