#!/usr/bin/perl
# The master against the real stack: children by kind and title, respawn
# after kill -9, respawn throttle, reload (more workers / invalid config),
# log reopen, privilege drop, graceful stop.
use strict;
use warnings;
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new;
$s->start_all;

sub kinds {
    my ($pid) = @_;
    my %k = (http => [], kafka => [], sched => []);
    for my $c ($s->children_of($pid)) {
        if ($c->{title} =~ /^callorchd: (http|kafka) worker \d+$/) { push @{ $k{$1} }, $c->{pid} }
        elsif ($c->{title} eq 'callorchd: scheduler') { push @{ $k{sched} }, $c->{pid} }
    }
    return \%k;
}

sub count_kinds {
    my $k = kinds(@_);
    return join ' ', map { "$_=" . scalar @{ $k->{$_} } } qw(http kafka sched);
}

# Ask /healthz on fresh connections until every http child has answered.
sub healthz_pids {
    my ($want) = @_;
    my %seen;
    for (1 .. 400) {
        my $r = HTTP::Tiny->new(keep_alive => 0, timeout => 5)->get($s->base_url . '/healthz');
        return undef unless $r->{status} == 200;
        my $j = eval { JSON::PP::decode_json($r->{content}) } or return undef;
        $seen{ $j->{pid} } = 1;
        last if keys %seen >= $want;
    }
    return [ sort keys %seen ];
}

$s->write_config('http.workers' => 2, 'kafka.consumers' => 2);
my $master = $s->start_daemon;
ok($master, "callorchd started (pid $master)");

$s->wait_for(sub { count_kinds($master) eq 'http=2 kafka=2 sched=1' },
    what => 'two http, two kafka, one sched child');
is(count_kinds($master), 'http=2 kafka=2 sched=1', 'configured number of children of each kind, by title');

my $pidfile = $s->tmpdir . '/callorchd.pid';
$s->wait_for(sub { -s $pidfile }, what => 'pid file');
open my $pf, '<', $pidfile or die;
chomp(my $filepid = <$pf>);
close $pf;
is($filepid, $master, 'pid file holds the master pid');

my $hp = healthz_pids(2);
my @http = sort @{ kinds($master)->{http} };
is_deeply($hp, \@http, '/healthz answers 200 from every http child');

$s->wait_for(sub { $s->log_text =~ /all children ready/ }, what => 'all children ready logged');
like($s->log_text, qr/msg="all children ready"/, 'master logs when all children are ready');

# kill -9 one child of each kind: a new pid of that kind appears within 2 s
for my $kind (qw(http kafka sched)) {
    my $victim = kinds($master)->{$kind}[0];
    kill 'KILL', $victim;
    my $t0 = time;
    my $ok = $s->wait_for(sub {
        my $k = kinds($master)->{$kind};
        @$k == ($kind eq 'http' || $kind eq 'kafka' ? 2 : 1) && !grep { $_ == $victim } @$k;
    }, timeout => 2, what => "$kind respawn", soft => 1);
    ok($ok, sprintf('kill -9 %s child %d: replaced within %.2fs', $kind, $victim, time - $t0));
    like($s->log_text, qr/child killed by signal.*kind=$kind .*pid=$victim signal=9/,
        "$kind child's death logged with pid and signal");
}

# SIGUSR1 reopens the log file
my $log = $s->tmpdir . '/callorchd.log';
rename $log, "$log.1" or die;
kill 'USR1', $master;
$s->wait_for(sub { -s $log }, what => 'new log file after SIGUSR1');
like($s->log_text, qr/log file reopened/, 'SIGUSR1 reopened the log file');

# SIGHUP with more workers gives more children; the old ones leave
my @old_http = @{ kinds($master)->{http} };
$s->write_config('http.workers' => 3, 'kafka.consumers' => 2);
kill 'HUP', $master;
$s->wait_for(sub {
    my $k = kinds($master);
    @{ $k->{http} } == 3 && !grep { my $o = $_; grep { $_ == $o } @{ $k->{http} } } @old_http;
}, timeout => 15, what => 'three new http children after SIGHUP');
is(scalar @{ kinds($master)->{http} }, 3, 'SIGHUP with workers = 3 gives three http children');
like($s->log_text, qr/configuration reloaded.*generation=2/, 'reload logged with the new generation');

# SIGHUP with an invalid config keeps the running children.  First let the
# retired generation finish leaving (a kafka child leaves its group, which
# takes a few seconds against the mock broker).
$s->wait_for(sub { my @c = $s->children_of($master); @c == 3 + 2 + 1 }, timeout => 20,
    what => 'the retired generation gone');
my $before = join ',', sort map { $_->{pid} } $s->children_of($master);
my $cfg = $s->config_text('http.workers' => 3) . "\n[http]\nbogus_key = 1\n";
open my $fh, '>', $s->config_path or die;
print $fh $cfg;
close $fh;
kill 'HUP', $master;
$s->wait_for(sub { $s->log_text =~ /reload failed/ }, what => 'reload failure logged');
like($s->log_text, qr/reload failed; keeping the running configuration.*callorch\.ini:\d+: /,
    'invalid config on SIGHUP: error logged with file:line');
# The master handles signals in order, and a reload spawns its children
# before it handles the next one: once a SIGUSR1 after the SIGHUP has
# reopened the log, any child the reload would have started is there.
my $reopened = () = $s->log_text =~ /log file reopened/g;
kill 'USR1', $master;
$s->wait_for(sub { my $n = () = $s->log_text =~ /log file reopened/g; $n > $reopened },
    what => 'SIGUSR1 after the failed reload handled');
is(join(',', sort map { $_->{pid} } $s->children_of($master)), $before,
    'invalid config on SIGHUP: same children keep running');
is(healthz_pids(1) ? 1 : 0, 1, 'still serving after a failed reload');

# SIGTERM: exit 0, no child left, pid file removed
my @all = map { $_->{pid} } $s->children_of($master);
my $status = $s->stop_daemon;
is($status, 0, 'SIGTERM: master exits 0');
is(scalar(grep { kill 0, $_ } @all), 0, 'SIGTERM: no child process left');
ok(!-e $pidfile, 'pid file removed');
like($s->log_text, qr/SIGTERM: graceful stop/, 'graceful stop logged');

# A child that crashes on start is respawned no faster than the backoff allows
# (test-only binary: CALLORCHD_TEST_CRASH is compiled out of callorchd).
{
    local $ENV{CALLORCHD_TEST_CRASH} = 'sched';
    $s->write_config('http.workers' => 2, 'kafka.consumers' => 1);
    truncate $log, 0;
    my $m = $s->start_daemon(binary => 't/callorchd-testhooks');
    # the production backoff (0.1 s doubling): 5 spawns take >= 1.5 s
    my $spawn_re = qr/^ts=\S+T(\d\d):(\d\d):([\d.]+)Z .*child spawned" kind=sched/m;
    $s->wait_for(sub { my @n = $s->log_text =~ /child spawned" kind=sched/g; @n >= 5 },
        timeout => 30, what => 'five spawns of the crashing sched child');
    my @spawns;
    my $text = $s->log_text;
    push @spawns, $1 * 3600 + $2 * 60 + $3 while $text =~ /$spawn_re/g;
    my @delays = $text =~ /respawning child" kind=sched slot=0 delay=([\d.]+)s/g;
    my $span = $spawns[4] - $spawns[0];
    $span += 86400 if $span < 0;    # across midnight
    diag(sprintf "sched spawns: %d; 5 spawns in %.3fs; delays: @delays", scalar @spawns, $span);
    cmp_ok(scalar @spawns, '>=', 3, 'crashing child keeps being respawned');
    cmp_ok($span, '>=', 0.1 + 0.2 + 0.4 + 0.8 - 0.005,
        'crashing child respawned no faster than the backoff (0.1 s doubling: 5 spawns take >= 1.5 s)');
    my $doubling = 1;
    for my $i (1 .. $#delays) {
        $doubling = 0 unless $delays[$i] >= 2 * $delays[ $i - 1 ] - 0.01 || $delays[$i] >= 30;
    }
    ok(@delays >= 2 && $doubling, 'respawn delays double');
    is($s->stop_daemon, 0, 'stops cleanly while a slot is in backoff');
}

# Started as root with [daemon] user = nobody: children run as nobody
SKIP: {
    skip 'privilege drop needs root', 2 unless $> == 0;
    my $nobody = getpwnam('nobody');
    skip 'no user nobody', 2 unless defined $nobody;
    chmod 0777, $s->tmpdir;
    $s->write_config('daemon.user' => 'nobody');
    my $m = $s->start_daemon;
    my @kids = map { $_->{pid} } $s->children_of($m);
    my @uids = map { my $p = $_; open my $st, '<', "/proc/$p/status" or next;
                     my ($u) = grep { /^Uid:/ } <$st>; (split ' ', $u)[1] } @kids;
    ok(@uids && !grep({ $_ != $nobody } @uids), "children run as nobody (uid $nobody)");
    is($s->stop_daemon, 0, 'unprivileged master stops cleanly');
}

# The master refuses to start with an invalid config
{
    my $bad = $s->tmpdir . '/bad.ini';
    open my $b, '>', $bad or die;
    print $b "[http]\nworkers = many\n";
    close $b;
    my $out = `$ENV{CALLORCH_BUILDDIR}/src/callorchd -f -c $bad 2>&1`;
    is($? >> 8, 1, 'invalid config at start: exit status 1');
    like($out, qr/bad\.ini:2: /, 'invalid config at start: file:line in the message');
}

done_testing;
