#!/usr/bin/perl
# callorchctl against a running callorchd over the control socket: status
# (human and --json), reload (valid and invalid config), pause / resume with
# calls posted while paused, stop; and against none: exit 3 when the daemon
# is not running, 4 when the socket refuses us, 2 on usage errors;
# check-config; the socket's mode; the raw protocol; a second master on the
# same socket; a stale socket file at start; the systemd STATUS= line.
use strict;
use warnings;
use Test::More;
use IO::Select;
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(_exit);
use Socket qw(SOCK_STREAM SOCK_DGRAM);
use Time::HiRes qw(sleep time);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new;
$s->start_all;
$s->migrate;
$s->start_sim('--delay', '20ms-200ms', '--success-rate', '0.8', '--seed', '7');

my $ctl  = CallorchTest::builddir() . '/src/callorchctl';
my $dir  = $s->tmpdir;
my $sock = "$dir/control.sock";
my %base = (
    'http.workers'                => 2,
    'kafka.consumers'             => 2,
    'dispatch.max_attempts'       => 2,
    'dispatch.backoff_base'       => '200ms',
    'dispatch.backoff_max'        => '1s',
    'dispatch.scheduler_interval' => '200ms',
);

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return <$fh> // '';
}

# Run CMD; returns (exit code, stdout, stderr).
sub run {
    my (@cmd) = @_;
    my $errf = "$dir/cmd.err";
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $errf or _exit(126);
        open STDIN, '<', '/dev/null' or _exit(126);
        exec { $cmd[0] } @cmd or _exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out, slurp($errf));
}

sub ctl { return run($ctl, '-c', $s->config_path, @_) }

sub status_json {
    my ($rc, $out) = ctl('--json', 'status');
    return $rc == 0 ? decode_json($out) : undef;
}

# Children of generation GEN by kind, counting only those not leaving.
sub kinds_of {
    my ($st, $gen) = @_;
    my %n = (http => 0, kafka => 0, sched => 0);
    $n{ $_->{kind} }++ for grep { $_->{generation} == $gen && $_->{state} ne 'exiting' }
        @{ $st->{children} };
    return join ' ', map { "$_=$n{$_}" } qw(http kafka sched);
}

sub all_ready {
    my ($st, $want) = @_;
    return $st && kinds_of($st, $st->{generation}) eq $want
        && !grep { !$_->{ready} || $_->{generation} != $st->{generation} } @{ $st->{children} };
}

# A process's state letter from /proc (Z: exited, not yet reaped).
sub proc_state {
    my ($pid) = @_;
    my $stat = slurp("/proc/$pid/stat");
    return (split ' ', substr($stat, rindex($stat, ')') + 1))[0] // 'gone';
}

sub pids_of { return join ',', sort { $a <=> $b } map { $_->{pid} } @_ }

# A raw request on the control socket; returns the answer line.
sub raw {
    my ($text) = @_;
    my $c = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock) or die "connect: $!";
    print $c $text;
    shutdown $c, 1;
    my $line = <$c> // '';
    chomp $line;
    return $line;
}

# systemd's notification socket, played by a process of ours that drains it
# at once, as systemd does (a full queue would block the master's sd_notify)
my $notify_path = "$dir/notify.sock";
my $notify_log  = "$dir/notify.log";
my $notify = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => $notify_path)
    or die "notify socket: $!";
my $parent = $$;
my $drainer = fork // die "fork: $!";
if ($drainer == 0) {
    open my $log, '>>', $notify_log or _exit(1);
    $log->autoflush(1);
    my $sel = IO::Select->new($notify);
    while (getppid() == $parent) {
        next unless $sel->can_read(0.2);
        my $buf;
        print $log "$buf\n" if defined $notify->recv($buf, 4096);
    }
    _exit(0);
}
close $notify;
sub notifications { return slurp($notify_log) }

$s->write_config(%base);
my $master = $s->start_daemon(env => { NOTIFY_SOCKET => $notify_path });

# ------------------------------------------------------------- the socket
ok(-S $sock, 'the control socket exists at [daemon] control_socket');
is(sprintf('%04o', (stat $sock)[2] & 07777), '0600', 'the control socket has mode 0600');
is((stat $sock)[4], $>, 'owned by the [daemon] user (the test\'s own)');

# The inode of the unix socket listening at PATH, from /proc/net/unix.
sub unix_inode {
    my ($path) = @_;
    for (split /\n/, slurp('/proc/net/unix')) {
        my @f = split ' ';
        return $f[6] if @f >= 8 && $f[7] eq $path;
    }
    return undef;
}

# Whether process PID holds socket INODE.
sub holds {
    my ($pid, $inode) = @_;
    opendir my $dh, "/proc/$pid/fd" or return 0;
    return scalar grep { (readlink("/proc/$pid/fd/$_") // '') eq "socket:[$inode]" } readdir $dh;
}

# ------------------------------------------------------------------ status
my $st = $s->wait_for(sub { my $j = status_json(); all_ready($j, 'http=2 kafka=2 sched=1') && $j },
    what => 'every child ready in status');
ok($st->{ok}, 'status --json: ok');
is($st->{pid}, $master, 'status: master pid');
is($st->{config_file}, $s->config_path, 'status: config file');
like($st->{version}, qr/^\d+\.\d+\.\d+/, 'status: version');
is($st->{generation}, 1, 'status: generation 1');
ok(!$st->{paused}, 'status: dispatch not paused');
is($st->{state}, 'running', 'status: running');
is($st->{max_concurrent_calls}, 30, 'status: max slots from the config');
cmp_ok($st->{slots_in_use}, '>=', 0, 'status: slots in use');
cmp_ok($st->{uptime}, '>', 0, 'status: master uptime');
is(kinds_of($st, 1), 'http=2 kafka=2 sched=1', 'status: children by kind match the config');
is(pids_of(@{ $st->{children} }), pids_of($s->children_of($master)),
    'status: child pids are the master\'s children');
my @fields = qw(kind slot pid uptime restarts ready generation state);
ok(!grep({ my $c = $_; grep { !exists $c->{$_} } @fields } @{ $st->{children} }),
    "every child has @fields");

my ($rc, $out, $err) = ctl('status');
is($rc, 0, 'status: exit 0');
like($out, qr/^callorchd \S+, pid $master, running, up /m, 'status: master line');
like($out, qr/^dispatch:\s+running$/m, 'status: dispatch running');
like($out, qr/^children:\s+http 2\/2, kafka 2\/2, sched 1\/1, events 1\/1 ready$/m, 'status: ready summary');
my @rows = $out =~ /^(?:http|kafka|sched)\s+\d+\s+\d+\s+ready\s/mg;
is(scalar @rows, 5, 'status: a table row per child');
diag($out);

my $inode = unix_inode($sock);
ok($inode && holds($master, $inode), 'the master holds the control socket');
is(scalar(grep { holds($_->{pid}, $inode) } $s->children_of($master)), 0,
    'no child holds the control socket');

# idle clients do not hold the master up
my @idle = map { IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock) or die } 1 .. 3;
print { $idle[0] } '{"comm';    # half a request
($rc, $out) = ctl('status');
is($rc, 0, 'status answers while three other clients sit idle');
close $_ for @idle;

# -s overrides the config; the default config of an unrelated path is ignored
($rc, $out) = run($ctl, '-c', '/nonexistent/callorch.ini', '-s', $sock, 'status');
is($rc, 0, '-s SOCKET: works without a readable config');

# ------------------------------------------------------------------ reload
$s->write_config(%base, 'http.workers' => 3);
($rc, $out, $err) = ctl('reload');
is($rc, 0, 'reload: exit 0');
like($out, qr/reloaded \(generation 2\)/, 'reload: says the new generation');
$st = $s->wait_for(sub { my $j = status_json(); all_ready($j, 'http=3 kafka=2 sched=1') && $j },
    timeout => 30, what => "three http children of generation 2", soft => 1)
    or diag(scalar ctl("status"), (ctl("status"))[1]);
is($st->{generation}, 2, 'reload: generation 2');
is(kinds_of($st, 2), 'http=3 kafka=2 sched=1', 'reload: workers 2 -> 3 gives three http children');
$s->wait_for(sub { pids_of(@{ status_json()->{children} }) eq pids_of($s->children_of($master)) },
    timeout => 20, what => 'the old generation gone');
pass('reload: the old children left');

my $before = pids_of($s->children_of($master));
open my $fh, '>', $s->config_path or die;
print $fh $s->config_text(%base, 'http.workers' => 3), "\n[http]\nbogus_key = 1\n";
close $fh;
($rc, $out, $err) = ctl('reload');
is($rc, 1, 'reload with an invalid config: exit 1');
like($err, qr/reload failed: \S*callorch\.ini:\d+: .*bogus_key/,
    'reload with an invalid config: the file:line message on stderr');
like($err, qr/keeps running with its current configuration/, 'and says nothing changed');
# the master answers a later command only once the failed reload is behind it
ctl('status');
is(pids_of($s->children_of($master)), $before, 'reload with an invalid config: children kept');
is(status_json()->{generation}, 2, 'reload with an invalid config: generation unchanged');
($rc, $out) = ctl('--json', 'reload');
is($rc, 1, 'reload --json with an invalid config: exit 1');
like(decode_json($out)->{error}, qr/callorch\.ini:\d+: /, 'reload --json: the error in JSON');
$s->write_config(%base, 'http.workers' => 3);

# ------------------------------------------------------------ pause/resume
($rc, $out) = ctl('pause');
is($rc, 0, 'pause: exit 0');
like($out, qr/dispatch paused/, 'pause: says so');
($rc, $out) = ctl('pause');
like($out, qr/already paused/, 'pause twice: already paused');
($rc, $out) = ctl('status');
like($out, qr/^dispatch:\s+PAUSED/m, 'status says paused');
ok(status_json()->{paused}, 'status --json: paused');
like($s->log_text, qr/dispatch paused/, 'pause logged');
like(notifications(), qr/^STATUS=running, dispatch paused: /m, 'systemd STATUS= says paused');

my $log_mark = length $s->log_text;
my $created = 0;
for my $i (1 .. 50) {
    my ($code) = $s->api(POST => '/api/v1/calls',
        { to => sprintf('+1555%07d', $i), scriptId => "paused-$i" });
    $created++ if $code == 201;
}
is($created, 50, '50 calls accepted while paused');
# Every call reached a consumer, which parked it, and the scheduler ticked
# a few times since (it publishes nothing while paused).
my %parked;
ok($s->wait_for(sub {
    %parked = map { $_ => 1 }
        substr($s->log_text, $log_mark) =~ /msg="call parked" call=(\S+) attempt=\d+ reason=dispatch paused/g;
    keys %parked >= 50
}, timeout => 30, interval => 0.1, soft => 1), 'paused: every call reached a consumer and was parked ('
    . scalar(keys %parked) . ')');
ok($s->scheduler_ticks(5, soft => 1), 'paused: the scheduler ticked 5 times since');
my $started = $s->sim_stats->{started};
my $left = $s->psql("SELECT count(*) FROM calls WHERE status <> 'PENDING'");
is($started, 0, 'paused: the provider saw no call start');
is($left, 0, 'paused: every call stays PENDING');

($rc, $out) = ctl('resume');
is($rc, 0, 'resume: exit 0');
like($out, qr/dispatch resumed/, 'resume: says so');
ok(!status_json()->{paused}, 'status --json: not paused');
my $t0 = time;
my $settled = $s->wait_for(sub {
    $s->psql("SELECT count(*) FROM calls WHERE status NOT IN ('COMPLETED', 'FAILED')") == 0
}, timeout => 90, interval => 0.25, what => 'all calls settled', soft => 1);
ok($settled, sprintf('resume: all 50 calls settled (%.1fs)', time - $t0));
diag($s->psql('SELECT status, count(*) FROM calls GROUP BY 1 ORDER BY 1'));
cmp_ok($s->sim_stats->{started}, '>=', 50, 'resume: the provider saw the calls');
like(notifications(), qr/^STATUS=running: /m, 'systemd STATUS= no longer says paused');

# ----------------------------------------------------------- the protocol
like(raw(qq({"command":"status"}\n)), qr/^\{"ok":true,.*"children":\[/, 'raw: one JSON line');
like(raw("not json\n"), qr/^\{"ok":false,"error":"malformed request/, 'raw: malformed request');
like(raw(qq({"command":"launch"}\n)), qr/^\{"ok":false,"error":"unknown command \\"launch\\""\}$/,
    'raw: unknown command');
like(raw(qq({"command":"status"})), qr/^\{"ok":true/, 'raw: EOF ends a request without newline');
like(raw('x' x 5000), qr/^\{"ok":false,"error":"request too long/, 'raw: request size bounded');

# ------------------------------------------------------- a second master
{
    my $other = "$dir/other.ini";
    open my $o, '>', $other or die;
    print $o $s->config_text(%base, 'http.listen' => '127.0.0.1:' . CallorchTest::free_port(),
        'daemon.pid_file' => "$dir/other.pid", 'daemon.log_target' => 'stderr');
    close $o;
    my ($orc, $oout, $oerr) = run('timeout', '20', CallorchTest::builddir() . '/src/callorchd',
        '-f', '-c', $other);
    is($orc, 1, 'a second master on the same control socket: exit 1');
    like($oerr, qr/another callorchd is running \(it answers on \Q$sock\E\)/,
        'a second master: says why');
    ok(-S $sock, 'the first master\'s socket is untouched');
    ($rc) = ctl('status');
    is($rc, 0, 'the first master still answers');
}

# ------------------------------------------------------------ exit codes
($rc, $out, $err) = ctl('launch');
is($rc, 2, 'unknown command: exit 2');
like($err, qr/unknown command 'launch'/, 'unknown command: message');
($rc, $out, $err) = ctl('status', 'extra');
is($rc, 2, 'stray argument: exit 2');
($rc, $out, $err) = ctl('--frobnicate', 'status');
is($rc, 2, 'unknown option: exit 2');
($rc, $out) = ctl('--help');
like($out, qr/^\s+3\s+callorchd is not running/m, '--help documents the exit statuses');

($rc, $out) = ctl('check-config');
is($rc, 0, 'check-config: valid config, exit 0');
like($out, qr/: ok$/m, 'check-config: ok');
my $bad = "$dir/bad.ini";
open my $b, '>', $bad or die;
print $b "[http]\nworkers = many\n";
close $b;
($rc, $out, $err) = run($ctl, '-c', $bad, 'check-config');
is($rc, 1, 'check-config: invalid config, exit 1');
like($err, qr/bad\.ini:2: /, 'check-config: file:line');

my $missing_cfg = "$dir/missing-socket.ini";
open my $m, '>', $missing_cfg or die;
print $m $s->config_text(%base, 'daemon.control_socket' => "$dir/nowhere.sock");
close $m;
($rc, $out, $err) = run($ctl, '-c', $missing_cfg, 'status');
is($rc, 3, 'config pointing at a missing socket: exit 3');
like($err, qr/callorchd is not running \(no control socket at \Q$dir\E\/nowhere\.sock\)/,
    'missing socket: message names the path');

SKIP: {
    if ($> == 0) {
        skip 'no user nobody', 2 unless defined getpwnam('nobody');
        ($rc, $out, $err) = run('runuser', '-u', 'nobody', '--', $ctl, '-s', $sock, 'status');
    } else {
        chmod 0, $sock;
        ($rc, $out, $err) = run($ctl, '-s', $sock, 'status');
        chmod 0600, $sock;
    }
    is($rc, 4, 'a user the socket refuses: exit 4');
    like($err, qr/permission denied on the control socket \Q$sock\E/, 'permission denied: message');
}

# Behind the socket's mode, the master checks who connects (SO_PEERCRED):
# with the mode loosened by hand, another user still cannot give commands.
SKIP: {
    skip 'running another user needs root', 7 unless $> == 0;
    my $nobody = getpwnam('nobody');
    skip 'no user nobody', 7 unless defined $nobody;
    my $refusals = () = $s->log_text =~ /client refused/g;
    my $dir_mode = (stat $dir)[2] & 07777;
    chmod 0711, $dir or die "chmod: $!";    # nobody may reach the socket's directory
    chmod 0666, $sock or die "chmod: $!";
    ($rc, $out, $err) = run('setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
        $ctl, '-s', $sock, 'pause');
    is($rc, 4, 'socket mode 0666, user nobody, master running as root: pause refused, exit 4');
    like($err, qr/^callorchctl: pause failed: permission denied: uid $nobody may not give commands \(root or the \[daemon\] user only\)$/m,
        'the refusal says why') or diag($err);
    ($rc, $out) = ctl('--json', 'status');
    is($rc, 0, 'root still can');
    is(eval { decode_json($out)->{paused} } ? 1 : 0, 0, 'the refused pause changed nothing');
    ($rc, $out, $err) = run('setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
        $ctl, '-s', $sock, '--json', 'status');
    is($rc, 4, 'status refused too');
    $s->wait_for(sub { (() = $s->log_text =~ /client refused/g) >= $refusals + 2 },
        what => 'refusals logged', soft => 1);
    my @lines = $s->log_text =~ /^.*client refused.*$/mg;
    is(scalar @lines - $refusals, 2, 'the master logs each refusal once');
    like($lines[-1], qr/level=warn role=master .*peer_uid=$nobody peer_pid=\d+/,
        '  with the peer\'s uid and pid') or diag($lines[-1]);
    chmod 0600, $sock;
    chmod $dir_mode, $dir;
}

# -------------------------------------------------------------------- stop
($rc, $out, $err) = ctl('stop');
is($rc, 0, 'stop: exit 0');
like($out, qr/callorchd \(pid $master\) is stopping\ncallorchd stopped/, 'stop: waits for the exit');
# the connection closes as the process exits: allow the kernel a moment
ok($s->wait_for(sub { proc_state($master) eq 'Z' }, timeout => 0.5, interval => 0.01, soft => 1),
    'stop: the master has exited when callorchctl returns');
is($s->stop_daemon, 0, 'stop: the master exited 0');
ok(!-e $sock, 'stop: the socket is removed');
my $stopping = () = notifications() =~ /^STOPPING=1$/mg;
is($stopping, 1, 'one STOPPING=1, from the master');
unlike($s->log_text, qr/role=(?:http|kafka|sched) [^\n]*msg="(?:SIGTERM|SIGHUP|SIGINT|all children gone)/,
    'no child ran the master\'s signal handlers');
like($s->log_text, qr/graceful stop requested by callorchctl/, 'stop logged');

($rc, $out, $err) = ctl('status');
is($rc, 3, 'status with no daemon: exit 3');
like($err, qr/^callorchctl: callorchd is not running \(no control socket at \Q$sock\E\)$/m,
    'status with no daemon: message');
for my $cmd (qw(reload stop pause resume)) {
    ($rc) = ctl($cmd);
    is($rc, 3, "$cmd with no daemon: exit 3");
}

# ---------------------------------------------------------- stale socket
{
    my $stale = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $sock, Listen => 1) or die;
    close $stale;    # the file stays; nobody listens
    ok(-S $sock, 'a stale socket file is left behind');
    ($rc, $out, $err) = ctl('status');
    is($rc, 3, 'stale socket: exit 3');
    like($err, qr/callorchd is not running/, 'stale socket: not running');
    $master = $s->start_daemon;
    like($s->log_text, qr/removed a stale control socket/, 'start: stale socket replaced');
    ($rc) = ctl('status');
    is($rc, 0, 'the new master answers');
    ($rc, $out) = ctl('--json', 'stop');
    is($rc, 0, 'stop --json: exit 0');
    my $j = decode_json($out);
    ok($j->{ok} && $j->{pid} == $master, 'stop --json: the JSON answer');
    is($s->stop_daemon, 0, 'stopped');
}

# ---------------------------------------------- root, [daemon] user = nobody
SKIP: {
    skip 'privilege drop needs root', 7 unless $> == 0;
    my $nobody = getpwnam('nobody');
    skip 'no user nobody', 7 unless defined $nobody;
    chmod 0777, $dir;    # the dropped master removes its pid file and socket
    $s->write_config(%base, 'daemon.user' => 'nobody');
    $master = $s->start_daemon;
    is((stat $sock)[4], $nobody, 'started as root: the socket belongs to [daemon] user');
    is(sprintf('%04o', (stat $sock)[2] & 07777), '0600', 'and has mode 0600');
    ($rc, $out) = ctl('--json', 'status');
    is($rc, 0, 'root can use it');
    ($rc, $out) = run('runuser', '-u', 'nobody', '--', $ctl, '-s', $sock, 'pause');
    is($rc, 0, 'the [daemon] user can use it');
    # a third user, through a socket mode loosened by hand: refused
    chmod 0666, $sock or die "chmod: $!";
    ($rc, $out, $err) = run('setpriv', '--reuid=54321', '--regid=54321', '--clear-groups',
        $ctl, '-s', $sock, 'resume');
    is($rc, 4, 'a master running as nobody refuses uid 54321 (neither root nor nobody)');
    like($err, qr/permission denied: uid 54321 may not give commands/, '  and says why');
    chmod 0600, $sock;
    ($rc) = ctl('stop');
    $s->stop_daemon;
    ok(!-e $sock, 'the dropped master removed its socket at exit');
}

kill 'KILL', $drainer;
waitpid $drainer, 0;
done_testing;
