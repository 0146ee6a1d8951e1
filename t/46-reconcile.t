#!/usr/bin/perl
# Redis and PostgreSQL agree again within [dispatch] reconcile_interval
# after any divergence, and no call starts over the cap meanwhile
# (DESIGN.md section 3):
#
#  a) snapshot: Redis restarted from an RDB saved before the current calls
#     started (the epoch marker survives, their leases do not): the new
#     run_id is noticed, starts park until the slot set is rebuilt from the
#     IN_PROGRESS rows; the simulator never sees more than the cap.
#  b) pause: CLIENT PAUSE for 8 s while webhooks settle the calls holding
#     every slot: the releases got no answer, are retried, and dispatch goes
#     on right after the pause (not after the leases expire, 16 min).
#  c) strays: a lease and a phone lock that no IN_PROGRESS call owns (and
#     that are old enough) are removed; a young one is kept (it may be a
#     job between its acquire and its IN_PROGRESS commit); the lease and
#     phone lock of an IN_PROGRESS call, deleted by hand, are restored.
#
# CALLORCH_T46_ONLY=snapshot,pause,strays runs only those.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchScenario;
use CallorchTest;

my ($s, $sc) = CallorchScenario->setup(phone_base => 4_600_000, only_env => 'CALLORCH_T46_ONLY');
my $P = 'callorch:';

sub in_progress { return $s->psql("SELECT count(*) FROM calls WHERE status = 'IN_PROGRESS'") }

# Slot leases live now (expired ones do not count).
sub leases {
    my ($sec, $us) = split /\n/, $s->redis_cli('TIME');
    my $now = $sec * 1000 + int($us / 1000);
    my $n = $s->redis_cli('ZCOUNT', "${P}slots", $now, '+inf');
    $n =~ s/\D//g;
    return $n;
}

sub redis_now_ms {
    my ($sec, $us) = split /\n/, $s->redis_cli('TIME');
    return $sec * 1000 + int($us / 1000);
}

# The daemon made its first rebuild (the epoch marker exists).
sub wait_epoch {
    return $s->wait_for(sub { $s->redis_cli('EXISTS', "${P}epoch") =~ /1/ },
        timeout => 30, interval => 0.1, soft => 1);
}

# ============================================================ a) snapshot ===
if ($sc->want('snapshot')) {
    my $tag = 'snapshot';
    my $cap = 4;
    $s->redis_cli('FLUSHALL');
    my $master = $sc->start([ '--delay', '8s-10s' ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.reconcile_interval'   => '500ms');
    ok(wait_epoch(), "$tag: the daemon marked the epoch");
    # the snapshot: an epoch marker, no lease
    like($s->redis_cli('SAVE'), qr/OK/, "$tag: RDB saved before the calls start");
    my ($n) = $sc->post_calls($tag, $cap);
    ok($s->wait_for(sub { in_progress() == $cap }, timeout => 30, interval => 0.1, soft => 1),
        "$tag: $cap calls in progress");
    is(leases(), $cap, "$tag: $cap leases in Redis");
    # Redis restarts from that RDB (the harness runs it with --save '': no
    # save at shutdown, the old dump.rdb is loaded at start)
    $s->stop_redis;
    $s->start_redis;
    is($s->redis_cli('EXISTS', "${P}epoch") =~ /1/ ? 1 : 0, 1,
        "$tag: the restored Redis has the old epoch marker");
    my ($m) = $sc->post_calls($tag, $cap, undef, from => $cap);
    is($n + $m, 2 * $cap, "$tag: " . 2 * $cap . ' calls accepted');
    my $t = time;
    my $agree = $s->wait_for(sub { leases() == in_progress() && in_progress() >= $cap },
        timeout => 20, interval => 0.1, soft => 1);
    ok($agree, sprintf("$tag: Redis's leases match the IN_PROGRESS rows again (%.1fs)", time - $t))
        or diag('leases=' . leases() . ' in_progress=' . in_progress());
    my $st = $sc->end_checks($tag, 2 * $cap, $cap, 120);
    diag("$tag: maxInProgress=$st->{maxInProgress} maxPerPhone=$st->{maxPerPhone}");
    like($sc->log_since_start, qr/msg="Redis lost the slot set; rebuilding it from PostgreSQL" in_progress=$cap/,
        "$tag: the restarted Redis was rebuilt with the $cap calls in progress");
    $sc->no_crash_checks($tag, $master);
}

# =============================================================== b) pause ===
if ($sc->want('pause')) {
    my $tag = 'pause';
    my $cap = 3;
    $s->redis_cli('FLUSHALL');
    my $master = $sc->start([ '--delay', '2s-3s' ],
        'dispatch.max_concurrent_calls' => $cap,
        'dispatch.reconcile_interval'   => '1s');
    ok(wait_epoch(), "$tag: the daemon marked the epoch");
    my ($n) = $sc->post_calls($tag, 3 * $cap);
    is($n, 3 * $cap, "$tag: " . 3 * $cap . ' calls accepted');
    ok($s->wait_for(sub { in_progress() == $cap }, timeout => 30, interval => 0.05, soft => 1),
        "$tag: $cap calls hold every slot");
    # their webhooks come within 3 s: all inside the pause
    $s->redis_cli('CLIENT', 'PAUSE', 8000);
    my $t = time;
    ok($s->wait_for(sub { $sc->count_where($tag, "status = 'COMPLETED'") >= $cap },
            timeout => 8, interval => 0.1, soft => 1),
        "$tag: the $cap calls were settled by their webhooks during the pause");
    # 8 s pause + retries; the leases would expire after 16 min
    my ($ok, $took) = $sc->wait_settled($tag, 90);
    ok($ok, sprintf("$tag: every call settled %.1fs after the pause began", time - $t));
    $sc->end_checks($tag, 3 * $cap, $cap, 5);
    ok($s->wait_for(sub { leases() == 0 }, timeout => 10, interval => 0.1, soft => 1),
        "$tag: no lease left once everything settled");
    like($sc->log_since_start, qr/msg="slot release got no answer; retrying"/,
        "$tag: the releases without an answer were retried");
    $sc->no_crash_checks($tag, $master);
}

# ============================================================== c) strays ===
if ($sc->want('strays')) {
    my $tag = 'strays';
    $s->redis_cli('FLUSHALL');
    my $master = $sc->start([ '--delay', '60s-60s' ],
        'dispatch.max_concurrent_calls' => 5,
        'dispatch.call_timeout'         => '10m',
        'dispatch.reconcile_interval'   => '300ms');
    ok(wait_epoch(), "$tag: the daemon marked the epoch");
    my ($n, $id) = $sc->post_calls($tag, 1);
    ok($s->wait_for(sub { in_progress() == 1 }, timeout => 30, interval => 0.1, soft => 1),
        "$tag: one call in progress");
    my ($owner, $attempts, $to) = split /\|/,
        $s->psql("SELECT slot_owner, attempts, to_number FROM calls WHERE id = '$id'");
    my $token = "$owner:$attempts";
    ok($s->wait_for(sub { ($s->redis_cli('GET', "${P}phone:$to") // '') =~ /\Q$token\E/ },
            timeout => 10, interval => 0.1, soft => 1), "$tag: its phone lock holds $token");
    my $lease_ms = (600 + 60) * 1000;
    my $now = redis_now_ms();
    # old strays: taken (expiry - lease) long ago
    my $old_slot = '00000000-0000-4000-8000-000000000001.1.1:1';
    $s->redis_cli('ZADD', "${P}slots", $now + 20_000, $old_slot);
    $s->redis_cli('ZADD', "${P}slots", $now + 20_000, 'garbage');
    $s->redis_cli('SET', "${P}phone:+15559990001", 'not-a-token:1', 'PX', 20_000);
    # a young stray: taken just now, as by a job that has not committed yet
    my $young = '00000000-0000-4000-8000-000000000002.1.1:1';
    $s->redis_cli('ZADD', "${P}slots", $now + $lease_ms, $young);
    # the call's own lease and lock, lost
    $s->redis_cli('ZREM', "${P}slots", $token);
    $s->redis_cli('DEL', "${P}phone:$to");
    my $t = time;
    my $ok = $s->wait_for(sub {
        my $z = $s->redis_cli('ZRANGE', "${P}slots", 0, -1);
        $z !~ /\Q$old_slot\E/ && $z !~ /^garbage$/m && $z =~ /\Q$token\E/
            && $s->redis_cli('EXISTS', "${P}phone:+15559990001") =~ /0/
            && ($s->redis_cli('GET', "${P}phone:$to") // '') =~ /\Q$token\E/
    }, timeout => 15, interval => 0.1, soft => 1);
    ok($ok, sprintf("$tag: strays removed, the call's lease and lock restored (%.1fs)", time - $t))
        or diag($s->redis_cli('ZRANGE', "${P}slots", 0, -1, 'WITHSCORES'));
    like($s->redis_cli('ZRANGE', "${P}slots", 0, -1), qr/\Q$young\E/,
        "$tag: the young lease with no IN_PROGRESS row is kept (a start may be committing)");
    like($sc->log_since_start, qr/msg="Redis and PostgreSQL disagreed: reconciled" dropped=\d+ restored=\d+/,
        "$tag: the reconcile logged what it changed");
    $sc->no_crash_checks($tag, $master);
    $s->stop_daemon;
}

done_testing();
