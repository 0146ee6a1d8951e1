#!/usr/bin/perl
# Provider faults on the real stack (DESIGN.md section 3 step 3): 5xx and
# 429 (with Retry-After) are retried with exponential backoff until
# max_attempts, a hanging provider is an unknown outcome (kept, looked up,
# reclaimed at call_timeout and then retried), a refused connection is
# retried, and a 4xx other than 429 fails the call after
# one attempt.  Each case checks the
# attempt log, lastError, the spacing of the attempts and that the slot is
# released; one case checks that nextAttemptAt shows while a retry waits.
#
# One PostgreSQL/Redis/Kafka stack; the daemon and the simulator are
# restarted with other settings for each scenario.  Timing is only checked
# as lower bounds: settle_attempt() sets ended_at and next_attempt_at from
# one now(), and a call only starts once due_at <= now(), so the spacing of
# two attempts is at least the backoff however loaded the machine is.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use CallorchScenario;
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new(phone_base => 2_000_000);
$s->start_all;
$s->migrate;

# Restart daemon and simulator (CallorchScenario::start): a fresh config
# from the common settings plus OVERRIDES, and the simulator with SIM_ARGS.
my %common = (
    'dispatch.scheduler_interval' => '100ms',
    'dispatch.max_concurrent_calls' => 2,
    'dispatch.call_timeout' => '10m',
);
my $sc = CallorchScenario->new($s);
sub scenario {
    my ($sim_args, %ovr) = @_;
    return $sc->start($sim_args, %common, %ovr);
}

sub create_calls {
    my ($n, $label) = @_;
    my @ids;
    (my $script = $label) =~ s/[^A-Za-z0-9._:-]/-/g;
    for my $i (1 .. $n) {
        my ($st, $c) = $s->api(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => "$script-$i" });
        is($st, 201, "$label: call $i accepted") or diag explain $c;
        push @ids, $c->{id} if ref $c && $st == 201;
    }
    BAIL_OUT("$label: cannot create calls") unless @ids == $n;
    return @ids;
}

sub get_call {
    my ($id) = @_;
    my ($st, $c) = $s->api(GET => "/api/v1/calls/$id");
    return $st == 200 ? $c : undef;
}

sub wait_status {
    my ($ids, $status, $timeout, $what) = @_;
    my $list = join ',', map { "'$_'" } @$ids;
    my $ok = $s->wait_for(sub {
        $s->psql("SELECT count(*) FROM calls WHERE id IN ($list) AND status <> '$status'") == 0
    }, timeout => $timeout, interval => 0.2, soft => 1);
    ok($ok, $what) or diag($s->psql("SELECT id, status, attempts, last_error FROM calls WHERE id IN ($list)"));
    return $ok;
}

# inFlight of /api/v1/metrics drops to 0 (the releases are asynchronous).
sub slots_released {
    my ($label) = @_;
    my $m;
    my $ok = $s->wait_for(sub {
        (undef, $m) = $s->api(GET => '/api/v1/metrics');
        ref $m && defined $m->{inFlight} && $m->{inFlight} == 0;
    }, timeout => 20, interval => 0.2, soft => 1);
    ok($ok, "$label: every slot released (inFlight 0)") or diag explain $m;
    is($s->redis_cli('--scan', '--pattern', 'callorch:phone:*'), '', "$label: no phone lock left in Redis");
}

# Every consecutive pair of attempts of IDS: started_at(n+1) - ended_at(n)
# in ms, with n.
sub gaps {
    my (@ids) = @_;
    my $list = join ',', map { "'$_'" } @ids;
    my @rows = map { [ split /\|/ ] } split /\n/, $s->psql(qq{
        SELECT a.call_id, a.attempt,
               round(extract(epoch FROM b.started_at - a.ended_at) * 1000)
          FROM call_attempts a JOIN call_attempts b
            ON b.call_id = a.call_id AND b.attempt = a.attempt + 1
         WHERE a.call_id IN ($list) ORDER BY 1, 2});
    return @rows;
}

# The attempt log of a settled call: N entries numbered 1..N, each ended,
# with OUTCOME and an error matching ERROR_RE.
sub check_attempt_log {
    my ($c, $n, $outcome, $error_re, $label) = @_;
    my $log = $c->{attemptLog};
    is(ref $log, 'ARRAY', "$label: attemptLog is an array") or return;
    is(scalar @$log, $n, "$label: attemptLog has $n entries");
    is_deeply([ map { $_->{attempt} } @$log ], [ 1 .. $n ], "$label: attempts numbered 1..$n");
    is(scalar(grep { defined $_->{startedAt} && defined $_->{endedAt} } @$log), $n,
        "$label: every attempt has startedAt and endedAt");
    is(scalar(grep { ($_->{outcome} // '') eq $outcome } @$log), $n,
        "$label: every attempt's outcome is $outcome");
    is(scalar(grep { ($_->{error} // '') =~ $error_re } @$log), $n,
        "$label: every attempt's error matches $error_re");
    ok(!(grep { CallorchTest::epoch($_->{endedAt}) < CallorchTest::epoch($_->{startedAt}) } @$log),
        "$label: no attempt ended before it started");
}

# ------------------------------------------------------------ 5xx ---
{
    my $label = '5xx';
    my ($base, $max, $attempts) = (300, 1000, 4);    # ms; delays 300, 600, 1000 (capped)
    scenario([ '--fail-5xx', '1', '--seed', '1' ],
        'dispatch.max_attempts' => $attempts,
        'dispatch.backoff_base' => "${base}ms",
        'dispatch.backoff_max'  => "${max}ms");
    my $t0 = time;
    my @ids = create_calls(3, $label);
    wait_status(\@ids, 'FAILED', 90, "$label: all 3 calls end FAILED");
    diag(sprintf '%s: settled in %.1fs', $label, time - $t0);
    for my $id (@ids) {
        my $c = get_call($id);
        is($c->{attempts}, $attempts, "$label: $attempts attempts");
        is($c->{lastError}, 'provider answered 503', "$label: lastError says why");
        ok(defined $c->{endedAt}, "$label: endedAt set");
        ok(!defined $c->{nextAttemptAt}, "$label: no nextAttemptAt once FAILED");
        ok(!defined $c->{externalCallId}, "$label: no externalCallId (the provider never started it)");
        check_attempt_log($c, $attempts, 'PROVIDER_ERROR', qr/^provider answered 503$/, $label);
    }
    my @gaps = gaps(@ids);
    is(scalar @gaps, 3 * ($attempts - 1), "$label: every retry found");
    for my $g (@gaps) {
        my ($id, $n, $ms) = @$g;
        my $backoff = $base * 2**($n - 1);
        $backoff = $max if $backoff > $max;
        cmp_ok($ms, '>=', 0.8 * $backoff,
            "$label: attempt " . ($n + 1) . " started ${ms}ms after attempt $n ended (backoff ${backoff}ms -20%)");
    }
    my $st = $s->sim_stats;
    is($st->{rejected}{'5xx'}, 3 * $attempts, "$label: the provider refused every attempt with 503");
    is($st->{started}, 0, "$label: the provider started no call");
    slots_released($label);
}

# ------------------------------------------------------------ 429 ---
{
    my $label = '429';
    my $attempts = 3;
    # backoff 100 ms and 200 ms, well below the provider's Retry-After: 1
    scenario([ '--fail-429', '1', '--seed', '2' ],
        'dispatch.max_attempts' => $attempts,
        'dispatch.backoff_base' => '100ms',
        'dispatch.backoff_max'  => '15m');
    my @ids = create_calls(2, $label);
    wait_status(\@ids, 'FAILED', 90, "$label: both calls end FAILED");
    for my $id (@ids) {
        my $c = get_call($id);
        is($c->{attempts}, $attempts, "$label: $attempts attempts");
        is($c->{lastError}, 'provider answered 429', "$label: lastError says why");
        check_attempt_log($c, $attempts, 'PROVIDER_ERROR', qr/^provider answered 429$/, $label);
    }
    my @gaps = gaps(@ids);
    is(scalar @gaps, 2 * ($attempts - 1), "$label: every retry found");
    for my $g (@gaps) {
        my ($id, $n, $ms) = @$g;
        cmp_ok($ms, '>=', 950,
            "$label: attempt " . ($n + 1) . " started ${ms}ms after attempt $n ended (Retry-After: 1)");
    }
    is($s->sim_stats->{rejected}{429}, 2 * $attempts, "$label: the provider answered 429 each time");
    slots_released($label);
}

# ----------------------------------------------------------- hang ---
{
    my $label = 'hang';
    my $attempts = 2;
    # A timeout after the request was sent is an unknown outcome (DESIGN.md
    # section 5): the attempt keeps its slot, the status lookup finds no
    # call (404) and the start is sent again with the same Idempotency-Key,
    # until call_timeout, when the reclaim's lookup still finds none: then
    # it is reclaimed (TIMEOUT) and retried.
    scenario([ '--hang', '1', '--seed', '3' ],
        'dispatch.max_attempts' => $attempts,
        'dispatch.backoff_base' => '200ms',
        'dispatch.backoff_max'  => '1s',
        'dispatch.call_timeout' => '3s',
        'provider.timeout'      => '1s',
        'provider.status_url'   => 'http://127.0.0.1:' . $s->provider_port
            . '/api/v1/calls?reference={reference}');
    my @ids = create_calls(2, $label);
    wait_status(\@ids, 'FAILED', 90, "$label: both calls end FAILED after the timeouts");
    for my $id (@ids) {
        my $c = get_call($id);
        is($c->{attempts}, $attempts, "$label: $attempts attempts");
        like($c->{lastError} // '', qr/time[ds]? ?out/i, "$label: lastError mentions the timeout")
            or diag $c->{lastError};
        check_attempt_log($c, $attempts, 'TIMEOUT', qr/time[ds]? ?out/i, $label);
    }
    my $list = join ',', map { "'$_'" } @ids;
    is($s->psql(qq{SELECT count(*) FROM call_attempts WHERE call_id IN ($list)
                    AND ended_at - started_at < interval '900 ms'}), 0,
        "$label: every attempt waited for the 1s provider timeout");
    for my $g (gaps(@ids)) {
        my ($id, $n, $ms) = @$g;
        cmp_ok($ms, '>=', 160, "$label: retry started ${ms}ms after the timed-out attempt (backoff 200ms -20%)");
    }
    cmp_ok($s->sim_stats->{rejected}{hang}, '>=', 2 * $attempts,
        "$label: every attempt hung at the provider (its start sent again after each 404)");
    slots_released($label);
}

# ------------------------------------------------- connection refused ---
{
    my $label = 'unreachable';
    my $attempts = 2;
    $s->stop_daemon;
    $s->stop_sim;    # nothing listens on the provider port
    $s->write_config(%common,
        'dispatch.max_attempts' => $attempts,
        'dispatch.backoff_base' => '200ms',
        'dispatch.backoff_max'  => '1s');
    $s->start_daemon;
    my @ids = create_calls(2, $label);
    wait_status(\@ids, 'FAILED', 90, "$label: both calls end FAILED");
    for my $id (@ids) {
        my $c = get_call($id);
        is($c->{attempts}, $attempts, "$label: a connection error is retried ($attempts attempts)");
        like($c->{lastError} // '', qr/^provider unreachable: /, "$label: lastError says why")
            or diag $c->{lastError};
        check_attempt_log($c, $attempts, 'PROVIDER_ERROR', qr/^provider unreachable: /, $label);
    }
    for my $g (gaps(@ids)) {
        my ($id, $n, $ms) = @$g;
        cmp_ok($ms, '>=', 160, "$label: retry started ${ms}ms after the failed attempt (backoff 200ms -20%)");
    }
    slots_released($label);
}

# ------------------------------------------------------------ 401 ---
{
    my $label = '401';
    scenario([ '--api-key', 'the-right-provider-key', '--delay', '0-50ms',
               '--success-rate', '1', '--seed', '4' ],
        'dispatch.max_attempts' => 3,
        'dispatch.backoff_base' => '100ms',
        'dispatch.backoff_max'  => '1s',
        'provider.api_key'      => 'a-wrong-provider-key');
    my @ids = create_calls(2, $label);
    wait_status(\@ids, 'FAILED', 60, "$label: both calls end FAILED");
    # Retries would be due within 120 ms and published by the next tick:
    # let the scheduler tick 5 times (100 ms each) to show none comes.
    ok($s->scheduler_ticks(5, soft => 1), "$label: the scheduler ticked 5 times since");
    for my $id (@ids) {
        my $c = get_call($id);
        is($c->{status}, 'FAILED', "$label: still FAILED");
        is($c->{attempts}, 1, "$label: failed after ONE attempt");
        is($c->{lastError}, 'provider rejected the call with 401', "$label: lastError says why");
        ok(!defined $c->{nextAttemptAt}, "$label: no retry scheduled");
        ok(defined $c->{endedAt}, "$label: endedAt set");
        check_attempt_log($c, 1, 'PROVIDER_REJECTED', qr/^provider rejected the call with 401$/, $label);
    }
    my $st = $s->sim_stats;
    is($st->{unauthorized}, 2, "$label: the provider saw exactly one initiation per call");
    is($st->{started}, 0, "$label: and started none");
    slots_released($label);

    # Control: the same provider with the right key starts and completes calls.
    $s->stop_daemon;
    $s->write_config(%common, 'dispatch.max_attempts' => 3, 'dispatch.backoff_base' => '100ms',
        'dispatch.backoff_max' => '1s', 'provider.api_key' => 'the-right-provider-key');
    $s->start_daemon;
    my @ok = create_calls(1, "$label control");
    wait_status(\@ok, 'COMPLETED', 60, "$label control: with the right key the call completes");
    is(get_call($ok[0])->{attempts}, 1, "$label control: in one attempt");
    slots_released("$label control");
}

# ------------------------------------------ nextAttemptAt while waiting ---
{
    my $label = 'waiting';
    scenario([ '--fail-5xx', '1', '--seed', '5' ],
        'dispatch.max_attempts' => 2,
        'dispatch.backoff_base' => '30s',
        'dispatch.backoff_max'  => '15m');
    my ($id) = create_calls(1, $label);
    my $c;
    my $ok = $s->wait_for(sub {
        $c = get_call($id);
        $c && $c->{status} eq 'PENDING' && $c->{attempts} == 1 && defined $c->{nextAttemptAt};
    }, timeout => 60, interval => 0.2, soft => 1);
    ok($ok, "$label: after a 503 the call is PENDING with nextAttemptAt") or diag explain $c;
    is($c->{lastError}, 'provider answered 503', "$label: lastError already filled");
    ok(!defined $c->{endedAt}, "$label: endedAt stays null while a retry waits");
    my $ended = CallorchTest::epoch($c->{attemptLog}[0]{endedAt});
    my $delay = CallorchTest::epoch($c->{nextAttemptAt}) - $ended;
    cmp_ok($delay, '>=', 24 - 0.002, "$label: nextAttemptAt is >= 0.8 x 30s after the attempt ended ($delay s)");
    cmp_ok($delay, '<=', 36 + 0.002, "$label: and <= 1.2 x 30s");
    slots_released($label);

    # Nothing happens until then: the scheduler looks at it every tick.
    ok($s->scheduler_ticks(5, soft => 1), "$label: the scheduler ticked 5 times since");
    $c = get_call($id);
    is($c->{status}, 'PENDING', "$label: still PENDING five ticks later");
    is($c->{attempts}, 1, "$label: no early retry");
    is($s->sim_stats->{rejected}{'5xx'}, 1, "$label: the provider saw one attempt");

    my ($st, $cc) = $s->api(POST => "/api/v1/calls/$id/cancel");
    is($st, 200, "$label: a waiting retry can be cancelled") or diag explain $cc;
    is($cc->{status}, 'CANCELLED', "$label: CANCELLED");
    ok(!defined $cc->{nextAttemptAt}, "$label: nextAttemptAt cleared by the cancel");
}

my ($code, $m) = $s->api(GET => '/api/v1/metrics');
is($m->{IN_PROGRESS}, 0, 'nothing left IN_PROGRESS');
is($s->psql('SELECT count(*) FROM calls WHERE attempts <> '
        . '(SELECT count(*) FROM call_attempts a WHERE a.call_id = calls.id)'), 0,
    'every call has one attempt row per attempt');
is($s->stop_daemon, 0, 'clean stop');
done_testing;
