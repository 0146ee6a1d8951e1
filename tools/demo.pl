#!/usr/bin/perl
# tools/demo.pl BUILDDIR — run by `tools/dev demo`.
#
# Starts the local stack (PostgreSQL, Redis, a Kafka-protocol broker) on
# loopback in a temporary directory, the provider simulator and callorchd
# with a generated config; posts a batch of sample calls (some to repeated
# numbers, some that the simulator fails), shows their progress live until
# they settle, then keeps serving with curl commands to try.  Ctrl-C stops
# everything.
use strict;
use warnings;
use Time::HiRes qw(sleep time);
use CallorchTest;

$ENV{CALLORCH_BUILDDIR} = shift // die "usage: demo.pl BUILDDIR\n";
my $CALLS = $ENV{DEMO_CALLS} // 60;

my $stop = 0;
$SIG{INT} = $SIG{TERM} = sub { $stop = 1 };

my $s = CallorchTest->new;
print "starting PostgreSQL, Redis and the Kafka broker...\n";
$s->start_all;
$s->migrate;
# short calls so the demo settles in a minute; 70 % of attempts succeed,
# and with two attempts per call about one call in ten ends FAILED
$s->start_sim('--delay', '1s-4s', '--success-rate', '0.7', '--fail-5xx', '0.05');
$s->write_config(
    'daemon.log_level'              => 'info',
    'dispatch.max_concurrent_calls' => 5,
    'dispatch.max_attempts'         => 2,
    'dispatch.backoff_base'         => '2s',
    'dispatch.scheduler_interval'   => '200ms',
);
my $pid = $s->start_daemon;
my $base = $s->base_url;

print <<"EOT";

callorch demo (temporary directory ${\ $s->tmpdir })
  HTTP API      $base
  PostgreSQL    ${\ $s->pg_conninfo }
  Redis         127.0.0.1:${\ $s->redis_port }
  Kafka broker  ${\ $s->kafka_brokers }
  provider sim  http://127.0.0.1:${\ $s->provider_port }  (GET /stats)
  callorchd     master pid $pid, config ${\ $s->config_path }, log ${\ $s->tmpdir }/callorchd.log

posting $CALLS sample calls (a third of them to numbers used twice), cap 5 at once;
70 % of attempts succeed, a failed one is retried once...
EOT

for my $i (1 .. $CALLS) {
    my $n = $i % 3 == 0 ? $i - 1 : $i;    # every third call reuses a number
    $s->api(POST => '/api/v1/calls',
        { to => sprintf('+1555010%04d', $n), scriptId => 'demo-welcome',
          metadata => { campaign => 'demo', n => $i } });
}

my $t0 = time;
until ($stop) {
    my (undef, $m) = $s->api(GET => '/api/v1/metrics');
    last unless ref $m;
    printf "\r  %5.1fs  PENDING %3d  IN_PROGRESS %2d  COMPLETED %3d  FAILED %3d  slots %d/%d   ",
        time - $t0, @$m{qw(PENDING IN_PROGRESS COMPLETED FAILED)}, $m->{inFlight} // 0,
        $m->{maxConcurrent};
    last if $m->{PENDING} + $m->{IN_PROGRESS} == 0;
    sleep 0.5;
}
my $sim = eval { $s->sim_stats } || {};
printf "\n\nsettled; the provider saw at most %s calls at once and %s at once for one number.\n",
    $sim->{maxInProgress} // '?', $sim->{maxPerPhone} // '?';

print <<"EOT" unless $stop;

callorchd keeps serving.  Try:
  curl -s $base/api/v1/metrics
  curl -s '$base/api/v1/calls?pageSize=3'
  curl -s -XPOST $base/api/v1/calls -H 'Content-Type: application/json' \\
       -d '{"to":"+15551234567","scriptId":"welcome-flow","metadata":{"campaign":"try"}}'
  curl -s $base/metrics | grep ^callorch_calls
  ${\ CallorchTest::builddir() }/src/callorchctl -c ${\ $s->config_path } status
Ctrl-C stops everything.
EOT

sleep 0.5 until $stop || !kill 0, $pid;
print "\nstopping callorchd and the stack...\n";
$s->stop_daemon;
