#!/usr/bin/perl
# src/pg_pool.c against a real server: starts PostgreSQL with the harness,
# runs t/unit_pg_pool with CALLORCH_TEST_PG set and passes its TAP through.
#
# The C program may ask for the server to be stopped and started again (the
# restart case): it prints "# pgctl stop" or "# pgctl start" and waits for a
# line on its stdin, which we send once the harness did it.
use strict;
use warnings;
use IPC::Open2;
use CallorchTest;

$| = 1;
unless (CallorchTest::pg_bindir()) {
    print "1..0 # SKIP PostgreSQL server binaries not found (Debian package postgresql)\n";
    exit 0;
}
my $bin = CallorchTest::builddir() . '/t/unit_pg_pool';
-x $bin or die "$bin not built (make check builds it)\n";

my $s = CallorchTest->new;
$s->start_postgres;
$ENV{CALLORCH_TEST_PG} = $s->pg_conninfo;
my $can_restart = $s->can('stop_postgres') && $s->can('start_postgres');
$ENV{CALLORCH_TEST_PG_CTL} = 'stdio' if $can_restart;

my $pid = open2(my $from, my $to, $bin);
while (my $line = <$from>) {
    print $line;
    if ($can_restart && $line =~ /^# pgctl (stop|start)$/) {
        $1 eq 'stop' ? $s->stop_postgres : $s->start_postgres;
        print {$to} "done\n";
        $to->flush;
    }
}
close $to;
waitpid($pid, 0);
my $status = $?;
# The harness stops PostgreSQL when $s goes away; keep the C program's status.
undef $s;
exit($status == 0 ? 0 : 1);
