#!/usr/bin/perl
# Dispatch through outages and crashes on the real stack (DESIGN.md section 3,
# "no accepted call is lost ... through crashes of any child, restarts of
# Redis, Kafka or PostgreSQL", and the cap / one-call-per-phone / exactly-once
# guarantees while it happens):
#
#  1. Kafka down: POST /api/v1/calls still answers 201; once the broker is
#     back every call is dispatched and settles.  Twice: an outage the
#     producers' queues ride out but longer than the scheduler's republish
#     grace, so calls reach the topic twice (duplicates must neither start
#     an attempt twice nor free a running call's slot: the cap holds),
#     and one longer than the producers' message timeout, so the messages
#     are lost and only the scheduler's republish (after the republish
#     grace) brings the calls to Kafka.
#  2. Redis down for a few seconds while calls run, back EMPTY: nothing starts
#     while it is down (though new calls arrive and slots are free), nothing
#     crashes, and dispatch resumes with the cap intact: the slot set is
#     rebuilt from the IN_PROGRESS rows before anything new starts.
#  3. kill -9 of a Kafka child, twice, while calls are in flight: no call
#     lost, no attempt started twice at the provider, every attempt the
#     daemon recorded either reached the provider or was reclaimed after
#     call_timeout (a kill between the IN_PROGRESS commit and the provider
#     request), and every call ends.
#
# CALLORCH_T43_ONLY=kafka-dup,kafka-long,redis,kill runs only those.
#
# Each scenario ends with: every call of the scenario COMPLETED or FAILED, and
# the simulator saw at most max_concurrent_calls at once, at most one per
# phone number and no attempt started twice.
#
# One PostgreSQL/Redis/Kafka stack; daemon and simulator are restarted for
# each scenario; each scenario's calls carry their own scriptId prefix.  Only
# generous upper bounds on time are checked (a loaded 2-core box).
#
# The daemon is the test build with shorter timings (src/util/tunables.h):
# a 2 s republish grace (production 10 s) and a Redis reconnect backoff of
# at most 0.5 s (production 5 s), so no scenario waits through them.
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);
use CallorchScenario;
use CallorchTest;

my $T0 = time;
# CALLORCH_T43_ONLY=kafka-dup,redis runs only those scenarios (debugging).
my $GRACE = 2;    # s, the republish grace
my ($s, $sc) = CallorchScenario->setup(phone_base => 4_300_000, only_env => 'CALLORCH_T43_ONLY',
    tunables => { republish_grace => $GRACE, redis_backoff_max => 0.5 });
sub want { return $sc->want(@_) }

sub scenario    { return $sc->start(@_) }
sub post_calls  { return $sc->post_calls(@_) }
sub count_where { return $sc->count_where(@_) }
sub tag_where   { return $sc->tag_where(@_) }
sub wait_settled { return $sc->wait_settled(@_) }
sub end_checks  { return $sc->end_checks(@_) }
sub next_phone  { return $sc->next_phone }
sub scenario_log { return $sc->log_since_start }
sub no_crash_checks { return $sc->no_crash_checks(@_) }
sub kafka_workers { return $sc->children($_[0], qr/kafka worker/) }
sub http_workers { return $sc->children($_[0], qr/http worker/) }

# { http worker pid => kafkaPending of its /readyz }: on kept-alive
# connections (one worker each) until a few workers answered.
sub producer_pending {
    my %p;
    for (1 .. 20) {
        my $ua = HTTP::Tiny->new(keep_alive => 1, timeout => 5);
        my $h = $ua->get($s->base_url . '/healthz');
        my $r = $ua->get($s->base_url . '/readyz');
        my $pid = eval { JSON::PP::decode_json($h->{content})->{pid} };
        my $pending = eval { JSON::PP::decode_json($r->{content})->{kafkaPending} };
        $p{$pid} = $pending if defined $pid && defined $pending;
        last if keys %p >= 2;
    }
    return %p;
}

# ======================================================= 1. Kafka down ===

# a) An outage longer than the scheduler's republish grace ($GRACE s) but
# shorter than the producers' message timeout (30 s): the POSTs' messages
# wait in the producer's queue and the scheduler publishes calls again
# meanwhile (as many as there are free slots), so once the broker is back
# these are in the topic twice, handled at the same moment: duplicates must
# still start each attempt once and keep the cap.
if (want('kafka-dup')) {
    my $tag = 'kafka-dup';
    my $cap = 10;
    # calls long enough that a slot freed by mistake would be used while
    # its call still runs
    my $master = scenario([ '--delay', '1s-2s' ], 'dispatch.max_concurrent_calls' => $cap);
    my ($n) = post_calls("warm-$tag", 5);
    is($n, 5, "$tag: 5 warm-up calls accepted with Kafka up");
    my ($ok) = wait_settled("warm-$tag", 60);
    ok($ok, "$tag: the warm-up calls settled (consumers joined the group)");
    my $started_before = $s->sim_stats->{started};

    $s->kafka_down;
    my $t = time;
    ($n) = post_calls($tag, 50);
    my $took = time - $t;
    is($n, 50, "$tag: 50 calls answered 201 PENDING while Kafka is down");
    cmp_ok($took, '<', 30, sprintf("$tag: the 50 POSTs took %.1fs (no hang)", $took));
    # past the scheduler's grace it publishes them again (into its queue), as
    # many as there are free slots: the others count as on their way
    my $republished = $s->wait_for(sub {
        $s->psql("SELECT count(*) FROM calls WHERE " . tag_where($tag)
            . " AND published_at > created_at + interval '" . 0.9 * $GRACE . " s'") >= $cap
    }, timeout => 40, interval => 0.25, soft => 1);
    ok($republished, sprintf("$tag: the scheduler republished %d calls %.1fs after the POSTs", $cap,
        time - $t));
    is($s->sim_stats->{started}, $started_before, "$tag: nothing started while Kafka is down");
    is(count_where($tag, "status <> 'PENDING'"), 0, "$tag: every call still PENDING");
    $s->kafka_up;
    end_checks($tag, 50, $cap, 120);
    is($s->sim_stats->{started}, 55, "$tag: one provider start per call");
    no_crash_checks($tag, $master);
}

# b) Longer than the producers' message timeout (3 s here, 30 s by default):
# the messages of the POSTs are dropped, so only the scheduler's republish of
# the calls that never reached Kafka gets them dispatched.
if (want('kafka-long')) {
    my $tag = 'kafka-long';
    my $cap = 10;
    my $master = scenario([ '--delay', '50ms-200ms' ],
        'dispatch.max_concurrent_calls'   => $cap,
        'kafka.rdkafka.message.timeout.ms' => 3000);
    my ($n) = post_calls("warm-$tag", 5);
    my ($ok) = wait_settled("warm-$tag", 60);
    ok($ok && $n == 5, "$tag: 5 warm-up calls settled with Kafka up");
    my $started_before = $s->sim_stats->{started};

    $s->kafka_down;
    ($n) = post_calls($tag, 50);
    is($n, 50, "$tag: 50 calls answered 201 PENDING while Kafka is down");
    my $t_posted = time;
    # past the message timeout (plus librdkafka's timeout scan interval):
    # with the broker still down, every http worker's producer queue is
    # empty again (/readyz kafkaPending), so it dropped the messages
    my %pending;
    my $dropped = $s->wait_for(sub {
        my %http = map { $_->{pid} => 1 } http_workers($master);
        %pending = (%pending, producer_pending());
        !grep { !defined $pending{$_} || $pending{$_} != 0 } keys %http
    }, timeout => 30, interval => 0.1, soft => 1);
    ok($dropped, sprintf("$tag: the http workers' producers dropped the messages (%.1fs after the POSTs)",
        time - $t_posted)) or diag explain \%pending;
    is($s->sim_stats->{started}, $started_before, "$tag: nothing started while Kafka is down");
    is(count_where($tag, "status <> 'PENDING'"), 0, "$tag: every call still PENDING");
    $s->kafka_up;
    my $t_up = time;
    my ($done, $took) = wait_settled($tag, 120);
    ok($done, sprintf("$tag: every call settled %.1fs after Kafka came back (%.1fs after the POSTs)",
        $took, time - $t_posted));
    # the grace after the POST, a tick, then a rebalance-free dispatch:
    # well within a minute even on a loaded box
    cmp_ok(time - $t_up, '<', 60, "$tag: recovered within 60s of kafka_up");
    end_checks($tag, 50, $cap, 5);
    no_crash_checks($tag, $master);
}

# ======================================================= 2. Redis down ===
#
# 6 long calls (8-10 s) run under a cap of 8 when Redis goes away; 6 more
# calls arrive during the outage (2 slots are free by PostgreSQL's count) and
# must not start.  Redis comes back empty, a few seconds later, while the
# first 6 still run: the scheduler must rebuild the slot set with them before
# anything starts, so only 2 of the new calls may start until the first ones
# end (had the rebuild missed them, all 6 would start: 12 at once).
if (want('redis')) {
    my $tag = 'redis';
    my $cap = 8;
    # (8 s: the outage, the reconnect backoff and the rebuild take about 3)
    my $master = scenario([ '--delay', '8s-10s' ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.call_timeout'         => '60s');
    my ($n) = post_calls($tag, 6);
    is($n, 6, "$tag: 6 calls accepted");
    my $running = $s->wait_for(sub { $s->sim_stats->{inProgress} == 6 },
        timeout => 60, interval => 0.05, soft => 1);
    ok($running, "$tag: the 6 calls run at the provider");
    my $log_mark = length $s->log_text;
    $s->stop_redis;
    my $t_down = time;

    ($n, my @more) = post_calls($tag, 6);
    is($n, 6, "$tag: 6 more calls accepted while Redis is down");
    # they reach Kafka and the consumers, which find no Redis: parked
    my $parked = $s->wait_for(sub {
        my %p = map { $_ => 1 } substr($s->log_text, $log_mark) =~ /msg="call parked" call=(\S+)/g;
        !grep { !$p{$_} } @more
    }, timeout => 30, interval => 0.1, soft => 1);
    ok($parked, "$tag: the consumers parked the 6 new calls (no Redis)");
    is($s->sim_stats->{started}, 6, "$tag: nothing started at the provider while Redis was down");
    is(count_where($tag, "status = 'IN_PROGRESS'"), 6, "$tag: no call moved to IN_PROGRESS while Redis was down");
    ok(kill(0, $master), "$tag: the master survived the outage");

    $s->start_redis;    # empty
    my $t_up = time;
    diag(sprintf "$tag: Redis back (empty) after %.1fs", $t_up - $t_down);
    my $since = sub { substr($s->log_text, $log_mark) };
    my $rebuilt = $s->wait_for(sub { $since->() =~ /msg="Redis slot set rebuilt from PostgreSQL"/ },
        timeout => 30, interval => 0.1, soft => 1);
    ok($rebuilt, sprintf("$tag: the scheduler rebuilt the slot set from PostgreSQL (%.1fs after Redis came back)",
        time - $t_up));
    my ($in_rebuild) = $since->()
        =~ /msg="Redis lost the slot set; rebuilding it from PostgreSQL" in_progress=(\d+)/;
    is($in_rebuild, 6, "$tag: the rebuild restored the 6 running calls");
    my $resumed = $s->wait_for(sub { $s->sim_stats->{started} >= 8 },
        timeout => 60, interval => 0.1, soft => 1);
    ok($resumed, sprintf("$tag: dispatch resumed: 2 new calls started %.1fs after Redis came back",
        time - $t_up));

    end_checks($tag, 12, $cap, 180);
    is($s->sim_stats->{started}, 12, "$tag: one provider start per call");
    is(count_where($tag, "status = 'FAILED'"), 0, "$tag: no call failed (the outage cost no attempt)");
    $sc->no_slot_held($tag);
    no_crash_checks($tag, $master);
    my @restarts = scenario_log() =~ /msg="respawning child"/g;
    is(scalar @restarts, 0, "$tag: no child was respawned");
}

# ========================================== 3. kill -9 of a Kafka child ===
if (want('kill')) {
    my $tag = 'kill';
    my $cap = 10;
    my $n_calls = 200;
    my $master = scenario([ '--delay', '100ms-300ms' ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.call_timeout'         => '5s');
    my @workers = kafka_workers($master);
    is(scalar @workers, 2, "$tag: two kafka workers");
    # 200 calls over 150 numbers: some numbers wait for their own earlier call
    my @phones = map { next_phone() } 1 .. 150;
    my ($n) = post_calls($tag, $n_calls, \@phones);
    is($n, $n_calls, "$tag: $n_calls calls accepted");

    my @killed;
    for my $round (1, 2) {
        my $at = $round * 60;
        my $busy = $s->wait_for(sub {
            my $st = $s->sim_stats;
            $st->{started} >= $at && $st->{inProgress} > 0
        }, timeout => 120, interval => 0.05, soft => 1);
        ok($busy, "$tag: kill $round: at least $at calls started, some in flight");
        # the oldest worker: in round 2 the one that carried the load while
        # the first victim was respawned and rejoined the group
        my ($victim) = kafka_workers($master);
        ok($victim && kill('KILL', $victim->{pid}), "$tag: kill -9 $victim->{title} (pid $victim->{pid})");
        push @killed, $victim->{pid};
        my $back = $s->wait_for(sub {
            my @now = kafka_workers($master);
            @now == 2 && !grep { my $p = $_->{pid}; grep { $_ == $p } @killed } @now
        }, timeout => 30, interval => 0.1, soft => 1);
        ok($back, "$tag: kill $round: the kafka worker was respawned");
    }

    my $st = end_checks($tag, $n_calls, $cap, 240);

    $sc->attempt_checks($tag);

    ok(kill(0, $master), "$tag: the master (pid $master) is still running");
    my @signalled = scenario_log() =~ /^(.*msg="child killed by signal".*)$/mg;
    is(scalar @signalled, 2, "$tag: two children died by a signal: the two we killed");
    is(scalar(grep { /kind=kafka/ && /signal=9 / } @signalled), 2, "$tag: both were kafka workers, SIGKILL")
        or diag(join "\n", @signalled);
    $sc->no_slot_held($tag);
}

is($s->stop_daemon, 0, 'clean stop');
diag(sprintf 'total %.1fs', time - $T0);
done_testing;
