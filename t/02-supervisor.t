#!/usr/bin/perl
# The master against the real stack: children by kind and title, respawn
# after kill -9, respawn throttle, reload (more workers / invalid config),
# log reopen, privilege drop, graceful stop.
use strict;
use warnings;
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
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

# Open N connections at once (as wrk does) to PORT (default: the first
# [http] listen address), then ask /healthz on each: the
# pid of the worker that answered, counted; "unanswered" counts the ones
# that got no answer within 10 s (a socket no worker accepts on).  Each
# worker has its own SO_REUSEPORT socket and the kernel picks one by a hash
# of the client's port: with N distinct source ports, the chance that a
# worker of W gets none is below W * ((W - 1) / W) ** N, 1e-9 for N = 40 and
# W = 2 or N = 60 and W = 3, so these checks do not flake.
sub spread {
    my ($n, $port) = @_;
    my @socks = map {
        IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port // $s->http_port,
            Proto => 'tcp')
            or die "connect: $!"
    } 1 .. $n;
    print {$_} "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" for @socks;
    my %by_pid;
    for my $c (@socks) {
        my $r = CallorchTest::raw_read($c, 10);
        my $pid = $r->{json} ? $r->{json}{pid} : 'unanswered';
        $by_pid{$pid}++;
    }
    close $_ for @socks;
    return \%by_pid;
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

# 40 connections opened at once are spread over both http workers
{
    my $by_pid = spread(40);
    diag('40 connections, answered by pid: ' . join(', ', map { "$_=$by_pid->{$_}" } sort keys %$by_pid));
    is_deeply([ sort grep { $_ ne 'unanswered' } keys %$by_pid ], \@http,
        '40 connections at once: both http workers answered some');
    ok(!$by_pid->{unanswered}, 'every connection answered');
}

# A second master on the same port must not join the first one's
# SO_REUSEPORT group and take part of its connections: it fails to start.
{
    my $other = $s->tmpdir . '/other.ini';
    open my $o, '>', $other or die;
    print $o $s->config_text('http.workers' => 2, 'daemon.pid_file' => $s->tmpdir . '/other.pid',
        'daemon.control_socket' => $s->tmpdir . '/other.sock', 'daemon.log_target' => 'stderr');
    close $o;
    my $out = `timeout 20 $ENV{CALLORCH_BUILDDIR}/src/callorchd -f -c $other 2>&1`;
    is($? >> 8, 1, 'a second master on the same http port: exit 1');
    like($out, qr/listen 127\.0\.0\.1:\d+: Address already in use/, 'a second master: says why');
}

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
{
    my @now = sort @{ kinds($master)->{http} };
    $s->wait_for(sub { healthz_pids(3) && @{ healthz_pids(3) } == 3 }, what => 'three http children serving');
    my $by_pid = spread(60);
    is_deeply([ sort grep { $_ ne 'unanswered' } keys %$by_pid ], \@now,
        'after the reload to 3 workers, 60 connections reach all three');
    ok(!$by_pid->{unanswered}, 'every connection answered after the reload');
}

# SIGHUP with an invalid config keeps the running children.  First let the
# retired generation finish leaving (a kafka child leaves its group, which
# takes a few seconds against the mock broker): 3 http, 2 kafka, the
# scheduler and the events child.
$s->wait_for(sub { my @c = $s->children_of($master); @c == 3 + 2 + 1 + 1 }, timeout => 20,
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

# Back to 2 workers: the third slot's socket stays open (closing it would
# reset what it queued) and worker 0 serves it too, so no connection waits
# on a socket that nobody accepts on.
{
    my @old = @{ kinds($master)->{http} };
    $s->write_config('http.workers' => 2, 'kafka.consumers' => 2);
    kill 'HUP', $master;
    $s->wait_for(sub {
        my $k = kinds($master)->{http};
        @$k == 2 && !grep { my $o = $_; grep { $_ == $o } @$k } @old;
    }, timeout => 15, what => 'two new http children after SIGHUP');
    my @now = sort @{ kinds($master)->{http} };
    my $by_pid = spread(60);
    diag('60 connections to 2 workers on 3 sockets, by pid: '
        . join(', ', map { "$_=$by_pid->{$_}" } sort keys %$by_pid));
    ok(!$by_pid->{unanswered}, 'fewer workers after a reload: every connection answered');
    is_deeply([ sort grep { $_ ne 'unanswered' } keys %$by_pid ], \@now,
        'fewer workers after a reload: both answer');
}

# [http] listen changed by a reload: an address that stays keeps its
# sockets, a new one is bound, a removed one closes once its workers left.
{
    my ($a, $b) = ($s->http_port, CallorchTest::free_port());
    my $reload_to = sub {
        my ($listen) = @_;
        my @old = @{ kinds($master)->{http} };
        $s->write_config('http.workers' => 2, 'kafka.consumers' => 2, 'http.listen' => $listen);
        kill 'HUP', $master;
        $s->wait_for(sub {
            my $k = kinds($master)->{http};
            @$k == 2 && !grep { my $o = $_; grep { $_ == $o } @$k } @old;
        }, timeout => 15, what => "http children for listen = $listen");
        return [ sort @{ kinds($master)->{http} } ];
    };
    my $now = $reload_to->("127.0.0.1:$a, 127.0.0.1:$b");
    my ($on_a, $on_b) = (spread(40, $a), spread(40, $b));
    is_deeply([ sort keys %$on_a ], $now, 'listen adds an address: the kept one serves, on both workers');
    is_deeply([ sort keys %$on_b ], $now, 'listen adds an address: the new one serves, on both workers');
    $now = $reload_to->("127.0.0.1:$b");
    is_deeply([ sort keys %{ spread(40, $b) } ], $now, 'listen drops an address: the other one serves');
    ok($s->wait_for(sub { !IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $a) },
        what => "port $a closed", soft => 1), 'listen drops an address: its port is closed');
}

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
    skip 'privilege drop needs root', 4 unless $> == 0;
    my $nobody = getpwnam('nobody');
    skip 'no user nobody', 4 unless defined $nobody;
    chmod 0777, $s->tmpdir;
    $s->write_config('daemon.user' => 'nobody', 'http.workers' => 2);
    my $m = $s->start_daemon;
    my @kids = map { $_->{pid} } $s->children_of($m);
    my @uids = map { my $p = $_; open my $st, '<', "/proc/$p/status" or next;
                     my ($u) = grep { /^Uid:/ } <$st>; (split ' ', $u)[1] } @kids;
    ok(@uids && !grep({ $_ != $nobody } @uids), "children run as nobody (uid $nobody)");

    # The master, now nobody, cannot add a socket to the group root bound;
    # a third worker gets one of the spares bound at start.
    my @old = @{ kinds($m)->{http} };
    $s->write_config('daemon.user' => 'nobody', 'http.workers' => 3);
    kill 'HUP', $m;
    my $grown = $s->wait_for(sub {
        my $k = kinds($m)->{http};
        @$k == 3 && !grep { my $o = $_; grep { $_ == $o } @$k } @old;
    }, timeout => 15, what => 'three http children after SIGHUP as nobody', soft => 1);
    ok($grown, 'a master that dropped privileges reloads to 3 workers')
        or diag(CallorchTest::_tail($s->tmpdir . "/callorchd.log", 5));
    my @now = sort @{ kinds($m)->{http} };
    my $by_pid = $grown ? spread(60) : {};
    is_deeply([ sort keys %$by_pid ], \@now, 'the third worker serves its share (a spare socket)');
    is($s->stop_daemon, 0, 'unprivileged master stops cleanly');
}

# A reload retires the running generation: a child of it that does not
# leave (here: stopped, so it cannot act on its SIGTERM) is killed once
# shutdown_timeout has passed, and that is logged.
{
    $s->write_config('http.workers' => 1, 'kafka.consumers' => 1, 'daemon.shutdown_timeout' => '2s');
    my $m = $s->start_daemon;
    $s->wait_for(sub { $s->log_text =~ /all children ready" generation=1/ },
        what => 'generation 1 ready');
    my $stuck = kinds($m)->{http}[0];
    ok($stuck, "http child $stuck of generation 1");
    kill 'STOP', $stuck;
    my $t0 = time;
    kill 'HUP', $m;
    my $gone = $s->wait_for(sub { !grep { $_->{pid} == $stuck } $s->children_of($m) },
        timeout => 15, what => 'the stuck retired child gone', soft => 1);
    my $took = time - $t0;
    ok($gone, sprintf('a retired child that cannot exit is gone after the reload (%.1fs)', $took));
    cmp_ok($took, '>=', 1.5, '  not before shutdown_timeout (2s)');
    like($s->log_text,
        qr/level=warn role=master [^\n]*msg="retired child did not exit within shutdown_timeout: killing it" kind=http slot=0 pid=$stuck generation=1 retired_for=\d/,
        '  the kill is logged with kind, slot, pid and generation');
    like($s->log_text, qr/child killed by signal" kind=http slot=0 pid=$stuck signal=9/,
        '  and its death by SIGKILL');
    is(scalar @{ kinds($m)->{http} }, 1, 'the new generation\'s http child serves');
    is($s->stop_daemon, 0, 'stops cleanly');
    kill 'KILL', $stuck if kill 0, $stuck;    # old code: never leave it stopped
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

# Started as root, the master follows no symbolic link at its pid file or
# its log file: a link planted there would make root overwrite, append to
# or remove another file.
{
    my $dir = $s->tmpdir;
    my $precious = "$dir/precious";
    my $write = sub { open my $p, '>', $_[0] or die; print $p $_[1]; close $p };
    $write->($precious, "not a pid file\n");
    my $start_with = sub {
        my (%ovr) = @_;
        my $cfg = "$dir/links.ini";
        $write->($cfg, $s->config_text('http.workers' => 1, 'kafka.consumers' => 1,
            'daemon.control_socket' => "$dir/links.sock", 'daemon.log_target' => 'stderr', %ovr));
        my $out = `timeout 20 $ENV{CALLORCH_BUILDDIR}/src/callorchd -f -c $cfg 2>&1`;
        return ($? >> 8, $out);
    };

    symlink $precious, "$dir/link.pid" or die "symlink: $!";
    my ($rc, $out) = $start_with->('daemon.pid_file' => "$dir/link.pid");
    is($rc, 1, 'pid_file is a symbolic link: the master refuses to start (exit 1)');
    like($out, qr/pid file \Q$dir\E\/link\.pid is a symbolic link; refusing to use it/,
        'pid_file is a symbolic link: the message names the path') or diag($out);
    is(CallorchTest::read_file($precious), "not a pid file\n", '  the file it points to is unchanged');
    ok(-l "$dir/link.pid", '  the link is left as it was');

    symlink $precious, "$dir/link.log" or die "symlink: $!";
    ($rc, $out) = $start_with->('daemon.pid_file' => "$dir/links.pid",
        'daemon.log_target' => "$dir/link.log");
    is($rc, 1, 'log_target is a symbolic link: the master refuses to start (exit 1)');
    like($out, qr/cannot open log \Q$dir\E\/link\.log: it is a symbolic link/,
        'log_target is a symbolic link: the message names the path') or diag($out);
    is(CallorchTest::read_file($precious), "not a pid file\n", '  the file it points to is unchanged');

    # a link planted at the pid file's temporary name is replaced, not followed
    symlink $precious, "$dir/planted.pid.tmp" or die "symlink: $!";
    $s->write_config('http.workers' => 1, 'kafka.consumers' => 1,
        'daemon.pid_file' => "$dir/planted.pid");
    my $m = $s->start_daemon;
    ok($m, 'a link at the pid file\'s temporary name: the master starts');
    is(CallorchTest::read_file($precious), "not a pid file\n", '  the file it points to is unchanged');
    ok(-f "$dir/planted.pid" && !-l "$dir/planted.pid", '  the pid file is a regular file');
    is(CallorchTest::read_file("$dir/planted.pid"), "$m\n", '  holding the master\'s pid');
    is($s->stop_daemon, 0, '  and it stops cleanly');
    ok(!-e "$dir/planted.pid", '  removing its pid file');
}

# Never leave a daemonized master behind: it is in a session of its own,
# out of the harness's reach.
our $daemonized;
END { kill 'KILL', $daemonized if $daemonized }

# Daemonized (no -f) with a relative -c: the master moves to / but a SIGHUP
# still reads the same file (issue 10: it used to look for it in /).
{
    my $dir = $s->tmpdir;
    $s->write_config('http.workers' => 1, 'kafka.consumers' => 1);
    truncate $log, 0;
    my $bin = CallorchTest::builddir() . '/src/callorchd';
    my $rc = system("cd '$dir' && '$bin' -c callorch.ini >>'$dir/callorchd.out' 2>&1");
    is($rc, 0, 'daemonized with a relative -c: the starting process exits 0');
    $s->wait_for(sub { -s $pidfile }, what => 'pid file of the daemonized master');
    my $m = CallorchTest::read_file($pidfile);
    chomp $m;
    $daemonized = $m;
    $s->wait_for(sub { $s->log_text =~ /all children ready/ }, timeout => 20,
        what => 'daemonized master ready');
    like($s->log_text, qr/callorchd starting.* config=\Q$dir\E\/callorch\.ini /,
        'the relative -c is logged as an absolute path');
    is(count_kinds($m), 'http=1 kafka=1 sched=1', 'daemonized master runs one http worker');
    $s->write_config('http.workers' => 2, 'kafka.consumers' => 1);
    kill 'HUP', $m;
    $s->wait_for(sub { $s->log_text =~ /configuration reloaded|reload failed/ },
        what => 'reload of the daemonized master');
    unlike($s->log_text, qr/reload failed/, 'daemonized, relative -c: the reload finds its file');
    like($s->log_text, qr/configuration reloaded"? file=\Q$dir\E\/callorch\.ini generation=2/,
        'daemonized, relative -c: reloaded from the same file');
    $s->wait_for(sub { @{ kinds($m)->{http} } == 2 }, timeout => 15,
        what => 'two http children after the reload');
    is(scalar @{ kinds($m)->{http} }, 2, 'daemonized, relative -c: the new workers value applies');
    kill 'TERM', $m;
    ok($s->wait_for(sub { !kill 0, $m }, timeout => 15, what => 'daemonized master gone', soft => 1),
        'daemonized master stops on SIGTERM');
    $daemonized = undef;
}

done_testing;
