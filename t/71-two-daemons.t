#!/usr/bin/perl
# Two callorchd daemons sharing one stack (DESIGN.md section 3: "several
# daemons may share one PostgreSQL, Redis and Kafka"): same database, same
# Redis, same Kafka topic and consumer group, same provider simulator;
# different HTTP ports, pid files, control sockets and logs.  Calls posted
# to both settle with the global cap and the per-phone lock held across
# the daemons, exactly one scheduler leads, and when the leader is killed
# (SIGKILL to its whole process group) the other takes the lease over
# within a few ticks and calls posted afterwards still settle.
use strict;
use warnings;
use List::Util qw(max);
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchTest;

CallorchTest::require_stack();

my $CAP = 5;
my $TICK = 0.2;    # s, [dispatch] scheduler_interval: the lease lasts max(5 ticks, 2 s)

my $s = CallorchTest->new;    # the stack, and daemon A

# psql and HTTP retried on a loaded machine (CallorchTest::psql_retry,
# api_retry); POSTs carry an Idempotency-Key.
sub db { return $s->psql_retry(@_) }
sub api_retry { my ($obj, @args) = @_; return $obj->api_retry(@args) }
$s->start_all;
$s->migrate;
$s->start_sim('--delay', '20ms-150ms', '--success-rate', '0.7', '--seed', '71');

my %common = (
    'dispatch.max_concurrent_calls' => $CAP,
    'dispatch.max_attempts'         => 3,
    'dispatch.backoff_base'         => '200ms',
    'dispatch.backoff_max'          => '1s',
    'dispatch.scheduler_interval'   => ($TICK * 1000) . 'ms',
    # a call whose webhook went to a killed daemon is reclaimed soon
    'dispatch.call_timeout'         => '5s',
);
$s->write_config(%common);

# Daemon B: its own directory (config, pid file, control socket, log), the
# same services.  A second CallorchTest object starts and tears it down;
# it starts no service of its own.
my $sb = CallorchTest->new;
my $bdir = $sb->tmpdir;
my $bconfig = "$bdir/callorch.ini";
sub write_b_config {
    my $bport = CallorchTest::free_port();
    my $text = $s->config_text(%common,
        'http.listen'           => "127.0.0.1:$bport",
        'http.public_base_url'  => "http://127.0.0.1:$bport",
        'daemon.pid_file'       => "$bdir/callorchd.pid",
        'daemon.control_socket' => "$bdir/control.sock",
        'daemon.log_target'     => "$bdir/callorchd.log");
    open my $fh, '>', $bconfig or die "$bconfig: $!";
    print $fh $text;
    close $fh or die "$bconfig: $!";
}

my %d = (A => $s, B => $sb);
my %master;
$master{A} = $s->start_daemon;
for my $try (1 .. 3) {    # another process may take B's port before B binds it
    write_b_config();
    last if $master{B} = eval { $sb->start_daemon(config => $bconfig) };
    my $out = '';
    if (open my $fh, '<', "$bdir/callorchd.out") {
        local $/;
        $out = <$fh> // '';
    }
    die $@ if $try == 3 || ($sb->log_text . $out) !~ /Address already in use/;
}
isnt($s->http_port, $sb->http_port, sprintf('two daemons: A on port %d (pid %d), B on port %d (pid %d)',
    $s->http_port, $master{A}, $sb->http_port, $master{B}));

sub taken {
    my ($name) = @_;
    return grep { /scheduler lease taken/ } split /\n/, $d{$name}->log_text;
}

sub lost {
    my ($name) = @_;
    return grep { /scheduler lease lost/ } split /\n/, $d{$name}->log_text;
}

sub sched_pid {
    my ($name) = @_;
    my ($c) = grep { $_->{title} =~ /sched/ } $s->children_of($master{$name});
    return $c ? $c->{pid} : -1;
}

# "host:pid" of the scheduler holding the lease in Redis, as the pid.
sub leader_pid {
    my $owner = $s->redis_cli('GET', 'callorch:leader');
    return $owner =~ /:(\d+)$/ ? $1 : 0;
}

sub leader_name {
    my $pid = leader_pid();
    my ($name) = grep { sched_pid($_) == $pid } keys %master;
    return $name;
}

# Both daemons' consumers are in the group with partitions of their own
# before the calls come (the mock broker's first join takes about 3 s).
my $assigned = sub {
    my ($name) = @_;
    return scalar grep { /partitions assigned/ && !/count=0/ } split /\n/, $d{$name}->log_text;
};
ok($s->wait_for(sub { $assigned->('B') >= 2 && $assigned->('A') >= 2 }, timeout => 60, soft => 1),
    "both daemons' kafka consumers got partitions");
ok($s->wait_for(sub { taken('A') + taken('B') >= 1 }, timeout => 20, soft => 1),
    'a scheduler took the lease');

# 300 calls, 150 to each daemon, alternating; call 2m goes to A and 2m+1 to
# B with the same number, so every number is used by both daemons (and the
# first 30 numbers twice by each): 120 distinct numbers.
my @phones = map { sprintf '+1555300%04d', $_ } 1 .. 120;
my %created = (A => 0, B => 0);
my $t0 = time;
for my $i (0 .. 299) {
    my $name = $i % 2 ? 'B' : 'A';
    my ($st) = api_retry($d{$name}, POST => '/api/v1/calls',
        { to => $phones[ int($i / 2) % 120 ], scriptId => "two-$name-$i" },
        { 'Idempotency-Key' => "two-$name-$i" });
    $created{$name}++ if $st == 201 || $st == 200;
}
is($created{A}, 150, '150 calls accepted by A');
is($created{B}, 150, '150 calls accepted by B');

sub settled {
    my ($timeout, $what) = @_;
    my $t = time;
    my $ok = $s->wait_for(sub {
        (eval { $s->psql("SELECT count(*) FROM calls WHERE status NOT IN ('COMPLETED', 'FAILED')") }
            // -1) == 0
    }, timeout => $timeout, interval => 0.5, soft => 1);
    ok($ok, sprintf('%s: every call ended COMPLETED or FAILED (%.1fs)', $what, time - $t));
    diag(db("SELECT status, count(*) FROM calls GROUP BY status ORDER BY 1")) unless $ok;
}

# What the provider saw, against what the database recorded.
sub provider_checks {
    my ($what) = @_;
    my $st = $s->sim_stats;
    note("$what: simulator started=$st->{started} maxInProgress=$st->{maxInProgress} "
        . "maxPerPhone=$st->{maxPerPhone} duplicateStarts=$st->{duplicateStarts}");
    cmp_ok($st->{maxInProgress}, '<=', $CAP, "$what: never more than $CAP calls at once at the "
        . 'provider, over both daemons');
    cmp_ok($st->{maxPerPhone}, '<=', 1, "$what: never two calls at once for one number");
    is($st->{duplicateStarts}, 0, "$what: no attempt started twice");
    my $attempts = db('SELECT count(*) FROM call_attempts');
    is($st->{started}, $attempts, "$what: provider starts ($st->{started}) = attempts recorded ($attempts)");
    is(db('SELECT count(*) FROM calls c WHERE attempts <> '
            . '(SELECT count(*) FROM call_attempts a WHERE a.call_id = c.id)'), 0,
        "$what: each call has one attempt row per attempt");
    is(db('SELECT count(*) FROM call_attempts WHERE ended_at IS NULL'), 0,
        "$what: every attempt ended");
    return $st;
}

settled(300, '300 calls over two daemons');
my $st = provider_checks('two daemons');
cmp_ok($st->{maxInProgress}, '>=', 2, 'calls did run concurrently');
my %started = map { my $n = $_; $n => scalar(() = $d{$n}->log_text =~ /msg="?call started/g) } qw(A B);
note("calls started by A: $started{A}, by B: $started{B}");
ok($started{A} > 0 && $started{B} > 0, 'both daemons started calls at the provider');

# ---------------------------------------------------------- leadership ---

# Normally the first leader keeps the lease throughout.  A tick stalled
# past the lease (a badly overloaded machine) may hand it over; then the
# old leader must have noticed ("lease lost") before it scheduled again.
my %taken = map { $_ => [ taken($_) ] } qw(A B);
my %lost = map { $_ => [ lost($_) ] } qw(A B);
note(sprintf '"scheduler lease taken": A %d, B %d; "scheduler lease lost": A %d, B %d',
    map { scalar @$_ } @taken{qw(A B)}, @lost{qw(A B)});
my $leader = leader_name() // '?';
my $other = $leader eq 'A' ? 'B' : 'A';
ok($leader eq 'A' || $leader eq 'B', "the Redis lease names a scheduler: daemon ${leader}'s");
is(@{ $taken{$leader} } - @{ $lost{$leader} }, 1, "daemon $leader logged the lease taken and not lost");
is(@{ $taken{$other} } - @{ $lost{$other} }, 0,
    "daemon $other does not think it leads (taken and lost as often): one leader at a time")
    or diag join "\n", @{ $taken{$other} }, @{ $lost{$other} };
my ($owner) = $taken{$leader}[-1] =~ /owner=(\S+)/;
like($owner // '', qr/:\Q${\ sched_pid($leader)}\E$/, "... as its log says (owner=$owner)");

# Kill the leader, master and children at once (its process group).
my $dead = $d{$leader};
my $gone = $master{$leader};
my $t_kill = time;
kill 'KILL', -$gone;
my $code = $dead->stop_daemon(signal => 'KILL', timeout => 5);    # reaps it
is($code, 137, "daemon $leader (the leader) killed with SIGKILL");
ok($s->wait_for(sub { !kill(0, -$gone) }, timeout => 5, soft => 1),
    "no process of daemon $leader is left");

my $took = $s->wait_for(sub { taken($other) > @{ $taken{$other} } && leader_name() }, timeout => 30,
    interval => 0.05, soft => 1);
my $after = time - $t_kill;
ok($took, sprintf('daemon %s took the lease over, %.1fs after the kill', $other, $after));
# The lease lasts max(5 x 0.2 s, 2 s) = 2 s from its last renewal: a few
# ticks after that; generous for a loaded machine.
cmp_ok($after, '<', 10, 'within a few ticks of the lease expiring');
is(leader_name() // '?', $other, "the Redis lease now names daemon ${other}'s scheduler");
is(scalar(taken($other)), @{ $taken{$other} } + 1, "daemon $other logged the takeover once");

# Calls posted to the survivor settle: its consumers take over the dead
# daemon's partitions (once the broker gave up on them), its scheduler
# republishes what waits.
my $alive = $d{$other};
my $n_after = 0;
for my $i (0 .. 59) {
    my ($code) = api_retry($alive, POST => '/api/v1/calls',
        { to => $phones[ ($i * 7) % 120 ], scriptId => "after-$i" }, { 'Idempotency-Key' => "after-$i" });
    $n_after++ if $code == 201 || $code == 200;
}
is($n_after, 60, "60 calls accepted by $other after the kill");
settled(300, 'after the kill');
provider_checks('after the kill');
is(db("SELECT count(*) FROM calls WHERE script_id LIKE 'after-%' AND status IN ('COMPLETED', 'FAILED')"), 60,
    'the 60 calls posted after the kill all settled');
is(db('SELECT count(*) FROM calls'), 360, 'no call lost or duplicated (360 in all)');

my @errors = grep { /level=error/ } split /\n/, $alive->log_text;
is(scalar @errors, 0, "daemon $other logged no error") or diag join "\n", @errors[0 .. ($#errors > 9 ? 9 : $#errors)];
is($alive->stop_daemon, 0, "daemon $other stops cleanly");
done_testing;
