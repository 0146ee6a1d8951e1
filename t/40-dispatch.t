#!/usr/bin/perl
# The whole path on the real stack: 300 calls over 200 phone numbers (100
# numbers used twice) with a cap of 5, through Kafka, Redis and the
# provider simulator, until every call is settled.  The simulator measures
# what reached the provider: never more than 5 calls at once, never two at
# once for one number, never an attempt started twice.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new;
$s->start_all;
$s->migrate;
$s->start_sim('--delay', '20ms-150ms', '--success-rate', '0.7', '--seed', '42');
$s->write_config(
    'dispatch.max_concurrent_calls' => 5,
    'dispatch.max_attempts'         => 3,
    'dispatch.backoff_base'         => '200ms',
    'dispatch.backoff_max'          => '1s',
    'dispatch.scheduler_interval'   => '100ms',
);
$s->start_daemon;

my @phones = map { sprintf '+1555%07d', $_ } 1 .. 200;
my @to = (@phones, @phones[0 .. 99]);
my $t0 = time;
my $created = 0;
for my $i (0 .. $#to) {
    my ($st) = $s->api(POST => '/api/v1/calls', { to => $to[$i], scriptId => "flow-$i" });
    $created++ if $st == 201;
}
is($created, 300, '300 calls accepted');

my $done = $s->wait_for(sub {
    $s->psql("SELECT count(*) FROM calls WHERE status NOT IN ('COMPLETED', 'FAILED')") == 0
}, timeout => 240, interval => 0.5, what => 'every call settled', soft => 1);
ok($done, sprintf('every call ended COMPLETED or FAILED (%.1fs)', time - $t0));
diag($s->psql("SELECT status, count(*) FROM calls GROUP BY status ORDER BY 1"));

my $st = $s->sim_stats;
diag("simulator: started=$st->{started} maxInProgress=$st->{maxInProgress} "
    . "maxPerPhone=$st->{maxPerPhone} webhooksSent=$st->{webhooksSent} "
    . "duplicateStarts=$st->{duplicateStarts}");
cmp_ok($st->{maxInProgress}, '<=', 5, 'the provider never had more than 5 calls at once');
cmp_ok($st->{maxInProgress}, '>=', 2, 'calls did run concurrently');
cmp_ok($st->{maxPerPhone}, '<=', 1, 'never two calls at once for one number');
is($st->{duplicateStarts}, 0, 'no attempt was started twice at the provider');

my $attempts = $s->psql('SELECT count(*) FROM call_attempts');
is($st->{started}, $attempts, "provider starts ($st->{started}) = attempts recorded ($attempts)");
is($s->psql('SELECT count(*) FROM calls WHERE attempts > max_attempts'), 0,
    'no call made more than max_attempts attempts');
is($s->psql('SELECT count(*) FROM calls c WHERE attempts <> '
        . '(SELECT count(*) FROM call_attempts a WHERE a.call_id = c.id)'), 0,
    'each call has one attempt row per attempt');
is($s->psql("SELECT count(*) FROM call_attempts WHERE ended_at IS NULL"), 0,
    'every attempt ended');
is($s->psql("SELECT count(*) FROM calls WHERE status = 'COMPLETED' AND external_call_id IS NULL"),
    0, 'completed calls carry the provider call id');
is($s->psql("SELECT count(*) FROM calls WHERE status = 'FAILED' AND last_error IS NULL"), 0,
    'failed calls say why');
cmp_ok($s->psql("SELECT count(*) FROM calls WHERE attempts > 1"), '>', 0,
    'some calls were retried after a failed attempt');
is($s->psql("SELECT count(*) FROM calls WHERE status = 'FAILED' AND attempts < max_attempts"), 0,
    'a call fails only after max_attempts attempts');

# retries waited for their backoff: >= 0.8 x 200 ms after the previous attempt ended
is($s->psql(q{SELECT count(*) FROM call_attempts a JOIN call_attempts b
                ON b.call_id = a.call_id AND b.attempt = a.attempt + 1
               WHERE b.started_at < a.ended_at + interval '160 ms'}), 0,
    'every retry started after its backoff');

my ($code, $m) = $s->api(GET => '/api/v1/metrics');
is($m->{inFlight}, 0, 'no slot is held once everything settled');
is($m->{COMPLETED} + $m->{FAILED}, 300, '/api/v1/metrics counts the settled calls');

is($s->stop_daemon, 0, 'clean stop');
done_testing;
