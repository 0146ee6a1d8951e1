#!/usr/bin/perl
# src/net/pg_pool.c against a real server: starts PostgreSQL with the harness,
# runs t/unit_pg_pool with CALLORCH_TEST_PG set and passes its TAP through.
# The C program asks for the server to be stopped and started again (the
# restart case) with "# pgctl stop" / "# pgctl start" (run_tap_program).
use strict;
use warnings;
use CallorchTest;

unless (CallorchTest::pg_bindir()) {
    print "1..0 # SKIP PostgreSQL server binaries not found (Debian package postgresql)\n";
    exit 0;
}
my $s = CallorchTest->new;
$s->start_postgres;
$ENV{CALLORCH_TEST_PG} = $s->pg_conninfo;
$ENV{CALLORCH_TEST_PG_CTL} = 'stdio';
my $status = $s->run_tap_program('unit_pg_pool',
    pgctl => sub { $_[0] eq 'stop' ? $s->stop_postgres : $s->start_postgres });
# The harness stops PostgreSQL when $s goes away; keep the C program's status.
undef $s;
exit($status == 0 ? 0 : 1);
