#!/usr/bin/perl
# Each outcome's retry rule (DESIGN.md section 9, "Outcomes", and [retry]),
# on the real stack (PostgreSQL, Redis, Kafka, simulator, callorchd):
#
#  a) with [retry] busy = 2s, voicemail = never, no_answer = backoff and
#     rejected / invalid_number at their defaults (never), the simulator
#     forces an outcome per number: a BUSY call is retried 2 s after its
#     attempt ended (nextAttemptAt - endedAt in [2 s, 3 s), no jitter), up
#     to max_attempts; a NO_ANSWER call by the backoff of [dispatch]
#     (backoff_base x 2^(attempt-1), jitter downwards); VOICEMAIL, REJECTED
#     and INVALID_NUMBER end FAILED after one attempt with attempts left,
#     lastError naming the outcome; every attempt's attemptLog outcome is
#     the status the provider sent;
#  b) a webhook with status "ANSWERING_MACHINE" is a 400 naming "status";
#  c) after a reload (SIGHUP) to [retry] timeout = never and a short
#     call_timeout, a call whose webhook never comes (the simulator drops
#     it) is reclaimed once and ends FAILED after one attempt, its attempt's
#     outcome TIMEOUT: the rule is read from the running configuration;
#  d) with [provider] status_url, answers lost and webhooks dropped, the
#     status lookup's final VOICEMAIL and BUSY settle by the same rules.
use strict;
use warnings;
use Digest::SHA qw(hmac_sha256);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new(phone_base => 8_600_000);
$s->start_all;
$s->migrate;

my %NUM = (
    BUSY           => '+15558600101',
    NO_ANSWER      => '+15558600102',
    VOICEMAIL      => '+15558600103',
    REJECTED       => '+15558600104',
    INVALID_NUMBER => '+15558600105',
);
$s->start_sim('--delay', '0', '--seed', '86',
    map { ('--outcome', "$NUM{$_}=$_") } sort keys %NUM);
my %config = (
    'dispatch.max_concurrent_calls' => 10,
    'dispatch.max_attempts'         => 3,
    'dispatch.backoff_base'         => '3s',
    'dispatch.backoff_max'          => '1m',
    'dispatch.scheduler_interval'   => '200ms',
    'retry.busy'                    => '2s',
    'retry.voicemail'               => 'never',
    'retry.no_answer'               => 'backoff',
    # rejected and invalid_number: not set, their defaults (never)
);
$s->write_config(%config);
$s->start_daemon;

sub get_call {
    my ($id) = @_;
    my ($st, $c) = $s->api(GET => "/api/v1/calls/$id");
    return $st == 200 ? $c : undef;
}

sub post {
    my ($to, $script) = @_;
    my ($st, $c) = $s->api(POST => '/api/v1/calls', { to => $to, scriptId => $script });
    is($st, 201, "POST a call to $to ($script)") or diag explain $c;
    return $c;
}

sub wait_call {
    my ($id, $what, $cond, $timeout) = @_;
    my $c;
    my $ok = $s->wait_for(sub { $c = get_call($id); $c && $cond->($c) },
        timeout => $timeout // 60, interval => 0.1, soft => 1);
    ok($ok, $what) or diag explain $c;
    return $c;
}

sub gap {
    my ($later, $earlier) = @_;
    return CallorchTest::epoch($later) - CallorchTest::epoch($earlier);
}

# ================================================ a) the outcomes' rules ===
my %call = map { $_ => post($NUM{$_}, "retry-" . lc $_) } sort keys %NUM;

# BUSY, attempt 1: PENDING again, due exactly 2 s after the attempt ended.
my $busy = wait_call($call{BUSY}{id}, 'BUSY: PENDING after attempt 1',
    sub { $_[0]{status} eq 'PENDING' && $_[0]{attempts} == 1 });
{
    my $d = gap($busy->{nextAttemptAt}, $busy->{attemptLog}[0]{endedAt});
    ok($d >= 2 && $d < 3, "BUSY: nextAttemptAt - endedAt in [2 s, 3 s) ($d s)");
    is($busy->{lastError}, 'provider reported BUSY', 'BUSY: lastError');
}

# NO_ANSWER, attempt 1: the backoff, 3 s x 2^0 with jitter down to 80 %.
my $na = wait_call($call{NO_ANSWER}{id}, 'NO_ANSWER: PENDING after attempt 1',
    sub { $_[0]{status} eq 'PENDING' && $_[0]{attempts} == 1 });
{
    my $d = gap($na->{nextAttemptAt}, $na->{attemptLog}[0]{endedAt});
    ok($d >= 2.4 - 0.002 && $d <= 3 + 0.002, "NO_ANSWER: backoff 3 s -20 % ($d s)");
}

# never: FAILED after one attempt although two remain.
for my $st (qw(VOICEMAIL REJECTED INVALID_NUMBER)) {
    my $c = wait_call($call{$st}{id}, "$st: ended", sub { $_[0]{status} ne 'PENDING'
            && $_[0]{status} ne 'IN_PROGRESS' });
    is($c->{status}, 'FAILED', "$st: FAILED");
    is($c->{attempts}, 1, "$st: after one attempt (max_attempts 3)");
    is($c->{lastError}, "provider reported $st", "$st: lastError names the outcome");
    ok(!defined $c->{nextAttemptAt}, "$st: no retry planned");
    ok(defined $c->{endedAt}, "$st: endedAt set");
    is_deeply([ map { $_->{outcome} } @{ $c->{attemptLog} } ], [$st], "$st: attemptLog outcome");
}

# BUSY and NO_ANSWER run out of attempts: FAILED after 3, each retry started
# no earlier than its rule allowed.
for my $st (qw(BUSY NO_ANSWER)) {
    my $c = wait_call($call{$st}{id}, "$st: FAILED after max_attempts",
        sub { $_[0]{status} eq 'FAILED' }, 90);
    is($c->{attempts}, 3, "$st: three attempts");
    is_deeply([ map { $_->{outcome} } @{ $c->{attemptLog} } ], [ ($st) x 3 ],
        "$st: every attempt's outcome is $st");
    my @log = @{ $c->{attemptLog} };
    for my $i (1 .. $#log) {
        my $d = gap($log[$i]{startedAt}, $log[ $i - 1 ]{endedAt});
        my $min = $st eq 'BUSY' ? 2 : 3 * 2**($i - 1) * 0.8;
        ok($d >= $min - 0.002, sprintf '%s: attempt %d started %.2f s after attempt %d ended (>= %.1f)',
            $st, $i + 1, $d, $i, $min);
    }
}
my $stats = $s->sim_stats;
is($stats->{started}, 3 + 3 + 1 + 1 + 1, 'the simulator started 9 calls: 3 BUSY, 3 NO_ANSWER, 1 each other');

# ===================================== a2) a campaign's own retry rules ===
# Over [retry] (busy = 2s, voicemail = never): the campaign says busy = 4s
# and voicemail = backoff (sql/020_campaign_retry.sql).
{
    my ($st, $k) = $s->api(POST => '/api/v1/campaigns', {
        name => 't86', scriptId => 'retry-campaign', maxAttempts => 2,
        retry => { busy => '4s', voicemail => 'backoff' },
        calls => [ { to => $NUM{BUSY} }, { to => $NUM{VOICEMAIL} } ] });
    is($st, 201, 'a campaign with its own retry rules: 201') or diag explain $k;
    my $ids = $s->psql("SELECT string_agg(id::text || '=' || to_number, ',') FROM calls"
        . " WHERE campaign_id = '$k->{id}'");
    my %by = reverse map { split /=/ } split /,/, $ids;
    my $b = wait_call($by{ $NUM{BUSY} }, 'campaign BUSY: PENDING after attempt 1',
        sub { $_[0]{status} eq 'PENDING' && $_[0]{attempts} == 1 && $_[0]{nextAttemptAt} });
    my $d = gap($b->{nextAttemptAt}, $b->{attemptLog}[0]{endedAt});
    ok($d >= 4 && $d < 5, "campaign BUSY: its 4 s, not [retry]'s 2 s ($d s)");
    my $v = wait_call($by{ $NUM{VOICEMAIL} }, 'campaign VOICEMAIL: PENDING after attempt 1 (backoff, not never)',
        sub { $_[0]{status} eq 'PENDING' && $_[0]{attempts} == 1 && $_[0]{nextAttemptAt} });
    $d = gap($v->{nextAttemptAt}, $v->{attemptLog}[0]{endedAt});
    ok($d >= 3 * 0.8 - 0.002 && $d <= 3.002, "campaign VOICEMAIL: the backoff, 3 s with jitter ($d s)");
    for my $c ($b, $v) {
        wait_call($c->{id}, "campaign $c->{to}: FAILED after its 2 attempts",
            sub { $_[0]{status} eq 'FAILED' && $_[0]{attempts} == 2 });
    }
}

# ================================================ b) an unknown outcome ===
{
    my $c = get_call($call{REJECTED}{id});
    my $body = JSON::PP->new->utf8->canonical->encode({
        callId => $c->{externalCallId}, reference => "$c->{id}:1", status => 'ANSWERING_MACHINE' });
    my $id = "msg_t86_$$";
    my $ts = int(time);
    my $sig = 'v1,' . encode_base64(hmac_sha256("$id.$ts.$body", CallorchTest::callback_key()), '');
    my ($st, $p) = $s->api(POST => '/api/v1/callbacks/call-status', $body,
        { Authorization => undef, 'webhook-id' => $id, 'webhook-timestamp' => $ts,
          'webhook-signature' => $sig });
    is($st, 400, 'status ANSWERING_MACHINE: 400');
    my ($e) = grep { ($_->{field} // '') eq 'status' } @{ ref $p && $p->{errors} || [] };
    ok($e, 'the 400 names "status"') or diag explain $p;
    like($e && $e->{message}, qr/VOICEMAIL, REJECTED, INVALID_NUMBER/, 'and lists the allowed statuses');
    is_deeply(get_call($c->{id}), $c, 'the call is unchanged');
}

# ============================================== c) timeout = never, reload ===
# The simulator starts calls and never sends their webhook.
$s->restart_sim('--delay', '0', '--drop', '1', '--seed', '87');
$s->write_config(%config, 'retry.timeout' => 'never', 'dispatch.call_timeout' => '2s');
kill 'HUP', $s->daemon_pid;
ok($s->wait_for(sub { $s->log_text =~ /configuration reloaded.*generation=2/ },
        timeout => 20, soft => 1), 'reloaded: timeout = never, call_timeout = 2s');
my $t = post('+15558600201', 'retry-timeout');
my $tc = wait_call($t->{id}, 'TIMEOUT: the call ended', sub { $_[0]{status} eq 'FAILED' }, 60);
is($tc->{attempts}, 1, 'TIMEOUT: after one attempt (max_attempts 3)');
is_deeply([ map { $_->{outcome} } @{ $tc->{attemptLog} } ], ['TIMEOUT'], 'TIMEOUT: attemptLog outcome');
like($tc->{lastError} // '', qr/timed out/, 'TIMEOUT: lastError says it timed out');
ok(!defined $tc->{nextAttemptAt}, 'TIMEOUT: no retry planned');
is($s->sim_stats->{started}, 1, 'the simulator started it once');
like($s->log_text, qr/call reclaimed: no webhook within call_timeout.*call=\Q$t->{id}\E.*status=FAILED/,
    'the reclaim logged it FAILED');

# ======================================= d) a status lookup's final status ===
# The answers to the start requests are lost and the webhooks dropped: only
# the status lookup learns how the calls ended, and settles them by the
# same rules (lookup.c).
my %LK = (VOICEMAIL => '+15558600301', BUSY => '+15558600302');
$s->stop_daemon;
$s->restart_sim('--delay', '0', '--drop', '1', '--lose-answer', '1', '--seed', '88',
    map { ('--outcome', "$LK{$_}=$_") } sort keys %LK);
$s->write_config(%config,
    'provider.status_url'   => 'http://127.0.0.1:' . $s->provider_port . '/api/v1/calls?reference={reference}',
    'provider.timeout'      => '2s',
    'dispatch.call_timeout' => '60s');
$s->start_daemon;
my %lk = map { $_ => post($LK{$_}, 'retry-lookup-' . lc $_) } sort keys %LK;
# Both calls are watched in one loop: the BUSY call is PENDING for only its
# 2 s of backoff, and waiting for the VOICEMAIL call first could miss it.
my ($lv, $lb);
$s->wait_for(sub {
    my $v = $lv ? undef : get_call($lk{VOICEMAIL}{id});
    $lv = $v if $v && $v->{status} eq 'FAILED';
    my $b = $lb ? undef : get_call($lk{BUSY}{id});
    $lb = $b if $b && $b->{status} eq 'PENDING' && $b->{attempts} == 1;
    return $lv && $lb;
}, timeout => 60, interval => 0.1, soft => 1);
ok($lv, 'lookup VOICEMAIL: ended');
is($lv && $lv->{attempts}, 1, 'lookup VOICEMAIL (never): FAILED after one attempt');
is_deeply([ map { $_->{outcome} } @{ $lv ? $lv->{attemptLog} : [] } ], ['VOICEMAIL'],
    'lookup VOICEMAIL: attemptLog outcome');
is($lv && $lv->{lastError}, 'provider reported VOICEMAIL', 'lookup VOICEMAIL: lastError');
ok($lb, 'lookup BUSY: PENDING after attempt 1') or diag explain get_call($lk{BUSY}{id});
$lb //= { attemptLog => [ {} ] };
{
    my $d = gap($lb->{nextAttemptAt}, $lb->{attemptLog}[0]{endedAt});
    ok($d >= 2 && $d < 3, "lookup BUSY: nextAttemptAt - endedAt in [2 s, 3 s) ($d s)");
    is($lb->{attemptLog}[0]{outcome}, 'BUSY', 'lookup BUSY: attemptLog outcome');
}
like($s->log_text, qr/settled by a status lookup.*call=\Q$lk{VOICEMAIL}{id}\E.*status=FAILED/,
    'the lookup logged the VOICEMAIL call FAILED');

done_testing();
