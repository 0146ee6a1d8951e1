#!/usr/bin/perl
# tools/demo.pl BUILDDIR — run by `tools/dev demo`.
#
# Starts the local stack (PostgreSQL, Redis, a Kafka-protocol broker) on
# loopback in a temporary directory, the provider simulator and callorchd
# with a generated config; posts a batch of sample calls (some to repeated
# numbers, some that the simulator fails), shows their progress live until
# they settle, shows a held and a suppressed call, runs a small campaign
# with client events to a local receiver, then keeps serving with curl
# commands to try.  Ctrl-C stops everything.
use strict;
use warnings;
use Time::HiRes qw(sleep time);
use CallorchTest;
use CallorchReceiver;

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
# a local receiver for the client events (DESIGN.md section 10)
my $rcv = CallorchReceiver->start($s->tmpdir . '/events.jsonl');
$s->write_config(
    'events.url'                    => $rcv->url . '/events',
    'events.secret'                 => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', # the demo's own
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

# Who may be called, and when (README): one call outside its calling hours
# (its own window, in UTC, opens in three hours) is held; one to a number
# listed on the do-not-call list after it was created ends SUPPRESSED.
my @now = gmtime(time + 3 * 3600);
my $open = sprintf '%02d:00', $now[2];
my $close = sprintf '%02d:00', ($now[2] + 1) % 24;
my (undef, $held) = $s->api(POST => '/api/v1/calls',
    { to => '+15550190001', scriptId => 'demo-welcome', timezone => 'UTC',
      callingWindow => { start => $open, end => $close } });
my $soon = CallorchTest::rfc3339(time + 3);
my (undef, $late) = $s->api(POST => '/api/v1/calls',
    { to => '+15550190002', scriptId => 'demo-welcome', notBefore => $soon });
$s->api(PUT => '/api/v1/dnc/+15550190002', { reason => 'asked not to be called' });
printf "a call outside its calling hours (%s-%s UTC) is held: holdReason %s, nextAttemptAt %s\n",
    $open, $close, $held->{holdReason} // '?', $held->{nextAttemptAt} // '?';
print "a call to +15550190002, listed on the do-not-call list after it was created, waits for its notBefore...\n";

my $t0 = time;
until ($stop) {
    my (undef, $m) = $s->api(GET => '/api/v1/metrics');
    last unless ref $m;
    printf "\r  %5.1fs  PENDING %3d  IN_PROGRESS %2d  COMPLETED %3d  FAILED %3d  SUPPRESSED %d  slots %d/%d   ",
        time - $t0, @$m{qw(PENDING IN_PROGRESS COMPLETED FAILED SUPPRESSED)}, $m->{inFlight} // 0,
        $m->{maxConcurrent};
    last if $m->{PENDING} == 1 && $m->{IN_PROGRESS} == 0 && $m->{SUPPRESSED} == 1;
    sleep 0.5;
}
my (undef, $h) = $s->api(GET => "/api/v1/calls/$held->{id}");
my (undef, $x) = $s->api(GET => "/api/v1/calls/$late->{id}");
printf "\n\nthe held call is still %s (holdReason %s); the listed number's call ended %s (%s).\n",
    $h->{status} // '?', $h->{holdReason} // '?', $x->{status} // '?', $x->{lastError} // '?';
my $sim = eval { $s->sim_stats } || {};
printf "settled; the provider saw at most %s calls at once and %s at once for one number.\n",
    $sim->{maxInProgress} // '?', $sim->{maxPerPhone} // '?';

# A small campaign: 12 calls, at most 2 at once and 2 starts a second;
# its progress, then the client events its calls sent.
my (undef, $camp) = $s->api(POST => '/api/v1/campaigns',
    { name => 'demo-renewals', scriptId => 'demo-renewal', maxConcurrent => 2,
      callsPerSecond => 2, priority => 7, maxAttempts => 2,
      calls => [ map { { to => sprintf('+1555020%04d', $_), metadata => { n => $_ } } } 1 .. 12 ] });
printf "\ncampaign demo-renewals (%s): 12 calls, maxConcurrent 2, callsPerSecond 2\n",
    $camp->{id} // '?';
my $cs;
until ($stop || !ref $camp) {
    (undef, $cs) = $s->api(GET => "/api/v1/campaigns/$camp->{id}");
    last unless ref $cs;
    my $c = $cs->{counts} || {};
    printf "\r  campaign %-9s PENDING %2d  IN_PROGRESS %d  COMPLETED %2d  FAILED %2d   ",
        $cs->{status}, map { $c->{$_} // 0 } qw(PENDING IN_PROGRESS COMPLETED FAILED);
    last if $cs->{status} eq 'FINISHED';
    sleep 0.5;
}
my %types;
$s->wait_for(sub { grep { ($_->{json}{type} // '') eq 'campaign.finished' } $rcv->hooks },
    timeout => 20, soft => 1);
$types{ $_->{json}{type} // '?' }++ for $rcv->hooks;
printf "\ncampaign %s; client events received, signed: %s\n", $cs->{status} // '?',
    join(', ', map { "$_ $types{$_}" } sort keys %types);

print <<"EOT" unless $stop;

callorchd keeps serving.  Try:
  curl -s $base/api/v1/metrics
  curl -s '$base/api/v1/calls?pageSize=3'
  curl -s -XPOST $base/api/v1/calls -H 'Content-Type: application/json' \\
       -d '{"to":"+15551234567","scriptId":"welcome-flow","metadata":{"campaign":"try"}}'
  curl -s $base/metrics | grep ^callorch_calls
  ${\ CallorchTest::builddir() }/src/callorchctl -c ${\ $s->config_path } status
  ${\ CallorchTest::builddir() }/src/callorchctl -c ${\ $s->config_path } campaigns
  curl -s $base/api/v1/calls/<id>/events
Ctrl-C stops everything.
EOT

sleep 0.5 until $stop || !kill 0, $pid;
print "\nstopping callorchd and the stack...\n";
$s->stop_daemon;
