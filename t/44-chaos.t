#!/usr/bin/perl
# Chaos on the real stack (DESIGN.md section 3: "no accepted call is lost
# through crashes of any child, restarts of Redis, Kafka or PostgreSQL", and
# the cap / one call per phone / exactly-once guarantees while it happens).
# t/43 covers Kafka down, Redis restarted empty and kill -9 of Kafka
# workers; t/71 two daemons on one stack.  Here:
#
#  1. kill-all: kill -9 of random children of EVERY kind (HTTP workers,
#     Kafka workers, the scheduler), again and again, while calls are
#     posted (clients retry with their Idempotency-Key when a worker dies
#     under them) and while they are dispatched.
#  2. postgres: PostgreSQL restarted while calls are dispatched: the API
#     answers 503 + Retry-After meanwhile, nothing crashes for good, and
#     every call settles once it is back.
#  3. drop: the provider never sends the webhook of a share of its calls:
#     the scheduler reclaims them after call_timeout ("timed out"), retries
#     them, and fails a call only after max_attempts.
#  4. redis-snapshot: Redis restarted twice from an RDB saved while other
#     calls were in progress: rebuilt before anything starts, the
#     snapshot's stale locks reconciled away (DESIGN.md section 3).
#  5. lost-answer: the provider's answer to 30 % of the start requests is
#     lost after the call started (slower than [provider] timeout), with
#     status lookups ([provider] status_url) and some webhooks dropped: no
#     call is dialled again while it may be live or after it COMPLETED, and
#     none ends FAILED that the provider completed (DESIGN.md section 5).
#
# Each ends with every call COMPLETED or FAILED, no attempt started twice at
# the provider, at most the cap in progress there and at most one call per
# phone, and prints its figures (calls, kills, maximum in progress seen).
#
# CALLORCH_T44_ONLY=kill-all,postgres,drop,redis-snapshot,lost-answer runs
# only those.
# The random choices (which child is killed, when; the simulator's draws)
# come from a seed, fixed by default and printed: CALLORCH_T44_SEED=N runs
# with another.
#
# The daemon is the test build with shorter timings (src/util/tunables.h):
# respawn backoff capped at 0.5 s (production 30 s: a child killed again and
# again is respawned later and later; t/02 checks that), PostgreSQL pools'
# reconnect backoff capped at 1 s (production 5 s).
use strict;
use warnings;
use HTTP::Tiny;
use List::Util qw(shuffle);
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchScenario;
use CallorchTest;

my $T0 = time;
my $SEED = $ENV{CALLORCH_T44_SEED} // 44;
$SEED =~ /^\d+$/ or BAIL_OUT("CALLORCH_T44_SEED=$SEED is not a number");
srand($SEED);
diag("random seed $SEED (CALLORCH_T44_SEED=N runs with another)");

my ($s, $sc) = CallorchScenario->setup(phone_base => 4_400_000, only_env => 'CALLORCH_T44_ONLY',
    tunables => { respawn_max => 0.5, pg_backoff_max => 1 });
sub want { return $sc->want(@_) }

my %KIND_RE = (http => qr/http worker/, kafka => qr/kafka worker/, scheduler => qr/: scheduler/);

# ============================================ 1. kill -9 of every kind ===
if (want('kill-all')) {
    my $tag = 'kill-all';
    my ($cap, $n_calls, $batch) = (8, 300, 25);
    my $master = $sc->start([ '--delay', '100ms-400ms', '--seed', $SEED ],
        'http.workers'                  => 2,
        'kafka.consumers'               => 2,
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.max_attempts'         => 5,
        'dispatch.call_timeout'         => '5s');
    my %want_kids = (http => 2, kafka => 2, scheduler => 1);
    for my $k (sort keys %want_kids) {
        is(scalar($sc->children($master, $KIND_RE{$k})), $want_kids{$k}, "$tag: $want_kids{$k} $k children");
    }
    my @phones = map { $sc->next_phone } 1 .. 200;    # 300 calls over 200 numbers
    my (%kills, @killed, $accepted);

    # Kill one child of KIND (a random one of that kind); wait until the
    # master replaced it, so the next kill finds a full set.
    my $kill = sub {
        my ($kind) = @_;
        my @kids = $sc->children($master, $KIND_RE{$kind});
        return 0 unless @kids;
        my $victim = $kids[ int rand @kids ];
        return 0 unless kill 'KILL', $victim->{pid};
        $kills{$kind}++;
        push @killed, $victim->{pid};
        $s->wait_for(sub {
            my @now = $sc->children($master, $KIND_RE{$kind});
            @now == $want_kids{$kind} && !grep { $_->{pid} == $victim->{pid} } @now
        }, timeout => 60, interval => 0.05, soft => 1)
            or diag("$tag: $kind child $victim->{pid} not replaced within 60s");
        return 1;
    };
    # every kind in turn, shuffled per round: each is killed repeatedly
    my @plan = map { shuffle(qw(http kafka scheduler)) } 1 .. 8;

    # phase 1: posting (12 batches) with a kill after each batch
    for my $b (0 .. $n_calls / $batch - 1) {
        my ($n) = $sc->post_calls($tag, $batch, \@phones, from => $b * $batch,
            idempotency => 1, retry_for => 60);
        $accepted += $n;
        $kill->(shift @plan);
    }
    is($accepted, $n_calls, "$tag: all $n_calls calls accepted (retried with their Idempotency-Key)");
    # phase 2: dispatching: keep killing while calls are still open
    while (@plan && $sc->count_where($tag, "status NOT IN ('COMPLETED', 'FAILED')") > 20) {
        sleep 0.5 + rand 1.0;
        $kill->(shift @plan);
    }
    my $n_kills = 0;
    $n_kills += $_ for values %kills;
    cmp_ok($kills{$_} // 0, '>=', 3, "$tag: $_ children killed at least 3 times") for qw(http kafka scheduler);

    my $st = $sc->end_checks($tag, $n_calls, $cap, 300);
    my $lost = $sc->attempt_checks($tag);
    is($sc->count_where($tag, "status NOT IN ('COMPLETED', 'FAILED')"), 0, "$tag: calls lost: 0");
    ok(kill(0, $master), "$tag: the master (pid $master) is still running");
    my @signalled = $sc->log_since_start =~ /^(.*msg="child killed by signal".*)$/mg;
    is(scalar @signalled, $n_kills, "$tag: the children that died by a signal are the $n_kills we killed")
        or diag(join "\n", @signalled);
    $sc->no_slot_held($tag);
    my $reclaims = () = $sc->log_since_start =~ /msg="call reclaimed/g;
    diag(sprintf "%s figures: calls=%d kills=%d (http=%d kafka=%d scheduler=%d) maxInProgress=%d (cap %d) "
            . "maxPerPhone=%d duplicateStarts=%d attempts lost with a killed child=%d reclaims=%d "
            . "calls lost=%d  %s",
        $tag, $n_calls, $n_kills, $kills{http} // 0, $kills{kafka} // 0, $kills{scheduler} // 0,
        $st->{maxInProgress}, $cap, $st->{maxPerPhone}, $st->{duplicateStarts}, $lost, $reclaims,
        $sc->count_where($tag, "status NOT IN ('COMPLETED', 'FAILED')"), $sc->status_summary($tag));
}

# ===================================== 2. PostgreSQL restarted mid-run ===
if (want('postgres')) {
    my $tag = 'postgres';
    my ($cap, $n_calls) = (8, 200);
    my $master = $sc->start([ '--delay', '200ms-600ms', '--seed', $SEED ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.max_attempts'         => 5,
        'dispatch.call_timeout'         => '8s');
    my @phones = map { $sc->next_phone } 1 .. 150;
    my ($n) = $sc->post_calls($tag, $n_calls, \@phones);
    is($n, $n_calls, "$tag: $n_calls calls accepted");
    my $busy = $s->wait_for(sub { my $st = $s->sim_stats; $st->{started} >= 50 && $st->{inProgress} > 0 },
        timeout => 120, interval => 0.05, soft => 1);
    ok($busy, "$tag: 50 calls started, some in flight");

    my $log_mark = length $s->log_text;
    $s->stop_postgres;
    my $t_down = time;
    my $rejected = $s->wait_for(sub {
        my ($code, undef, $h) = $s->api(POST => '/api/v1/calls', { to => $sc->next_phone, scriptId => "x-$tag" });
        $code == 503 && defined $h->{'retry-after'} ? $code : 0
    }, timeout => 20, interval => 0.2, soft => 1);
    is($rejected, 503, "$tag: POST while PostgreSQL is down: 503 with Retry-After");
    my ($code) = $s->api(GET => '/readyz');
    is($code, 503, "$tag: /readyz 503 while PostgreSQL is down");
    # every kind of child ran into the outage and tried to reconnect, for 2 s
    # at least (the pools' backoff, 0.1 s doubling, reaches its 1 s cap)
    my %failed;
    my $retried = $s->wait_for(sub {
        my $log = substr($s->log_text, $log_mark);
        %failed = ();
        $failed{$1}++ while $log =~ /msg="PostgreSQL connection attempt failed" pool=(\w+)/g;
        time - $t_down >= 2 && !grep { ($failed{$_} // 0) < 2 } qw(api dispatch sched)
    }, timeout => 30, interval => 0.2, soft => 1);
    ok($retried, "$tag: the api, dispatch and sched pools each failed to reconnect twice or more")
        or diag explain \%failed;
    ok(kill(0, $master), "$tag: the master survived the outage");
    $s->start_postgres;
    my $t_up = time;
    diag(sprintf "$tag: PostgreSQL was down %.1fs", $t_up - $t_down);
    my $back = $s->wait_for(sub { ($s->api(GET => '/readyz'))[0] == 200 }, timeout => 60, interval => 0.2, soft => 1);
    ok($back, sprintf("$tag: /readyz 200 again %.1fs after PostgreSQL came back", time - $t_up));
    # a worker whose pool is still waiting out its reconnect backoff answers
    # 503 + Retry-After a little longer: the client retries, as told
    my $t_more = time;
    my ($more) = $sc->post_calls("after-$tag", 20, undef, idempotency => 1, retry_for => 30);
    is($more, 20, sprintf("$tag: 20 more calls accepted after the restart (%.1fs, retrying on 503)",
        time - $t_more));

    my $st = $sc->end_checks($tag, $n_calls, $cap, 300);
    $sc->attempt_checks($tag);
    my ($ok) = $sc->wait_settled("after-$tag", 120);
    ok($ok, "$tag: the calls posted after the restart settled too");
    $sc->no_crash_checks($tag, $master);
    $sc->no_slot_held($tag);
    my $reclaims = () = $sc->log_since_start =~ /msg="call reclaimed/g;
    diag(sprintf "%s figures: calls=%d (+20 after) postgres down %.1fs maxInProgress=%d (cap %d) maxPerPhone=%d "
            . "duplicateStarts=%d reclaims=%d calls lost=%d  %s",
        $tag, $n_calls, $t_up - $t_down, $st->{maxInProgress}, $cap, $st->{maxPerPhone},
        $st->{duplicateStarts}, $reclaims, $sc->count_where($tag, "status NOT IN ('COMPLETED', 'FAILED')"),
        $sc->status_summary($tag));
}

# ================================== 3. dropped webhooks are reclaimed ===
if (want('drop')) {
    my $tag = 'drop';
    my ($cap, $n_calls, $max_attempts) = (6, 150, 4);
    my $master = $sc->start([ '--delay', '100ms-300ms', '--drop', '0.3', '--seed', $SEED ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.max_attempts'         => $max_attempts,
        'dispatch.call_timeout'         => '2s');
    my ($n) = $sc->post_calls($tag, $n_calls);
    is($n, $n_calls, "$tag: $n_calls calls accepted");
    my $st = $sc->end_checks($tag, $n_calls, $cap, 300);
    my $dropped = $st->{dropped};
    cmp_ok($dropped, '>', 0, "$tag: the simulator dropped $dropped webhooks");
    my $timeouts = $s->psql("SELECT count(*) FROM call_attempts a JOIN calls c ON c.id = a.call_id WHERE "
        . $sc->tag_where($tag) . " AND a.outcome = 'TIMEOUT'");
    is($timeouts, $dropped, "$tag: every dropped webhook's attempt was reclaimed as TIMEOUT");
    my $reclaims = () = $sc->log_since_start =~ /msg="call reclaimed/g;
    is($reclaims, $dropped, "$tag: one reclaim logged per dropped webhook");
    is($sc->count_where($tag, "status = 'FAILED' AND last_error NOT ILIKE '%timed out%'"), 0,
        "$tag: every FAILED call failed by timing out (lastError says so)");
    is($sc->count_where($tag, "status = 'COMPLETED' AND attempts > 1"),
        $s->psql("SELECT count(DISTINCT a.call_id) FROM call_attempts a JOIN calls c ON c.id = a.call_id WHERE "
            . $sc->tag_where($tag) . " AND a.outcome = 'TIMEOUT' AND c.status = 'COMPLETED'"),
        "$tag: the COMPLETED calls with several attempts are those retried after a reclaim");
    $sc->attempt_checks($tag);
    $sc->no_crash_checks($tag, $master);
    $sc->no_slot_held($tag);
    diag(sprintf "%s figures: calls=%d dropped webhooks=%d reclaims=%d maxInProgress=%d (cap %d) "
            . "maxPerPhone=%d duplicateStarts=%d calls lost=%d  %s",
        $tag, $n_calls, $dropped, $reclaims, $st->{maxInProgress}, $cap, $st->{maxPerPhone},
        $st->{duplicateStarts}, $sc->count_where($tag, "status NOT IN ('COMPLETED', 'FAILED')"),
        $sc->status_summary($tag));
}

# =========================== 4. Redis restored from an older snapshot ===
# (appended for issue 9) Redis is restarted, twice, from an RDB saved while
# other calls were in progress: the epoch marker survives, the leases of the
# calls in progress now do not, and the snapshot's leases and phone locks
# belong to calls that ended since.  The new run_id makes the daemon
# rebuild before anything starts; the reconcile drops the old phone locks.
if (want('redis-snapshot')) {
    my $tag = 'redis-snapshot';
    my ($cap, $n_calls) = (5, 40);
    my $master = $sc->start([ '--delay', '1s-3s' ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.reconcile_interval'   => '1s');
    my @phones = map { $sc->next_phone } 1 .. 12;
    my ($n) = $sc->post_calls($tag, $n_calls, \@phones);
    is($n, $n_calls, "$tag: $n_calls calls accepted");
    my $in_progress = sub { $s->psql("SELECT count(*) FROM calls WHERE status = 'IN_PROGRESS'") };
    ok($s->wait_for(sub { $in_progress->() >= 2 }, timeout => 30, interval => 0.05, soft => 1),
        "$tag: calls in progress when the snapshot is taken");
    like($s->redis_cli('SAVE'), qr/OK/, "$tag: RDB saved");
    my $restarts = 0;
    for my $round (1 .. 2) {
        # other calls start (and the snapshot's end) before Redis goes back
        my $done = $sc->count_where($tag, "status IN ('COMPLETED', 'FAILED')");
        $s->wait_for(sub { $sc->count_where($tag, "status IN ('COMPLETED', 'FAILED')") >= $done + $cap
                && $in_progress->() >= 2 }, timeout => 60, interval => 0.05, soft => 1);
        $s->stop_redis;
        $s->start_redis;
        $restarts++;
    }
    my $st = $sc->end_checks($tag, $n_calls, $cap, 240);
    my $rebuilds = () = $sc->log_since_start =~ /msg="Redis lost the slot set; rebuilding it from PostgreSQL"/g;
    cmp_ok($rebuilds, '>=', $restarts, "$tag: a rebuild after each restart ($rebuilds)");
    $sc->no_crash_checks($tag, $master);
    $sc->no_slot_held($tag);
    diag(sprintf "%s figures: calls=%d restarts=%d maxInProgress=%d (cap %d) maxPerPhone=%d "
            . "duplicateStarts=%d calls lost=%d  %s",
        $tag, $n_calls, $restarts, $st->{maxInProgress}, $cap, $st->{maxPerPhone},
        $st->{duplicateStarts}, $sc->count_where($tag, "status NOT IN ('COMPLETED', 'FAILED')"),
        $sc->status_summary($tag));
}

# ============================== 5. answers lost after the call started ===
if (want('lost-answer')) {
    my $tag = 'lost-answer';
    my ($cap, $n_calls, $n_phones) = (5, 60, 20);
    my $master = $sc->start([ '--delay', '1s-2s', '--lose-answer', '0.3', '--drop', '0.1' ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.call_timeout'         => '6s',
        'provider.timeout'              => '1s',
        'provider.status_url'           => 'http://127.0.0.1:' . $s->provider_port
            . '/api/v1/calls?reference={reference}');
    my @phones = map { $sc->next_phone } 1 .. $n_phones;
    my ($n) = $sc->post_calls($tag, $n_calls, \@phones);
    is($n, $n_calls, "$tag: $n_calls calls accepted");
    my $st = $sc->end_checks($tag, $n_calls, $cap, 300);
    cmp_ok($st->{lostAnswers}, '>', 0, "$tag: the simulator lost $st->{lostAnswers} answers");
    is($st->{startedWhileLive}, 0, "$tag: no call dialled while another attempt of it was live");
    is($st->{startedAfterCompleted}, 0, "$tag: no call dialled after the provider completed it");
    my $failed_completed = 0;
    my $ua = HTTP::Tiny->new(keep_alive => 0, timeout => 5);
    for my $ref (split /\n/, $s->psql("SELECT a.call_id || ':' || a.attempt FROM call_attempts a"
            . " JOIN calls c ON c.id = a.call_id WHERE c.status = 'FAILED' AND c." . $sc->tag_where($tag))) {
        my $r = $ua->get('http://127.0.0.1:' . $s->provider_port . "/api/v1/calls?reference=$ref");
        $failed_completed++ if $r->{status} == 200 && $r->{content} =~ /"status"\s*:\s*"COMPLETED"/;
    }
    is($failed_completed, 0, "$tag: no call FAILED that the provider completed");
    $sc->no_crash_checks($tag, $master);
    $sc->no_slot_held($tag);
    diag(sprintf "%s figures: calls=%d lost answers=%d maxInProgress=%d (cap %d) maxPerPhone=%d "
            . "startedWhileLive=%d startedAfterCompleted=%d statusLookups=%d calls lost=%d  %s",
        $tag, $n_calls, $st->{lostAnswers}, $st->{maxInProgress}, $cap, $st->{maxPerPhone},
        $st->{startedWhileLive}, $st->{startedAfterCompleted}, $st->{statusLookups},
        $sc->count_where($tag, "status NOT IN ('COMPLETED', 'FAILED')"), $sc->status_summary($tag));
}

is($s->stop_daemon, 0, 'clean stop');
diag(sprintf 'total %.1fs', time - $T0);
done_testing;
