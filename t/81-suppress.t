#!/usr/bin/perl
# SUPPRESSED and the OPT_OUT disposition (DESIGN.md sections 4 and 9), on
# the real stack (PostgreSQL, Redis, Kafka, simulator, callorchd):
#
#  a) calls pending for a number that is put on the do-not-call list
#     afterwards (created while dispatch is paused, listed, then resumed)
#     end SUPPRESSED without being dialled: the simulator started none of
#     them, no attempt is recorded, no slot or phone lock is left in Redis,
#     /api/v1/metrics and /metrics count them; the start statement itself
#     (start_attempt()) suppresses a listed call when the list changed
#     after the dispatcher's load;
#  b) the simulator answers a number COMPLETED with "disposition":"OPT_OUT":
#     the call ends COMPLETED, the number is listed with source
#     "opt-out:<call id>", and the number's other pending call (made while
#     the first was in progress: one call per number at a time) ends
#     SUPPRESSED without being dialled;
#  c) a webhook's disposition other than "OPT_OUT" or null is a 400 naming
#     "disposition", and changes nothing; an OPT_OUT with FAILED suppresses
#     the call's own planned retry;
#  d) GET /api/v1/calls?status=SUPPRESSED lists them.
use strict;
use warnings;
use Digest::SHA qw(hmac_sha256);
use HTTP::Tiny;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Test::More;
use Time::HiRes qw(time);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new(phone_base => 8_100_000);
$s->start_all;
$s->migrate;

my $A = '+15558100101';      # a) listed while its calls are pending
my $B = '+15558100102';      # a) not listed: dialled
my $O = '+15558100201';      # b) opts out during its first call
$s->start_sim('--delay', '3s', '--success-rate', '1', '--seed', '81',
    '--outcome', "$O=COMPLETED,opt-out");
$s->write_config(
    'dispatch.max_concurrent_calls' => 5,
    'dispatch.max_attempts'         => 2,
    'dispatch.backoff_base'         => '30s',
    'dispatch.backoff_max'          => '1m',
    'dispatch.scheduler_interval'   => '200ms',
);
$s->start_daemon;

sub ctl { return $s->ctl_ok(@_) }

sub post { return $s->post_call_ok(@_) }

sub get_call { return $s->get_call(@_) }

sub wait_status {
    my ($id, $want, $timeout, $what) = @_;
    my $c;
    my $ok = $s->wait_for(sub { $c = get_call($id); $c && $c->{status} eq $want },
        timeout => $timeout, interval => 0.2, soft => 1);
    ok($ok, "$what: $want") or diag explain $c;
    return $c;
}

sub gauge {
    my ($name) = @_;
    my $text = HTTP::Tiny->new->get($s->base_url . '/metrics')->{content} // '';
    return $text =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

# ============================================ a) listed while pending ===
ctl('pause');
my @a = map { post($A, "sup-a-$_") } 1 .. 2;
my $b = post($B, 'sup-b');
my ($st, $e) = $s->api(PUT => "/api/v1/dnc/$A", { reason => 'listed after the calls' });
is($st, 201, "PUT $A on the list while its calls are pending");
is(get_call($_->{id})->{status}, 'PENDING', 'a: still PENDING while paused') for @a;
ctl('resume');

my @sup = map { wait_status($_->{id}, 'SUPPRESSED', 30, "a: call $_->{scriptId}") } @a;
wait_status($b->{id}, 'COMPLETED', 30, 'a: the unlisted number is dialled');
for my $c (@sup) {
    is($c->{attempts}, 0, "a: $c->{scriptId}: no attempt counted");
    is_deeply($c->{attemptLog}, [], "a: $c->{scriptId}: no attempt recorded (nothing was dialled)");
    like($c->{lastError} // '', qr/do-not-call list/, "a: $c->{scriptId}: lastError says why");
    ok(defined $c->{endedAt}, "a: $c->{scriptId}: endedAt set");
    is($c->{startedAt}, undef, "a: $c->{scriptId}: never started");
}
my $stats = $s->sim_stats;
is($stats->{started}, 1, 'a: the simulator started only the unlisted call');
is($s->redis_cli('EXISTS', "callorch:phone:$A"), '0', 'a: no phone lock left for the listed number');
my $in_flight;
ok($s->wait_for(sub { (undef, my $m) = $s->api(GET => '/api/v1/metrics');
                      $in_flight = ref $m ? $m->{inFlight} : undef;
                      defined $in_flight && $in_flight == 0 }, timeout => 20, soft => 1),
    'a: no slot held afterwards') or diag("inFlight " . ($in_flight // 'null'));
my ($mst, $m) = $s->api(GET => '/api/v1/metrics');
is($m->{SUPPRESSED}, 2, '/api/v1/metrics: SUPPRESSED 2');
is($m->{COMPLETED}, 1, '/api/v1/metrics: COMPLETED 1');
is(gauge('callorch_calls{status="SUPPRESSED"}'), 2, '/metrics: callorch_calls{status="SUPPRESSED"} 2');
cmp_ok(gauge('callorch_dispatch_total{outcome="suppressed"}') // 0, '>=', 2,
    '/metrics: callorch_dispatch_total{outcome="suppressed"} counts them');
like($s->log_text, qr/msg="call suppressed: number on the do-not-call list".*checked=load/,
    'a: the dispatcher suppressed at load, before taking a slot');

# The start statement itself: the list changed after the dispatcher's load.
# Dispatch is paused meanwhile, so that the dispatcher does not suppress
# the call first (the scheduler publishes it).
ctl('pause');
{
    my $r;
    my $id2 = $s->psql("INSERT INTO calls (to_number, script_id, max_attempts)"
        . " VALUES ('+15558100302', 'sup-start', 2) RETURNING id");
    $s->psql("INSERT INTO dnc (number, source) VALUES ('+15558100302', 'api')");
    $r = $s->psql("SELECT status || '/' || coalesce(script_id, 'null')"
        . " FROM start_attempt('$id2', 1, '+15558100302', 'tok')");
    is($r, 'SUPPRESSED/null', 'start_attempt(): a listed call is suppressed instead');
    is($s->psql("SELECT status || ' ' || attempts || ' ' || (ended_at IS NOT NULL)"
        . " || ' ' || coalesce(slot_owner, '-') FROM calls WHERE id = '$id2'"),
        'SUPPRESSED 0 true -', '... ended, no attempt, no lease token');
    is($s->psql("SELECT count(*) FROM call_attempts WHERE call_id = '$id2'"), 0,
        '... and no attempt row');
    $r = $s->psql("SELECT count(*) FROM start_attempt('$id2', 1, '+15558100302', 'tok')");
    is($r, 0, 'start_attempt() again: a SUPPRESSED call is final');
    $s->psql("DELETE FROM calls WHERE script_id = 'sup-start'");
}
ctl('resume');

# =================================================== b) an opt-out ===
my $o1 = post($O, 'sup-o-1');
my $c = wait_status($o1->{id}, 'IN_PROGRESS', 30, 'b: the first call to the number');
my $started_before = $s->sim_stats->{started};
my $o2 = post($O, 'sup-o-2');
is(get_call($o2->{id})->{status}, 'PENDING', 'b: a second call to the number waits (one at a time)');
$c = wait_status($o1->{id}, 'COMPLETED', 30, 'b: the opted-out call itself');
my $c2 = wait_status($o2->{id}, 'SUPPRESSED', 10, 'b: the number\'s other pending call');
like($c2->{lastError} // '', qr/opted out during call \Q$o1->{id}\E/, 'b: its lastError names the call');
is_deeply($c2->{attemptLog}, [], 'b: it was never dialled');
($st, $e) = $s->api(GET => "/api/v1/dnc/$O");
is($st, 200, 'b: the number is on the do-not-call list');
is($e->{source}, "opt-out:$o1->{id}", 'b: source "opt-out:<call id>"');
sleep 1;    # the scheduler would have republished the pending call by now
$stats = $s->sim_stats;
is($stats->{started}, $started_before, 'b: the simulator started nothing more');
is($stats->{optOuts}, 1, 'b: the simulator sent one OPT_OUT');
($st, $e) = $s->api(POST => '/api/v1/calls', { to => $O, scriptId => 'sup-o-3' });
is($st, 422, 'b: a new call to the opted-out number is refused');

# ============================================= c) hand-played webhooks ===
my $seq = 0;
sub webhook {
    my ($body) = @_;
    my $json = JSON::PP->new->utf8->canonical->encode($body);
    my $id = sprintf 'msg_t81_%d_%d', $$, ++$seq;
    my $ts = int(time);
    my $sig = 'v1,' . encode_base64(hmac_sha256("$id.$ts.$json", CallorchTest::callback_key()), '');
    return $s->api(POST => '/api/v1/callbacks/call-status', $json,
        { Authorization => undef, 'webhook-id' => $id, 'webhook-timestamp' => $ts,
          'webhook-signature' => $sig });
}

my %wh = (callId => $c->{externalCallId}, reference => "$o1->{id}:1", status => 'COMPLETED');
for my $bad ('MAYBE', 'opt_out', 42, [], {}) {
    my ($wst, $wb, $wh) = webhook({ %wh, disposition => $bad });
    CallorchTest::problem_ok($wst, $wb, $wh, 400, 'a webhook with disposition '
        . (ref $bad ? JSON::PP->new->encode($bad) : $bad), fields => ['disposition']);
}
my ($wst, $wb, $whh) = webhook({ %wh, status => 'SOMETHING', disposition => 'OPT_OUT' });
CallorchTest::problem_ok($wst, $wb, $whh, 400, 'OPT_OUT with an unknown status', fields => ['status']);
($wst, $wb) = webhook({ %wh, disposition => undef });
is($wst, 200, 'a late webhook with disposition null: 200');

# OPT_OUT with FAILED: the call's own retry is suppressed too.  A
# dropping simulator keeps the call IN_PROGRESS for the test to answer.
my $P = '+15558100401';
$s->stop_daemon;
$s->stop_sim;
$s->start_sim('--drop', '1', '--delay', '0');
$s->start_daemon;
my $p1 = post($P, 'sup-p-1');
my $pc = wait_status($p1->{id}, 'IN_PROGRESS', 30, 'c: a call the test will answer');
$s->wait_for(sub { $pc = get_call($p1->{id}); defined $pc->{externalCallId} }, timeout => 10);
($wst, $wb) = webhook({ callId => $pc->{externalCallId}, reference => "$p1->{id}:1",
    status => 'FAILED', disposition => 'OPT_OUT' });
is($wst, 200, 'c: FAILED + OPT_OUT: 200');
$pc = get_call($p1->{id});
is($pc->{status}, 'SUPPRESSED', 'c: no retry of an opted-out call: SUPPRESSED (max_attempts is 2)');
is($pc->{attemptLog}[0]{outcome}, 'FAILED', 'c: the attempt is recorded FAILED');
($st, $e) = $s->api(GET => "/api/v1/dnc/$P");
is($e->{source}, "opt-out:$p1->{id}", 'c: listed by the opt-out');

# =============================================== d) the list filter ===
my ($lst, $l) = $s->api(GET => '/api/v1/calls?status=SUPPRESSED');
is($lst, 200, 'GET /api/v1/calls?status=SUPPRESSED: 200');
is($l->{total}, 4, '... total 4');
is_deeply([ sort map { $_->{id} } @{ $l->{data} } ],
    [ sort map { $_->{id} } @a, $o2, $p1 ], '... exactly the suppressed calls');
ok(!(grep { $_->{status} ne 'SUPPRESSED' } @{ $l->{data} }), '... nothing else');
($lst, $l, my $lh) = $s->api(GET => '/api/v1/calls?status=suppressed');
CallorchTest::problem_ok($lst, $l, $lh, 400, '?status=suppressed (case matters)', fields => ['status']);
like($l->{errors}[0]{message} // '', qr/SUPPRESSED/, '... the message lists SUPPRESSED');

is($s->psql("SELECT count(*) FROM call_attempts WHERE ended_at IS NULL"), 0, 'every attempt ended');
is($s->stop_daemon, 0, 'clean stop');
done_testing;
