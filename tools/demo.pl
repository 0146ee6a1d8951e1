#!/usr/bin/perl
# tools/demo.pl BUILDDIR — run by `tools/dev demo`: the local stack
# (PostgreSQL, Redis, Kafka-protocol broker) on loopback, callorchd with a
# generated config, its log on the terminal; Ctrl-C stops all of it.
use strict;
use warnings;
use CallorchTest;

$ENV{CALLORCH_BUILDDIR} = shift // die "usage: demo.pl BUILDDIR\n";
my $s = CallorchTest->new;
$s->start_all;
$s->migrate if $s->can('migrate');
$s->write_config('daemon.log_level' => 'info');
my $pid = $s->start_daemon;

my $base = $s->base_url;
print <<"EOT";

callorch demo is running (temporary directory ${\ $s->tmpdir })
  HTTP API      $base   (try: curl $base/healthz)
  PostgreSQL    ${\ $s->pg_conninfo }
  Redis         127.0.0.1:${\ $s->redis_port }
  Kafka broker  ${\ $s->kafka_brokers }
  callorchd     master pid $pid, config ${\ $s->config_path }
Following the daemon's log; Ctrl-C stops everything.

EOT

my $stop = 0;
$SIG{INT} = $SIG{TERM} = sub { $stop = 1 };
open my $log, '<', $s->tmpdir . '/callorchd.log' or die "no log: $!";
until ($stop) {
    while (my $line = <$log>) { print $line }
    last unless kill 0, $pid;
    select(undef, undef, undef, 0.2);
    seek $log, 0, 1; # clear EOF
}
print "\nstopping callorchd and the stack...\n";
$s->stop_daemon;
