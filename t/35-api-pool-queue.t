#!/usr/bin/perl
# A create request whose statement cannot get a database connection in time
# (the http worker's pool is busy past its queue timeout: 5 s, shortened to
# 1 s here with the test build's CALLORCH_TEST_PG_QUEUE_TIMEOUT) is answered
# 503 + Retry-After, and creating calls works again as soon as a connection
# frees up.  Regression test: intake's job that the pool refused before a
# connection took it stayed "open" for good, and every later POST on that
# worker hung (seen in CI with PostgreSQL shut down immediately; made
# deterministic here with a table lock).
#
# One http worker with ONE pool connection: a psql session locks the calls
# table for a while, a GET takes the worker's only connection (blocked on
# the lock), and a POST then waits in the pool's queue.
#
# Pipelining (DESIGN.md section 3: every request gets an answer, in order):
# meanwhile two connections each pipeline POSTs and a GET behind them.  Their
# first POSTs wait in the pool's queue and are refused with it; answering
# them must not lose the requests pipelined behind (regression: the second
# POST was queued into an intake entry being freed and never answered).
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(_exit);
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchTest;

CallorchTest::require_stack();

my $QUEUE_S = 1;    # the pool's queue timeout (production: 5 s)
my $LOCK_S = 5;     # how long the table stays locked: well past the queue timeout

my $s = CallorchTest->new;
$s->start_all;
$s->migrate;
$s->write_config('http.workers' => 1, 'postgres.pool_size' => 1);
my $master = $s->start_daemon(tunables => { pg_queue_timeout => $QUEUE_S });

my ($st, $call) = $s->api(POST => '/api/v1/calls', { to => '+15553500001', scriptId => 'before' });
is($st, 201, 'a call created before the lock');

# Send a raw request on its own connection; read the answer later.
sub send_raw {
    my ($method, $path, $body) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->http_port,
        Proto => 'tcp', Timeout => 5) or die "connect: $!";
    my $key = $s->api_key;
    my $text = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        . (defined $key ? "Authorization: Bearer $key\r\n" : '')
        . (defined $body ? "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n" : '')
        . "\r\n" . ($body // '');
    syswrite($sock, $text) == length $text or die "write: $!";
    return { sock => $sock, sent => time };
}

# Wait up to TIMEOUT s for the answer of a send_raw request.
sub read_raw {
    my ($r, $timeout) = @_;
    my $res = CallorchTest::raw_read($r->{sock}, $timeout);
    $res->{took} = time - $r->{sent};
    close $r->{sock};
    return $res;
}

# The lock holder: a separate psql session, in a child process.
my $locker = fork // die "fork: $!";
if ($locker == 0) {
    eval { $s->psql("BEGIN; LOCK TABLE calls IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep($LOCK_S); COMMIT;") };
    _exit(0);
}
my $t_lock = time;
ok($s->wait_for(sub {
    $s->psql("SELECT count(*) FROM pg_locks WHERE relation = 'calls'::regclass"
        . " AND mode = 'AccessExclusiveLock' AND granted") == 1
}, timeout => 10, soft => 1), 'the calls table is locked');

my $get = send_raw(GET => "/api/v1/calls/$call->{id}");
# the GET holds the worker's only connection, waiting for the lock
ok($s->wait_for(sub {
    $s->psql("SELECT count(*) FROM pg_locks WHERE relation = 'calls'::regclass AND NOT granted") >= 1
}, timeout => 10, interval => 0.02, soft => 1), 'the GET waits for the lock');
my $post = send_raw(POST => '/api/v1/calls', encode_json({ to => '+15553500002', scriptId => 'queued' }));

# N POSTs (scriptId "pipe<N>-<i>") then a GET of the call created before the
# lock, all in one write on one keep-alive connection.
sub send_pipeline {
    my ($n) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->http_port,
        Proto => 'tcp', Timeout => 5) or die "connect: $!";
    my $key = $s->api_key;
    my $auth = defined $key ? "Authorization: Bearer $key\r\n" : '';
    my $text = '';
    for my $i (1 .. $n) {
        my $body = encode_json({ to => sprintf('+155535%02d%03d', $n, $i), scriptId => "pipe$n-$i" });
        $text .= "POST /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\n$auth"
            . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    }
    $text .= "GET /api/v1/calls/$call->{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth}Connection: close\r\n\r\n";
    syswrite($sock, $text) == length $text or die "write: $!";
    return { sock => $sock, n => $n, sent => time };
}
my @pipes = map { send_pipeline($_) } 2, 5;

my $r = read_raw($post, $LOCK_S - 1);
is($r->{status}, 503, sprintf('the POST that waited for a connection: 503 (after %.1fs)', $r->{took}))
    or diag explain $r;
like($r->{headers}{'retry-after'} // '', qr/^[1-9]\d*$/, '... with Retry-After');
cmp_ok($r->{took}, '>=', $QUEUE_S - 0.05, "... after the ${QUEUE_S}s queue timeout");
cmp_ok($r->{took}, '<', $LOCK_S - 1, '... before the lock was released (the queue timeout, not the lock, ended it)');

my $g = read_raw($get, $LOCK_S + 10);
is($g->{status}, 200, sprintf('the GET is answered once the lock is gone (%.1fs after the lock)', time - $t_lock));
waitpid($locker, 0);

# Each pipelined POST is answered (503 while the pool's queue times out,
# 201 once the lock is gone), in request order, then the GET.
for my $p (@pipes) {
    my ($n, @st, @created) = ($p->{n});
    for my $i (1 .. $n) {
        my $res = CallorchTest::raw_read($p->{sock}, 2 * $LOCK_S + 10);
        push @st, $res->{status};
        push @created, $res->{json}{scriptId} if $res->{status} == 201;
        last unless $res->{status};
    }
    is($st[0], 503, "pipeline of $n POSTs: the first, refused with the pool's queue, is answered 503");
    is(scalar(grep { $_ == 201 || $_ == 503 } @st), $n, "pipeline of $n POSTs: every POST answered, 503 or 201")
        or diag "statuses: @st";
    is_deeply(\@created, [ map { "pipe$n-$_" } ($n - @created + 1) .. $n ],
        "pipeline of $n POSTs: the created calls answered in request order");
    my $g = CallorchTest::raw_read($p->{sock}, 2 * $LOCK_S + 10);
    # the GET waits in the same queue: 503 if it timed out there while the
    # lock held, else 200 with its call; either way it is answered, last
    ok($g->{status} == 200 || $g->{status} == 503,
        "pipeline of $n POSTs: the GET behind them answered (200 or 503: $g->{status})");
    is($g->{status} == 200 ? $g->{json}{id} // '' : $call->{id}, $call->{id},
        '... with the call it asked for when 200');
    is($s->psql("SELECT count(*) FROM calls WHERE script_id LIKE 'pipe$n-%'"), scalar(@created),
        '... and exactly the calls answered 201 are stored');
    close $p->{sock};
}

# The worker creates calls again: the refused job did not stay open.
my $t0 = time;
($st, my $after) = $s->api(POST => '/api/v1/calls', { to => '+15553500003', scriptId => 'after' });
is($st, 201, sprintf('a POST after the lock: 201 (%.2fs)', time - $t0));
($st) = $s->api(POST => '/api/v1/calls', { to => '+15553500004', scriptId => 'after' });
is($st, 201, 'and another');
is($s->psql("SELECT count(*) FROM calls WHERE script_id = 'queued'"), 0, 'the refused POST stored nothing');
is($s->psql("SELECT count(*) FROM calls WHERE script_id IN ('before', 'after')"), 3, 'the others are stored');

is($s->daemon_pid, $master, 'the same master');
unlike($s->log_text, qr/msg="child (?:exited|killed)/, 'no child exited or was killed');
is($s->stop_daemon, 0, 'callorchd stops cleanly');
done_testing;
