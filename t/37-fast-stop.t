#!/usr/bin/perl
# Fast stop (SIGINT) with metrics requests in flight (issue 9 item 5): the
# http worker frees its API state while /metrics waits for Redis and
# /api/v1/metrics waits for PostgreSQL.  Failing those requests must not
# touch what was already freed.  Regression: the PostgreSQL pool was freed
# first, then freeing the Redis client failed the /metrics request, whose
# callback went on to count statuses on the freed pool (heap-use-after-free
# under AddressSanitizer; in a plain build, undefined behaviour).  Run it in
# the sanitizer build too: AddressSanitizer's report lands in callorchd.out.
#
# One http worker.  PostgreSQL is held with a table lock (the status count
# waits for it), Redis with CLIENT PAUSE; the daemon's debug log says when
# each request reached its handler.
use strict;
use warnings;
use IO::Socket::INET;
use POSIX qw(_exit);
use Test::More;
use CallorchTest;

CallorchTest::require_stack();

my $s = CallorchTest->new;
$s->start_postgres;
$s->start_redis;
$s->migrate;
$s->write_config('http.workers' => 1, 'daemon.log_level' => 'debug');
my $master = $s->start_daemon;

ok($s->wait_for(sub {
    my ($st, $b) = $s->api(GET => '/readyz');
    $st == 200 && ref $b && ($b->{redis} // '') eq 'up'
}, timeout => 20, soft => 1), 'the worker reached PostgreSQL and Redis');
my ($st) = $s->api(GET => '/metrics');
is($st, 200, '/metrics answers before the test holds anything');

# Send a GET on its own connection; the answer is never read.
sub send_get {
    my ($path) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->http_port,
        Proto => 'tcp', Timeout => 5) or die "connect: $!";
    my $key = $s->api_key;
    my $text = "GET $path HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . (defined $key ? "Authorization: Bearer $key\r\n" : '') . "\r\n";
    syswrite($sock, $text) == length $text or die "write: $!";
    return $sock;
}

# How often the worker has handed PATH to the API so far.
sub handed {
    my ($path) = @_;
    return scalar grep { /msg="http request"/ && /\bpath="?\Q$path\E"?(?:\s|$)/ } split /\n/, $s->log_text;
}

# 1. /api/v1/metrics waits for PostgreSQL: a psql session locks the calls table.
my $LOCK_S = 30;
my $locker = fork // die "fork: $!";
if ($locker == 0) {
    eval { $s->psql("BEGIN; LOCK TABLE calls IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep($LOCK_S); COMMIT;") };
    _exit(0);
}
ok($s->wait_for(sub {
    $s->psql("SELECT count(*) FROM pg_locks WHERE relation = 'calls'::regclass"
        . " AND mode = 'AccessExclusiveLock' AND granted") == 1
}, timeout => 10, soft => 1), 'the calls table is locked');
my $json = send_get('/api/v1/metrics');
ok($s->wait_for(sub {
    $s->psql("SELECT count(*) FROM pg_locks WHERE relation = 'calls'::regclass AND NOT granted") >= 1
}, timeout => 10, soft => 1), '/api/v1/metrics waits for the lock in PostgreSQL');

# 2. /metrics waits for Redis.
my $before = handed('/metrics');
$s->redis_cli(qw(CLIENT PAUSE 20000 ALL));
my $prom = send_get('/metrics');
ok($s->wait_for(sub { handed('/metrics') > $before }, timeout => 10, soft => 1),
    '/metrics reached the API while Redis is paused');

# 3. Fast stop.
my $rc = $s->stop_daemon(signal => 'INT', timeout => 15);
is($rc, 0, 'SIGINT: callorchd exits 0');
eval { $s->redis_cli('CLIENT', 'UNPAUSE') };
kill 'TERM', $locker;
waitpid($locker, 0);

my $out = CallorchTest::read_file($s->tmpdir . '/callorchd.out') // '';
my $log = $s->log_text;
unlike($out . $log, qr/(?:Address|Leak|UndefinedBehavior)Sanitizer|runtime error:/, 'no sanitizer report')
    or diag join "\n", grep { /Sanitizer|runtime error|#\d+ 0x/ } split /\n/, $out;
my @bad = grep { /msg="child (?:exited|killed)/ && /kind=http/ && !/\bstatus=0\b/ } split /\n/, $log;
is(scalar @bad, 0, 'the http worker exited with status 0') or diag join "\n", @bad;
like($log, qr/msg="fast stop" kind=http/, 'the worker did a fast stop');
close $_ for $json, $prom;
done_testing;
