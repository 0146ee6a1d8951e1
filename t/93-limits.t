#!/usr/bin/perl
# The limits of DESIGN.md section 10 on the real stack, with TWO daemons
# sharing it (t/71's set-up): campaigns and their calls are inserted with
# SQL (published_at NULL: the scheduler publishes them), the simulator's
# calls last 2 s.
#
#  a) maxConcurrent 2, global cap 10: never more than 2 of the campaign's
#     calls IN_PROGRESS at once (sampled, and from the attempts' start and
#     end), while single calls run beside them; both daemons start some;
#  b) callsPerSecond 2: no one-second window holds more than 2 starts of the
#     campaign; [provider] max_calls_per_second 3 (for the whole test): no
#     one-second window holds more than 3 starts of any call;
#  c) pause (UPDATE campaigns SET status = 'PAUSED'): no new start, the
#     calls in flight finish; resume: the rest start;
#  d) the provider answers one start 429 with Retry-After: 3 (the
#     simulator's /control/rate-limit): no daemon starts a call for 3 s,
#     and the scheduler publishes nothing meanwhile.
#
# The windows are computed from call_attempts.started_at (PostgreSQL's
# clock at the start update, a few ms after the acquire on Redis's clock):
# the acquire's window is 50 ms wider than a second (SLOT_PACE_GUARD_MS),
# and the check here allows 50 ms of that spread.
use strict;
use warnings;
use HTTP::Tiny;
use List::Util qw(max min);
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchTest;

CallorchTest::require_stack();

my $CAP = 10;
my $RATE = 3;        # [provider] max_calls_per_second
my $SLACK = 0.05;    # s: started_at against Redis's clock (above)

my $s = CallorchTest->new(phone_base => 9_300_000);
sub db { return $s->psql_retry(@_) }
$s->start_all;
$s->migrate;
$s->start_sim('--delay', '2s', '--success-rate', '1', '--seed', '93');

my %common = (
    'dispatch.max_concurrent_calls'   => $CAP,
    'dispatch.scheduler_interval'     => '200ms',
    'dispatch.backoff_base'           => '200ms',
    'dispatch.backoff_max'            => '1s',
    'provider.max_calls_per_second'   => $RATE,
);
$s->write_config(%common);

# Daemon B, as in t/71: its own directory, the same services.
my $sb = CallorchTest->new;
my $bdir = $sb->tmpdir;
my $bconfig = "$bdir/callorch.ini";
sub write_b_config {
    my $bport = CallorchTest::free_port();
    open my $fh, '>', $bconfig or die "$bconfig: $!";
    print $fh $s->config_text(%common,
        'http.listen'           => "127.0.0.1:$bport",
        'http.public_base_url'  => "http://127.0.0.1:$bport",
        'daemon.pid_file'       => "$bdir/callorchd.pid",
        'daemon.control_socket' => "$bdir/control.sock",
        'daemon.log_target'     => "$bdir/callorchd.log");
    close $fh or die "$bconfig: $!";
}
my %d = (A => $s, B => $sb);
$s->start_daemon;
for my $try (1 .. 3) {
    write_b_config();
    last if eval { $sb->start_daemon(config => $bconfig) };
    die $@ if $try == 3;
}
my $assigned = sub {
    my ($name) = @_;
    return scalar grep { /partitions assigned/ && !/count=0/ } split /\n/, $d{$name}->log_text;
};
ok($s->wait_for(sub { $assigned->('A') >= 1 && $assigned->('B') >= 1 }, timeout => 60, soft => 1),
    "both daemons' kafka consumers got partitions");

# A campaign row; its id.
sub campaign {
    my (%c) = @_;
    my $cols = join ', ', 'name', 'script_id', sort keys %c;
    my $vals = join ', ', "'t93'", "'t93'", map { "'$c{$_}'" } sort keys %c;
    return db("INSERT INTO campaigns ($cols) VALUES ($vals) RETURNING id");
}

# N calls of campaign CID (undef: single calls), due now, with TRIES
# attempts (default 1).
sub calls {
    my ($cid, $n, $tries) = @_;
    my @rows = map {
        sprintf "('%s', 't93', %d, %s, 5)", $s->next_phone, $tries // 1,
            defined $cid ? "'$cid'" : 'NULL'
    } 1 .. $n;
    db('INSERT INTO calls (to_number, script_id, max_attempts, campaign_id, priority) VALUES '
        . join(', ', @rows));
}

sub count_of {
    my ($cid, $status) = @_;
    return db("SELECT count(*) FROM calls WHERE campaign_id = '$cid' AND status = '$status'");
}

# Attempt start times (unix s) of the campaign CID (undef: all), in order.
sub starts {
    my ($cid) = @_;
    my $where = defined $cid ? "WHERE c.campaign_id = '$cid'" : '';
    return grep { $_ ne '' } split /\n/, db('SELECT extract(epoch FROM a.started_at) FROM '
        . "call_attempts a JOIN calls c ON c.id = a.call_id $where ORDER BY a.started_at");
}

# The smallest span of N + 1 consecutive starts: below one second, some
# one-second window held more than N.
sub tightest {
    my ($n, @t) = @_;
    my $m = 9e9;
    $m = min($m, $t[$_ + $n] - $t[$_]) for 0 .. $#t - $n;
    return $m;
}

# The most attempts of campaign CID in progress at once, from their
# start and end times.
sub overlap {
    my ($cid) = @_;
    my @ev;
    for (split /\n/, db('SELECT extract(epoch FROM a.started_at), '
            . 'extract(epoch FROM COALESCE(a.ended_at, now())) FROM call_attempts a '
            . "JOIN calls c ON c.id = a.call_id WHERE c.campaign_id = '$cid'")) {
        my ($b, $e) = split /\|/;
        push @ev, [ $b, 1 ], [ $e, -1 ];
    }
    my ($cur, $top) = (0, 0);
    for (sort { $a->[0] <=> $b->[0] || $a->[1] <=> $b->[1] } @ev) {
        $cur += $_->[1];
        $top = max($top, $cur);
    }
    return $top;
}

# A counter of NAME{reason=REASON}, summed over the daemons named (all).
sub metric {
    my ($name, $reason, @which) = @_;
    my $sum = 0;
    for my $x (@which ? @d{@which} : values %d) {
        my $m = HTTP::Tiny->new->get($x->base_url . '/metrics')->{content} // '';
        $sum += $1 if $m =~ /^\Q$name\E\{reason="\Q$reason\E"\} (\d+)/m;
    }
    return $sum;
}

# ============================================ a) maxConcurrent across daemons ===
my $ca = campaign(max_concurrent => 2);
calls($ca, 10);
calls(undef, 6);
my ($top, $all_top) = (0, 0);
my $done = $s->wait_for(sub {
    $top = max($top, count_of($ca, 'IN_PROGRESS'));
    $all_top = max($all_top, db("SELECT count(*) FROM calls WHERE status = 'IN_PROGRESS'"));
    count_of($ca, 'COMPLETED') == 10;
}, timeout => 90, interval => 0.1, soft => 1);
ok($done, 'a: the campaign\'s 10 calls completed')
    or diag(db('SELECT status, count(*) FROM calls GROUP BY 1'));
cmp_ok($top, '<=', 2, "a: sampled, at most 2 of its calls IN_PROGRESS at once ($top)");
cmp_ok($top, '==', 2, 'a: and 2 did run at once');
cmp_ok(overlap($ca), '<=', 2, 'a: from the attempts\' times too (' . overlap($ca) . ')');
cmp_ok($all_top, '>', 2, "a: the global cap is not what held them ($all_top calls at once)");
my %by = map {
    my $n = $_;
    my %ids = map { $_ => 1 } $d{$n}->log_text =~ /call started.*?call=([0-9a-f-]{36})/g;
    $n => scalar grep { $ids{$_} } split /\n/, db("SELECT id FROM calls WHERE campaign_id = '$ca'")
} qw(A B);
note("a: campaign calls started by A: $by{A}, by B: $by{B}");
ok($by{A} > 0 && $by{B} > 0, 'a: both daemons started calls of the campaign');
cmp_ok(metric('callorch_dispatch_deferred_total', 'campaign_full'), '>', 0,
    'a: deferrals counted as reason="campaign_full"');

# ================================================== b) calls per second ===
my $cb = campaign(calls_per_second => 2);
calls($cb, 12);
calls(undef, 12);
ok($s->wait_for(sub { count_of($cb, 'COMPLETED') == 12 }, timeout => 90, interval => 0.3,
        soft => 1), 'b: the paced campaign\'s 12 calls completed');
my @t = starts($cb);
my $tight = tightest(2, @t);
cmp_ok($tight, '>=', 1 - $SLACK, sprintf('b: never 3 starts of the campaign within a second '
    . '(tightest 3: %.3f s)', $tight)) or diag explain \@t;
cmp_ok($t[-1] - $t[0], '<', 12, sprintf('b: but not much slower than 2/s (%.1f s for 12)',
    $t[-1] - $t[0]));
ok($s->wait_for(sub { db("SELECT count(*) FROM calls WHERE status <> 'COMPLETED'") == 0 },
        timeout => 60, interval => 0.3, soft => 1), 'b: every call so far completed');
my @all = starts(undef);
$tight = tightest($RATE, @all);
cmp_ok($tight, '>=', 1 - $SLACK, sprintf('b: max_calls_per_second %d over both daemons: never '
    . '%d starts within a second (tightest: %.3f s over %d starts)', $RATE, $RATE + 1, $tight,
    scalar @all));
cmp_ok(metric('callorch_dispatch_deferred_total', 'pacing'), '>', 0,
    'b: deferrals counted as reason="pacing"');

# ======================================================= c) pause, resume ===
my $cc = campaign(calls_per_second => 1);
calls($cc, 8);
ok($s->wait_for(sub { count_of($cc, 'IN_PROGRESS') + count_of($cc, 'COMPLETED') >= 2 },
        timeout => 30, interval => 0.1, soft => 1), 'c: the campaign started');
db("UPDATE campaigns SET status = 'PAUSED' WHERE id = '$cc'");
sleep 1;    # a call loaded before the update may still start
my $n_paused = scalar starts($cc);
sleep 4;
is(scalar starts($cc), $n_paused, "c: paused: no new start in 4 s ($n_paused started)");
is(count_of($cc, 'IN_PROGRESS'), 0, 'c: the calls in flight finished');
cmp_ok(count_of($cc, 'PENDING'), '>', 0, 'c: the others wait PENDING');
db("UPDATE campaigns SET status = 'RUNNING' WHERE id = '$cc'");
ok($s->wait_for(sub { count_of($cc, 'COMPLETED') == 8 }, timeout => 60, interval => 0.3,
        soft => 1), 'c: resumed: all 8 completed');

# ============================================== d) the provider's 429 ===
my $r = HTTP::Tiny->new->request('PUT', $s->sim_url . '/control/rate-limit',
    { content => '{"count":1,"retryAfter":3}', headers => { 'Content-Type' => 'application/json' } });
is($r->{status}, 204, 'd: the simulator answers the next start 429 with Retry-After: 3');
calls(undef, 6, 2);    # the refused one is tried again after Retry-After
ok($s->wait_for(sub { db("SELECT count(*) FROM calls WHERE status <> 'COMPLETED'") == 0 },
        timeout => 60, interval => 0.3, soft => 1), 'd: the calls completed after the pause');
# The 429 answer arrived at the attempt's end; a call whose acquire was
# already done then may still start within a moment (IN_FLIGHT s).
my $IN_FLIGHT = 0.3;
my ($t429) = split /\n/, db("SELECT extract(epoch FROM ended_at) FROM call_attempts"
    . " WHERE error LIKE '%429%' ORDER BY started_at DESC LIMIT 1");
ok(defined $t429 && $t429 ne '', 'd: one start was refused 429');
my @after = grep { $_ > $t429 + $IN_FLIGHT } starts(undef);
cmp_ok($after[0] - $t429, '>=', 3 - 0.2, sprintf('d: no daemon started a call for 3 s after it '
    . '(next start %.2f s later)', $after[0] - $t429));
cmp_ok($after[0] - $t429, '<', 6, 'd: and starts resumed soon after');
# the calls already on their way when the 429 came are parked (counted);
# the scheduler publishes nothing more until the pause ends, rather than
# publishing and parking the backlog at every tick
my $deferred = metric('callorch_dispatch_deferred_total', 'provider_429');
cmp_ok($deferred, '<=', 10, "d: the backlog was held back, not spun through Kafka ($deferred "
    . 'deferrals counted as reason="provider_429")');
note(sprintf 'd: deferred for the 429 pause by A: %d, by B: %d',
    map { metric('callorch_dispatch_deferred_total', 'provider_429', $_) } qw(A B));

my $st = $s->sim_stats;
cmp_ok($st->{maxInProgress}, '<=', $CAP, "the global cap held ($st->{maxInProgress})");
is($st->{maxPerPhone}, 1, 'never two calls at once for one number');

$sb->stop_daemon;
$s->stop_daemon;
done_testing();
