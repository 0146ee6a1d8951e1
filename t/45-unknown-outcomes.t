#!/usr/bin/perl
# Unknown outcomes at the provider (DESIGN.md section 5, issue 9 item 1):
# a start request whose answer is lost after the call started (a provider
# slower than [provider] timeout), answered late, or answered 2xx without a
# valid callId is not a failed attempt.  The call keeps its slot and phone
# lock until the webhook, a status lookup or the reclaim resolves it; the
# next attempt never starts while one may be live.
#
#  lookups   60 calls on 20 numbers, cap 5, 30 % of the answers lost, 10 %
#            slow, 10 % without a valid callId, 15 % of the webhooks dropped,
#            with [provider] status_url: the provider never sees more than
#            the cap, two calls for one number, a call dialled while another
#            attempt of it was live, or dialled after it COMPLETED; every
#            call ends, none FAILED that the provider completed.
#  no-url    the same faults but no dropped webhooks, without status_url:
#            resolved by the webhook (or the reclaim).
#  given-up  (SQL) a COMPLETED webhook for an attempt reclaimed at
#            call_timeout completes the call when no later attempt started;
#            any other late webhook changes nothing.
#  lock-order (SQL) a settle waiting on a call locked by a reclaim does not
#            hold the attempt's row meanwhile (no deadlock).
#  bad-id    a callId with a newline is neither stored nor logged raw.
#  reread    a start update that committed but whose answer was lost is
#            re-read and the call started, not dropped.
#  config    [provider] status_url must be http(s) and hold {reference}.
#
# CALLORCH_T45_ONLY=lookups,no-url,given-up,lock-order,bad-id,reread,config
# runs only those.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use HTTP::Tiny;
use JSON::PP;
use CallorchScenario;
use CallorchTest;

my ($s, $sc) = CallorchScenario->setup(phone_base => 4_500_000, only_env => 'CALLORCH_T45_ONLY');

sub status_url { return 'http://127.0.0.1:' . $s->provider_port . '/api/v1/calls?reference={reference}' }

# The provider's status of REFERENCE (GET on the lookup), or '404'.
sub sim_status {
    my ($ref) = @_;
    my $r = HTTP::Tiny->new(keep_alive => 0, timeout => 5)
        ->get('http://127.0.0.1:' . $s->provider_port . "/api/v1/calls?reference=$ref");
    return '404' if $r->{status} == 404;
    return $r->{status} == 200 ? JSON::PP::decode_json($r->{content})->{status} : "HTTP $r->{status}";
}

# The checks of the two load scenarios.
sub unknown_checks {
    my ($tag, $n, $cap) = @_;
    my $st = $sc->end_checks($tag, $n, $cap, 240);
    diag("$tag: lostAnswers=$st->{lostAnswers} slowAnswers=$st->{slowAnswers} "
        . "badCallIds=$st->{badCallIds} idempotentReplays=$st->{idempotentReplays} "
        . "statusLookups=$st->{statusLookups} startedWhileLive=$st->{startedWhileLive} "
        . "startedAfterCompleted=$st->{startedAfterCompleted}");
    cmp_ok($st->{lostAnswers} + $st->{slowAnswers} + $st->{badCallIds}, '>', 0,
        "$tag: answers were lost, slow or without a callId");
    is($st->{startedWhileLive}, 0, "$tag: no call dialled while another attempt of it was live");
    is($st->{startedAfterCompleted}, 0, "$tag: no call dialled after the provider completed it");
    # none FAILED that the provider completed: look every attempt of every
    # FAILED call up at the simulator
    my @bad;
    for my $row (split /\n/, $s->psql("SELECT a.call_id || ':' || a.attempt FROM call_attempts a"
            . " JOIN calls c ON c.id = a.call_id WHERE c.status = 'FAILED' AND c." . $sc->tag_where($tag))) {
        push @bad, $row if sim_status($row) eq 'COMPLETED';
    }
    is(scalar @bad, 0, "$tag: no call FAILED that the provider completed") or diag("@bad");
    # and every call the daemon calls COMPLETED, the provider completed
    my @wrong;
    for my $row (split /\n/, $s->psql("SELECT c.id || ':' || c.attempts FROM calls c WHERE c.status = 'COMPLETED'"
            . " AND c." . $sc->tag_where($tag))) {
        my $p = sim_status($row);
        push @wrong, "$row=$p" if $p ne 'COMPLETED';
    }
    is(scalar @wrong, 0, "$tag: every call COMPLETED here was completed by the provider") or diag("@wrong");
    $sc->no_slot_held($tag);
    return $st;
}

# ============================================================== lookups ===
if ($sc->want('lookups')) {
    my ($tag, $n, $cap) = ('lookups', 60, 5);
    my $master = $sc->start([ '--delay', '1s-2s', '--lose-answer', '0.3', '--slow-answer', '0.1',
            '--slow-answer-delay', '3s', '--bad-call-id', '0.1', '--drop', '0.15', '--seed', '45' ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.call_timeout'         => '6s',
        'provider.timeout'              => '1s',
        'provider.status_url'           => status_url());
    my @phones = map { $sc->next_phone } 1 .. 20;
    my ($ok) = $sc->post_calls($tag, $n, \@phones);
    is($ok, $n, "$tag: $n calls accepted");
    my $st = unknown_checks($tag, $n, $cap);
    cmp_ok($st->{statusLookups}, '>', 0, "$tag: the daemon looked statuses up");
    cmp_ok($st->{dropped}, '>', 0, "$tag: some webhooks were dropped (resolved by lookups)");
    my $log = $sc->log_since_start;
    like($log, qr/msg="provider answer unknown; the call keeps its slot until it is resolved"/,
        "$tag: unknown answers logged as such");
    $sc->no_crash_checks($tag, $master);
}

# =============================================================== no-url ===
if ($sc->want('no-url')) {
    my ($tag, $n, $cap) = ('no-url', 30, 5);
    my $master = $sc->start([ '--delay', '1s-2s', '--lose-answer', '0.3', '--slow-answer', '0.1',
            '--slow-answer-delay', '3s', '--bad-call-id', '0.1', '--seed', '46' ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.call_timeout'         => '20s',
        'provider.timeout'              => '1s');
    my @phones = map { $sc->next_phone } 1 .. 10;
    my ($ok) = $sc->post_calls($tag, $n, \@phones);
    is($ok, $n, "$tag: $n calls accepted");
    my $st = unknown_checks($tag, $n, $cap);
    is($st->{statusLookups}, 0, "$tag: no status lookups without status_url");
    $sc->no_crash_checks($tag, $master);
}

# ============================================================== bad-id ===
if ($sc->want('bad-id')) {
    my $tag = 'bad-id';
    # no status_url: the webhook (which carries the real callId) resolves them
    my $master = $sc->start([ '--delay', '300ms-500ms', '--bad-call-id', '1', '--seed', '47' ],
        'provider.timeout'    => '2s');
    my ($ok) = $sc->post_calls($tag, 6);
    is($ok, 6, "$tag: 6 calls accepted");
    my ($done) = $sc->wait_settled($tag, 60);
    ok($done, "$tag: every call settled (by its webhook)");
    is($sc->count_where($tag, "status <> 'COMPLETED'"), 0, "$tag: all COMPLETED");
    is($sc->count_where($tag, "external_call_id ~ '[^ -~]' OR length(external_call_id) > 256"), 0,
        "$tag: no invalid callId stored");
    my $log = $sc->log_since_start;
    my @forged = grep { /^level=error msg="forged/ || (/forged/ && !/^(ts|time|level)=/) } split /\n/, $log;
    is(scalar @forged, 0, "$tag: no forged log line") or diag(join "\n", @forged);
    like($log, qr/invalid callId/, "$tag: the invalid callId is reported (quoted)");
    $sc->no_crash_checks($tag, $master);
}

# ============================================================ given-up ===
# The SQL functions directly: a call whose attempt 1 was reclaimed.
sub reclaimed_call {
    my ($status_after) = @_;
    my $id = $s->psql("INSERT INTO calls (to_number, script_id, max_attempts, status, attempts, started_at)"
        . " VALUES ('+15550000001', 'given-up-x', 3, 'IN_PROGRESS', 1, now()) RETURNING id");
    $s->psql("INSERT INTO call_attempts (call_id, attempt) VALUES ('$id', 1)");
    my $st = $s->psql("SELECT status FROM settle_attempt('$id', 1, 'TIMEOUT', 'timed out', NULL, true, 1000, 1000, 0)");
    return ($id, $st);
}

if ($sc->want('given-up')) {
    $s->stop_daemon if $s->daemon_pid;
    my ($id, $st) = reclaimed_call();
    is($st, 'PENDING', 'given-up: the reclaim planned a retry');
    my $r = $s->psql("SELECT result || ',' || status FROM apply_webhook('wh-gu-1', '$id', 1, 'ext-gu-1', 'COMPLETED', 1000, 1000)");
    is($r, 'applied,COMPLETED', 'given-up: a COMPLETED webhook for the reclaimed attempt completes the call');
    is($s->psql("SELECT status || ',' || coalesce(external_call_id, '-') || ',' || (ended_at IS NOT NULL)"
        . " FROM calls WHERE id = '$id'"), 'COMPLETED,ext-gu-1,true', 'given-up: the call is COMPLETED');
    is($s->psql("SELECT outcome FROM call_attempts WHERE call_id = '$id'"), 'COMPLETED',
        'given-up: the attempt is COMPLETED');
    is($s->psql("SELECT result FROM apply_webhook('wh-gu-2', '$id', 1, 'ext-gu-1', 'COMPLETED', 1000, 1000)"),
        'late', 'given-up: a repeated webhook changes nothing');

    ($id) = reclaimed_call();
    is($s->psql("SELECT result FROM apply_webhook('wh-gu-3', '$id', 1, 'ext-gu-3', 'FAILED', 1000, 1000)"),
        'late', 'given-up: a late FAILED webhook changes nothing');
    is($s->psql("SELECT status FROM calls WHERE id = '$id'"), 'PENDING', 'given-up: still PENDING');

    ($id) = reclaimed_call();
    $s->psql("UPDATE calls SET status = 'IN_PROGRESS', attempts = 2 WHERE id = '$id'");
    $s->psql("INSERT INTO call_attempts (call_id, attempt) VALUES ('$id', 2)");
    is($s->psql("SELECT result FROM apply_webhook('wh-gu-4', '$id', 1, 'ext-gu-4', 'COMPLETED', 1000, 1000)"),
        'late', 'given-up: not once a later attempt started');
    is($s->psql("SELECT status || ',' || attempts FROM calls WHERE id = '$id'"), 'IN_PROGRESS,2',
        'given-up: the later attempt is untouched');
    $s->psql("DELETE FROM calls WHERE script_id = 'given-up-x'");
}

# ========================================================== lock-order ===
# A reclaim holds the call's row (FOR UPDATE) and then settles, which
# updates the attempt's row.  A webhook's settle_attempt() of the same call
# that takes the attempt's row first and waits for the call's deadlocks with
# it.  Here session A plays the reclaim: it locks the call, waits until
# session B (settle_attempt) is blocked on a lock, then updates the attempt.
if ($sc->want('lock-order')) {
    my $id = $s->psql("INSERT INTO calls (to_number, script_id, max_attempts, status, attempts, started_at)"
        . " VALUES ('+15550000002', 'lock-order-x', 3, 'IN_PROGRESS', 1, now()) RETURNING id");
    $s->psql("INSERT INTO call_attempts (call_id, attempt) VALUES ('$id', 1)");
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        # wait until A holds the call's row
        $s->wait_for(sub { $s->psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%lock-order A%'"
            . " AND state = 'active' AND pid <> pg_backend_pid()") > 0 }, timeout => 30, soft => 1);
        my $ok = eval { $s->psql("SELECT status FROM settle_attempt('$id', 1, 'COMPLETED', NULL, 'ext-lo', false, 1000, 1000, 0)"); 1 };
        POSIX::_exit($ok ? 0 : 1); # no teardown of the stack from here
    }
    my $a = eval {
        $s->psql(<<"SQL");
DO \$\$ -- lock-order A
DECLARE n int := 0;
BEGIN
    PERFORM 1 FROM calls WHERE id = '$id' FOR UPDATE;
    -- until the settle waits on a lock (at most 20 s)
    WHILE NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                       AND query LIKE '%settle_attempt%' AND pid <> pg_backend_pid()) AND n < 400 LOOP
        PERFORM pg_sleep(0.05);
        n := n + 1;
    END LOOP;
    UPDATE call_attempts SET error = 'reclaim was here' WHERE call_id = '$id' AND attempt = 1;
END
\$\$;
SQL
        1;
    };
    my $aerr = $@;
    waitpid($pid, 0);
    my $b = $? == 0;
    ok($a, 'lock-order: the reclaim side finished (no deadlock)') or diag($aerr);
    ok($b, 'lock-order: the webhook side finished (no deadlock)');
    is($s->psql("SELECT status FROM calls WHERE id = '$id'"), 'COMPLETED', 'lock-order: the call settled once');
    $s->psql("DELETE FROM calls WHERE script_id = 'lock-order-x'");
}

# ============================================================== reread ===
# A start update whose answer was lost although it committed: a trigger
# holds the update longer than the dispatch pool's query timeout (30 s), so
# the pool drops the connection, and the backend commits afterwards.  The
# job must re-read the call (waiting for that statement) and start it,
# rather than release its slot as if nothing happened.
if ($sc->want('reread')) {
    my $tag = 'reread';
    $s->psql(<<'SQL');
CREATE OR REPLACE FUNCTION t45_slow_start() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(36);
    RETURN NEW;
END
$$;
CREATE TRIGGER t45_slow_start BEFORE UPDATE ON calls FOR EACH ROW
    WHEN (OLD.status = 'PENDING' AND NEW.status = 'IN_PROGRESS' AND NEW.script_id = 'reread-0')
    EXECUTE FUNCTION t45_slow_start();
SQL
    my $master = $sc->start([ '--delay', '200ms-300ms' ], 'dispatch.call_timeout' => '10m');
    my ($ok) = $sc->post_calls($tag, 1);
    is($ok, 1, "$tag: call accepted");
    my ($done) = $sc->wait_settled($tag, 120);
    ok($done, "$tag: the call whose start answer was lost ends (not left to the 10 min reclaim)")
        or diag($s->psql("SELECT status, attempts, last_error FROM calls WHERE " . $sc->tag_where($tag)));
    is($sc->count_where($tag, "status = 'COMPLETED' AND attempts = 1"), 1, "$tag: COMPLETED in one attempt");
    is($s->sim_stats->{started}, 1, "$tag: started once at the provider");
    like($sc->log_since_start, qr/msg="start update committed although its answer was lost"/,
        "$tag: the re-read found the commit");
    $s->psql('DROP TRIGGER t45_slow_start ON calls; DROP FUNCTION t45_slow_start()');
    $sc->no_slot_held($tag);
}

# ============================================================== config ===
# [provider] status_url is checked at load: http(s), holding {reference}.
if ($sc->want('config')) {
    my $bin = CallorchTest::builddir() . '/src/callorchd';
    for my $case ([ 'ftp://127.0.0.1/{reference}', qr/status_url: "ftp:[^"]*" is not an http/ ],
                  [ 'http://127.0.0.1:9/calls', qr/status_url: "http:[^"]*" does not contain \{reference\}/ ]) {
        my ($url, $re) = @$case;
        my $path = $s->write_config('provider.status_url' => $url);
        my ($out, $rc) = CallorchTest::run_command($bin, '-t', '-c', $path);
        isnt($rc, 0, "config: status_url $url refused");
        like($out, $re, "config: status_url $url: a clear error") or diag($out);
    }
    my $path = $s->write_config('provider.status_url' => status_url());
    my ($out, $rc) = CallorchTest::run_command($bin, '-t', '-c', $path);
    is($rc, 0, 'config: a valid status_url is accepted') or diag($out);
}

$s->stop_daemon if $s->daemon_pid;
done_testing;
