#!/usr/bin/perl
# The test stack itself (t/lib/CallorchTest.pm): PostgreSQL, Redis and the
# Kafka-protocol broker start on loopback, serve other processes, restart,
# fail and recover on demand, and leave nothing behind — also when the test
# using them dies or is interrupted.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchTest;

CallorchTest::require_stack();

my $check = CallorchTest::builddir() . '/t/kafka-check';
-x $check or BAIL_OUT("$check is not built (make check builds it)");

# Run t/kafka-check against BROKERS; returns (exit code, output).
sub kafka_check {
    my ($brokers, @args) = @_;
    my $out = `'$check' -b '$brokers' @args 2>&1`;
    return ($? >> 8, $out);
}

# Processes whose command line mentions DIR (the postmaster's does: -D DIR/pg/data).
sub procs_mentioning {
    my ($dir) = @_;
    my @found;
    for my $cmdline (glob '/proc/[0-9]*/cmdline') {
        open my $fh, '<', $cmdline or next;
        local $/;
        my $c = <$fh> // '';
        next if $cmdline =~ m{^/proc/$$/};
        push @found, $cmdline =~ m{^/proc/(\d+)/} if index($c, $dir) >= 0;
    }
    return @found;
}

sub alive { return grep { kill 0, $_ } @_ }

my $s = CallorchTest->new;
my $t0 = time;
$s->start_all;
diag(sprintf 'start_all took %.2fs', time - $t0);
my $dir = $s->tmpdir;

# ---- PostgreSQL
like($s->pg_conninfo, qr/^host=127\.0\.0\.1 port=\d+ dbname=callorch user=callorch$/,
    'pg_conninfo names host, port, database and user');
is($s->psql('SELECT 1'), '1', 'psql SELECT 1');
is($s->psql("SELECT current_user || ' ' || current_database() || ' ' || host(inet_server_addr())"),
    'callorch callorch 127.0.0.1', 'connected over TCP to 127.0.0.1 as callorch, database callorch');
is($s->psql('SELECT rolsuper FROM pg_roles WHERE rolname = current_user'), 't', 'callorch is a superuser');
is($s->psql('SHOW listen_addresses'), '127.0.0.1', 'listens on loopback only');
is($s->psql('SHOW fsync') . ' ' . $s->psql('SHOW synchronous_commit'), 'on on',
    'durability left at the defaults (fsync, synchronous_commit)');
{
    # libpq with the conninfo string itself, as callorchd will use it.
    my $psql = -x '/usr/bin/psql' ? '/usr/bin/psql' : 'psql';
    my $conninfo = $s->pg_conninfo;
    my $out = `$psql -XAtq '$conninfo' -c 'SELECT 40 + 2' 2>&1`;
    is($out, "42\n", 'the conninfo string works from a separate psql');
}
$s->psql('CREATE TABLE stack_probe (x int); INSERT INTO stack_probe VALUES (7)');
eval { $s->psql('SELECT * FROM no_such_table') };
like($@, qr/no_such_table/, 'psql dies with the server message on an error');

# ---- Redis
is($s->redis_cli('PING'), 'PONG', 'redis PING answers PONG');
$s->redis_cli('SET', 'stack:probe', 'v1');
is($s->redis_cli('GET', 'stack:probe'), 'v1', 'redis SET/GET');
is($s->redis_cli('CONFIG', 'GET', 'save'), "save\n", 'redis: no RDB snapshots');
is($s->redis_cli('CONFIG', 'GET', 'appendonly'), "appendonly\nno", 'redis: no AOF');

# ---- Kafka: every client below is a separate process talking TCP to the broker.
my $brokers = $s->kafka_brokers;
like($brokers, qr/^127\.0\.0\.1:\d+$/, "broker address $brokers");
my ($rc, $out) = kafka_check($brokers, '-m produce -t calls -n 200 -k stack');
is($rc, 0, 'a producer process delivers 200 messages') or diag($out);
($rc, $out) = kafka_check($brokers, '-m consume -t calls -n 200 -k stack -g stack');
is($rc, 0, 'another process consumes all 200 in a consumer group and commits') or diag($out);
($rc, $out) = kafka_check($brokers, '-m verify -t calls -g stack');
is($rc, 0, 'a third process fetches the committed offsets: they equal the high watermarks')
    or diag($out);
is(scalar(() = $out =~ /^kafka-check: calls\[\d+\] committed/mg), 4, 'topic calls has the 4 partitions asked for');

# ---- restarts
my $pg_port = $s->pg_port;
my $pg_pid  = $s->pg_pid;
$s->restart_postgres;
is($s->pg_port, $pg_port, 'restart_postgres keeps the port');
isnt($s->pg_pid, $pg_pid, 'restart_postgres runs a new postmaster');
is($s->psql('SELECT x FROM stack_probe'), '7', 'restart_postgres keeps the data');
$pg_pid = $s->pg_pid;
$s->stop_postgres;
ok($s->wait_for(sub { !alive($pg_pid) }, soft => 1, timeout => 5), 'stop_postgres stops the postmaster');
{
    my $psql = -x '/usr/bin/psql' ? '/usr/bin/psql' : 'psql';
    my $conninfo = $s->pg_conninfo;
    `PGCONNECT_TIMEOUT=2 $psql -XAtq '$conninfo' -c 'SELECT 1' 2>&1`;
    isnt($? >> 8, 0, 'stopped postgres refuses connections');
}
$s->start_postgres;
is($s->psql('SELECT x FROM stack_probe'), '7', 'start_postgres again: same data');

my $redis_port = $s->redis_port;
$s->restart_redis;
is($s->redis_port, $redis_port, 'restart_redis keeps the port');
is($s->redis_cli('GET', 'stack:probe'), '', 'restart_redis comes back empty');

# ---- Kafka outage
$s->kafka_down;
($rc, $out) = kafka_check($brokers, '-m produce -t calls -n 5 -w 1');
isnt($rc, 0, 'kafka_down: producing fails');
like($out, qr/Connection refused/, 'kafka_down: connections are refused');
$s->kafka_up;
($rc, $out) = kafka_check($brokers, '-m produce -t calls -n 5');
is($rc, 0, 'kafka_up: same address, producing works again') or diag($out);
($rc, $out) = kafka_check($brokers, '-m consume -t calls -n 200 -k stack -g stack-again');
is($rc, 0, 'kafka_up: messages from before the outage are still there for a new group') or diag($out);
($rc, $out) = kafka_check($brokers, '-m verify -t calls -g stack');
like($out, qr/calls\[\d+\] committed [1-9]/, 'kafka_up: committed offsets survived the outage');

# ---- teardown
my @pids = grep { defined } ($s->pg_pid, $s->redis_pid, $s->kafka_pid);
is(scalar @pids, 3, 'postmaster, redis and broker pids known');
undef $s;
my $gone = 0;
for (1 .. 100) {
    last if ($gone = !alive(@pids) && !procs_mentioning($dir));
    sleep 0.05;
}
ok($gone, 'teardown stops postgres, redis and the broker') or diag("left: @{[ alive(@pids) ]}");
ok(!-e $dir, 'teardown removes the temporary directory') unless $ENV{CALLORCH_TEST_LEAVE};

# ---- teardown of a test that dies, and of one that is interrupted (in parallel)
my $lib = CallorchTest::srcdir() . '/t/lib';
my %case = (die => 'die "boom\n"', SIGTERM => 'sleep 60');
for my $name (sort keys %case) {
    my $script = 'use CallorchTest; $| = 1; my $s = CallorchTest->new; $s->start_all; '
        . 'print join(" ", $s->tmpdir, $s->pg_pid, $s->redis_pid, $s->kafka_pid), "\n"; '
        . $case{$name};
    local $ENV{CALLORCH_TEST_LEAVE} = '';
    my $pid = open(my $fh, '-|', $^X, "-I$lib", '-e', $script) or die "fork: $!";
    $case{$name} = { pid => $pid, fh => $fh };
}
for my $name (sort keys %case) {
    my $c = $case{$name};
    my $fh = $c->{fh};
    chomp(my $info = <$fh> // '');
    my ($tdir, @p) = split ' ', $info;
    kill 'TERM', $c->{pid} if $name eq 'SIGTERM';
    { local $/; <$fh> }
    close $fh;
    my $status = $?;
    ok(defined $tdir && @p == 3, "$name: the stack had started") or diag("got '$info'");
    next unless defined $tdir;
    isnt($status, 0, "$name: the test process failed (status $status)");
    my $clean = 0;
    for (1 .. 100) {
        last if ($clean = !alive(@p) && !procs_mentioning($tdir) && !-e $tdir);
        sleep 0.05;
    }
    ok($clean, "$name: nothing left (processes, directory)")
        or diag("alive: @{[ alive(@p) ]}; dir exists: " . (-e $tdir ? 'yes' : 'no'));
}

done_testing;
