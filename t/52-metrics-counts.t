#!/usr/bin/perl
# The counts by status (sql/005_status_counts.sql: call_status_counts, kept
# by triggers on calls) stay exact through every change a call goes
# through: the migration's initial counts of calls stored before it, create
# (concurrent POSTs from several connections), PATCH, cancel, dispatch,
# complete, fail, retry, DELETE and TRUNCATE.  At every check the counters'
# sums equal count(*) in the same snapshot; with nothing moving,
# /api/v1/metrics, the list's total (with and without ?status=) and the
# /metrics gauges equal count(*) too.  No latency is asserted here: that is
# bench/metrics.
use strict;
use warnings;
use Test::More;
use File::Copy qw(copy);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use CallorchTest;

CallorchTest::require_stack();
my @STATUSES = qw(PENDING IN_PROGRESS COMPLETED FAILED CANCELLED SUPPRESSED EXPIRED);

my $s = CallorchTest->new;
$s->start_all;
$s->write_config(
    'http.workers'                  => 2,
    'dispatch.max_concurrent_calls' => 5,
    'dispatch.max_attempts'         => 2,
    'dispatch.backoff_base'         => '200ms',
    'dispatch.backoff_max'          => '400ms',
    'dispatch.scheduler_interval'   => '100ms',
);
my $ctl = CallorchTest::builddir() . '/src/callorchctl';

sub ctl {
    my ($out, $st) = CallorchTest::run_command($ctl, '-c', $s->config_path, @_);
    die "callorchctl @_: status $st: $out" if $st != 0;
    return $out;
}

# Statuses whose counters and count(*) differ, read in one statement (one
# snapshot): '' when they agree.
sub mismatches {
    return $s->psql(<<'SQL');
SELECT COALESCE(string_agg(status || ' counted ' || COALESCE(c, 0) || ' stored ' || COALESCE(r, 0),
                           ', ' ORDER BY status), '')
  FROM (SELECT status, sum(n) AS c FROM call_status_counts GROUP BY status) k
  FULL JOIN (SELECT status, count(*) AS r FROM calls GROUP BY status) t USING (status)
 WHERE COALESCE(c, 0) <> COALESCE(r, 0)
SQL
}

sub stored {
    my %n = map { $_ => 0 } @STATUSES;
    for (split /\n/, $s->psql(q{SELECT status || '=' || count(*) FROM calls GROUP BY status})) {
        my ($k, $v) = split /=/;
        $n{$k} = $v;
    }
    return \%n;
}

sub counts_exact {
    my ($what) = @_;
    is(mismatches(), '', "$what: the counters equal count(*)");
}

# With nothing moving: every reader of the counts agrees with count(*).
sub readers_agree {
    my ($what) = @_;
    my $n = stored();
    my $total = 0;
    $total += $_ for values %$n;

    my ($st, $m) = $s->api(GET => '/api/v1/metrics');
    is($st, 200, "$what: /api/v1/metrics answers 200");
    is_deeply({ map { $_ => $m->{$_} } @STATUSES }, $n, "$what: /api/v1/metrics = count(*)");

    my ($lst, $l) = $s->api(GET => '/api/v1/calls?pageSize=1');
    is($lst, 200, "$what: the list answers 200");
    is($l->{total}, $total, "$what: the list's total = count(*) ($total)");
    ok(!ref $l->{total} && $l->{total} =~ /^\d+$/, "$what: total is a number");
    my %by = map {
        my (undef, $r) = $s->api(GET => "/api/v1/calls?pageSize=1&status=$_");
        ($_ => $r->{total});
    } @STATUSES;
    is_deeply(\%by, $n, "$what: the list's total with ?status= = count(*) of that status");

    my $text = HTTP::Tiny->new->get($s->base_url . '/metrics')->{content} // '';
    my %g = map { $_ => 0 } @STATUSES;
    $g{$1} = $2 while $text =~ /^callorch_calls\{status="(\w+)"\} (\d+)$/mg;
    is_deeply(\%g, $n, "$what: the /metrics gauges = count(*)");
}

# ------------------------------------------------ the migration's counts ---

# Calls stored before 005 ran: apply the migrations before it, store some,
# then the rest.
my $early = tempdir('sql-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $sqldir = CallorchTest::srcdir() . '/sql';
opendir my $dh, $sqldir or die "$sqldir: $!";
for my $f (sort grep { /^(\d+)_.*\.sql$/ && $1 < 5 } readdir $dh) {
    copy("$sqldir/$f", "$early/$f") or die "copy $f: $!";
}
closedir $dh;
ctl('--sql-dir', $early, 'migrate');
$s->psql(<<'SQL');
INSERT INTO calls (to_number, script_id, status, attempts, max_attempts)
SELECT '+1555400' || lpad(g::text, 4, '0'), 'pre',
       (ARRAY['PENDING', 'COMPLETED', 'COMPLETED', 'FAILED', 'CANCELLED'])[1 + g % 5],
       CASE WHEN g % 5 IN (1, 2, 3) THEN 1 ELSE 0 END, 3
  FROM generate_series(1, 23) g
SQL
$s->migrate;
is_deeply(stored(), { PENDING => 4, IN_PROGRESS => 0, COMPLETED => 10, FAILED => 5, CANCELLED => 4,
        SUPPRESSED => 0, EXPIRED => 0 },
    'calls stored before the migration');
counts_exact('the migration counted the calls already stored');
# Retention's way out: a DELETE of many rows in one statement.
$s->psql(q{DELETE FROM calls WHERE script_id = 'pre' AND status <> 'PENDING'});
counts_exact('a DELETE of 19 calls');
$s->psql(q{DELETE FROM calls WHERE script_id = 'pre'});
counts_exact('the DELETE of the rest');
is($s->psql('SELECT count(*) FROM calls'), 0, 'no call left');

# ----------------------------------------------------------- the daemon ---

$s->start_sim('--delay', '200ms-500ms', '--success-rate', '0.4', '--seed', '52');
$s->start_daemon;
ctl('pause');

# Several connections at once, each POSTing one call after another.
sub post_burst {
    my ($tag, $procs, $each) = @_;
    my @pids;
    for my $p (1 .. $procs) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 30);
            my $bad = 0;
            for my $i (1 .. $each) {
                my $r = $http->post($s->base_url . '/api/v1/calls', {
                    headers => { 'Content-Type' => 'application/json' },
                    content => encode_json({ to => sprintf('+1555%d%02d%04d', $tag, $p, $i),
                                             scriptId => "counts-$tag" }) });
                $bad++ unless $r->{status} == 201;
            }
            POSIX::_exit($bad > 255 ? 255 : $bad);
        }
        push @pids, $pid;
    }
    my $bad = 0;
    for (@pids) {
        waitpid($_, 0);
        $bad += $? >> 8;
    }
    return $bad;
}

is(post_burst(1, 6, 10), 0, '60 calls POSTed on 6 connections at once, each answered 201');
is(stored()->{PENDING}, 60, '60 calls PENDING');
counts_exact('after the concurrent POSTs');
readers_agree('dispatch paused, 60 calls');

my @ids = split /\n/, $s->psql(q{SELECT id FROM calls ORDER BY created_at, id});
for my $id (@ids[0 .. 2]) {
    my ($st) = $s->api(PATCH => "/api/v1/calls/$id", { metadata => { patched => JSON::PP::true } });
    is($st, 200, 'PATCH of a PENDING call');
}
counts_exact('PATCH changes no status');
for my $id (@ids[0 .. 9]) {
    my ($st) = $s->api(POST => "/api/v1/calls/$id/cancel");
    is($st, 200, 'cancel of a PENDING call');
}
my ($again) = $s->api(POST => "/api/v1/calls/$ids[0]/cancel");
is($again, 409, 'a second cancel is refused');
is_deeply([ @{ stored() }{qw(PENDING CANCELLED)} ], [ 50, 10 ], '50 PENDING, 10 CANCELLED');
counts_exact('after the cancels');
readers_agree('after PATCH and cancel');

# Dispatch: PENDING -> IN_PROGRESS -> COMPLETED, or -> PENDING (retry) ->
# IN_PROGRESS -> COMPLETED or FAILED, while more calls arrive.  The check
# runs all the time: it must hold at every instant, not only at the end.
ctl('resume');
my $burst = fork // die "fork: $!";
if ($burst == 0) {
    POSIX::_exit(post_burst(2, 4, 10) > 0 ? 1 : 0);
}
my ($checks, $seen_in_progress, @bad) = (0, 0);
my $settled = $s->wait_for(sub {
    my $m = mismatches();
    push @bad, $m if $m ne '';
    $checks++;
    my $n = stored();
    $seen_in_progress = 1 if $n->{IN_PROGRESS} > 0;
    return $checks > 1 && $n->{PENDING} + $n->{IN_PROGRESS} == 0 && waitpid($burst, POSIX::WNOHANG()) == $burst;
}, timeout => 180, interval => 0.1, what => 'every call settled', soft => 1);
ok($settled, 'every call settled') or diag(explain(stored()));
is(scalar(@bad), 0, "the counters equalled count(*) at each of $checks checks during dispatch")
    or diag(join "\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
is($?, 0, 'the 40 calls POSTed during dispatch were answered 201');
ok($seen_in_progress, 'calls were seen IN_PROGRESS');

my $n = stored();
is($n->{PENDING} + $n->{IN_PROGRESS}, 0, 'nothing left PENDING or IN_PROGRESS');
is($n->{COMPLETED} + $n->{FAILED} + $n->{CANCELLED}, 100, '100 calls in all');
cmp_ok($n->{COMPLETED}, '>', 0, 'some calls completed');
cmp_ok($n->{FAILED}, '>', 0, 'some calls failed');
cmp_ok($s->psql(q{SELECT count(*) FROM calls WHERE attempts = 2}), '>', 0, 'some calls were retried');
counts_exact('after dispatch');
readers_agree('after the burst and dispatch');

# Many metrics requests at once share the counts queries of a worker: each
# still gets an answer, and the right one.
{
    my $want = join ',', map { $n->{$_} } @STATUSES;
    my @pids;
    for my $p (1 .. 8) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 30);
            my $bad = 0;
            for my $i (1 .. 25) {
                my $r = $http->get($s->base_url . ($i % 2 ? '/metrics' : '/api/v1/metrics'));
                my $got = '';
                if ($r->{status} == 200 && $i % 2) {
                    my %g = map { $_ => 0 } @STATUSES;
                    $g{$1} = $2 while $r->{content} =~ /^callorch_calls\{status="(\w+)"\} (\d+)$/mg;
                    $got = join ',', map { $g{$_} } @STATUSES;
                } elsif ($r->{status} == 200) {
                    my $m = eval { decode_json($r->{content}) } || {};
                    $got = join ',', map { $m->{$_} // '' } @STATUSES;
                }
                $bad++ unless $got eq $want;
            }
            POSIX::_exit($bad > 255 ? 255 : $bad);
        }
        push @pids, $pid;
    }
    my $bad = 0;
    for (@pids) {
        waitpid($_, 0);
        $bad += $? >> 8;
    }
    is($bad, 0, '200 metrics requests on 8 connections at once: each answered 200 with the counts');
}

# A row per slot and status (64 slots), and few added rows: writers mostly
# found their slot's row free.
cmp_ok($s->psql('SELECT count(*) FROM call_status_counts WHERE slot IS NULL'), '<=', 5 * 8,
    'few counter rows added beyond the slots');

$s->psql(q{DELETE FROM calls WHERE status = 'FAILED'});
counts_exact('a DELETE of the failed calls');
$s->psql('TRUNCATE calls CASCADE');
counts_exact('TRUNCATE');
readers_agree('an empty table');

is($s->stop_daemon, 0, 'clean stop');
done_testing;
