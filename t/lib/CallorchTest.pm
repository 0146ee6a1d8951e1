package CallorchTest;

# CallorchTest — the test stack shared by the integration tests (t/*.t), the
# demo (tools/demo.pl) and the benchmarks, after nginx-tests' Test::Nginx:
# a temporary directory holding a throw-away PostgreSQL cluster, a Redis
# server, a Kafka-protocol broker (t/kafka-broker) and callorchd itself, all
# on free loopback ports, with a config written to point at them.  Whatever
# a test started is stopped when the stack goes away, even when the test
# dies.  Core Perl only.  Reference at the end of the file (perldoc).

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Digest::MD5 qw(md5_hex);
use MIME::Base64 qw(encode_base64);
use POSIX qw(WNOHANG WIFEXITED WEXITSTATUS WIFSIGNALED WTERMSIG setpgid _exit);
use Scalar::Util qw(weaken);
use Test::More ();
use Time::HiRes qw(time sleep);
use Time::Local ();

# ------------------------------------------------------------------ paths ---

# t/lib/../.. is the source tree; an in-tree build is its own build tree.
my $TOP = abs_path(dirname(abs_path(__FILE__)) . '/../..');

# `make check` exports both; under prove they may be missing, and tests read
# them directly, so default them here.  Out-of-tree builds must export
# CALLORCH_BUILDDIR themselves (see the POD).
$ENV{CALLORCH_SRCDIR}   = $TOP unless defined $ENV{CALLORCH_SRCDIR}   && $ENV{CALLORCH_SRCDIR} ne '';
$ENV{CALLORCH_BUILDDIR} = $TOP unless defined $ENV{CALLORCH_BUILDDIR} && $ENV{CALLORCH_BUILDDIR} ne '';

# Read at call time: tools/demo.pl sets CALLORCH_BUILDDIR after loading us.
sub srcdir   { return $ENV{CALLORCH_SRCDIR} }
sub builddir { return $ENV{CALLORCH_BUILDDIR} }

# The fixed [provider] callback_secret of every test config, and its key.
my $CALLBACK_KEY    = 'callorch-test-webhook-secret-32b';    # 32 bytes
my $CALLBACK_SECRET = 'whsec_' . encode_base64($CALLBACK_KEY, '');

sub callback_secret { return $CALLBACK_SECRET }
sub callback_key    { return $CALLBACK_KEY }

# Helpers for tests that need no stack (t/60, t/61): a whole file (dies
# when it cannot be read), a program's path in PATH (or undef), and a
# command's output (stdout and stderr together) with its exit code.
sub read_file {
    my ($path) = @_;
    open my $fh, '<', $path or croak "$path: $!";
    local $/;
    return <$fh> // '';
}
sub which { return _which($_[0]) }
# Wait up to TIMEOUT seconds for our child PID: its wait status, or undef.
sub wait_pid { return _wait_pid(@_) }
sub run_command {
    my ($out, $st) = _capture([@_]);
    return ($out, _exit_code($st));
}

sub _which {
    my ($name) = @_;
    for my $d (split /:/, $ENV{PATH} // '/usr/bin:/bin') {
        return "$d/$name" if $d ne '' && -f "$d/$name" && -x _;
    }
    return undef;
}

# The newest PostgreSQL server bin dir (Debian keeps them out of PATH).
sub pg_bindir {
    return $ENV{CALLORCH_PG_BINDIR} if $ENV{CALLORCH_PG_BINDIR};
    my @dirs = map { $_->[1] }
        sort { $b->[0] <=> $a->[0] }
        map { [ m{/(\d+)/bin$} ? $1 : 0, $_ ] } glob('/usr/lib/postgresql/*/bin');
    for my $d (@dirs, split /:/, $ENV{PATH} // '') {
        return $d if -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres";
    }
    return undef;
}

sub _psql_bin {
    my $d = pg_bindir();
    return defined $d && -x "$d/psql" ? "$d/psql" : _which('psql');
}

# Skip the whole test file (or, with CALLORCH_TEST_REQUIRE_STACK=1, bail
# out) when a component of the stack is not installed or not built.
sub require_stack {
    my @missing;
    push @missing, 'PostgreSQL server binaries (Debian package postgresql)' unless pg_bindir();
    push @missing, 'psql (Debian package postgresql-client)' unless _psql_bin();
    push @missing, 'redis-server and redis-cli (Debian package redis-server)'
        unless _which('redis-server') && _which('redis-cli');
    push @missing, builddir() . '/t/kafka-broker (run make; for an out-of-tree build'
        . ' set CALLORCH_BUILDDIR to the build directory)'
        unless -x builddir() . '/t/kafka-broker';
    if ($> == 0) {
        push @missing, 'runuser (Debian package util-linux)' unless _which('runuser');
        push @missing, 'the user postgres (created by the Debian package postgresql)'
            unless defined getpwnam('postgres');
    }
    return 1 unless @missing;
    my $why = 'test stack unavailable, missing: ' . join('; ', @missing);
    Test::More::BAIL_OUT($why) if $ENV{CALLORCH_TEST_REQUIRE_STACK};
    Test::More::plan(skip_all => $why);
    return 0;
}

# ------------------------------------------------------------ processes ---

# Ports handed out by this process, so two components never get the same.
my %PORT_TAKEN;

# A port nothing listens on right now.  Another process may take it before
# the component binds it, so the start_* methods retry on a bind failure.
sub free_port {
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
            or croak "cannot bind 127.0.0.1:0: $!";
        my $port = $s->sockport;
        close $s;
        return $port unless $PORT_TAKEN{$port}++;
    }
    croak 'no free port found';
}

# A port where nothing listens for as long as this process runs: bound
# (so no other test can take it) but never listening, so a connection is
# refused.  For "unreachable" cases, safe with tests running in parallel.
my @CLOSED;
sub closed_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
        or croak "cannot bind 127.0.0.1:0: $!";
    push @CLOSED, $s;
    return $s->sockport;
}

# Fork and exec CMD with stdin from /dev/null and stdout and stderr appended
# to LOG; returns the pid.  PGROUP puts it in a process group of its own, so
# the whole group can be killed if it leaves children behind.
sub _spawn {
    my (%o) = @_;
    my $pid = fork;
    croak "fork: $!" unless defined $pid;
    return $pid if $pid;
    eval {
        setpgid(0, 0) if $o{pgroup};
        chdir $o{cwd} or die "chdir $o{cwd}: $!\n" if defined $o{cwd};
        open STDIN, '<', '/dev/null' or die "/dev/null: $!\n";
        open STDOUT, '>>', $o{log} or die "$o{log}: $!\n";
        open STDERR, '>&', \*STDOUT or die "dup: $!\n";
        $ENV{$_} = $o{env}{$_} for keys %{ $o{env} || {} };
        exec { $o{cmd}[0] } @{ $o{cmd} } or die "exec $o{cmd}[0]: $!\n";
    };
    print STDERR $@;
    _exit(127);    # never run the parent's END blocks (they would tear down its stack)
}

# Run CMD to completion (see _spawn); returns the wait status.
sub _run {
    my (%o) = @_;
    my $pid = _spawn(%o);
    waitpid($pid, 0);
    return $?;
}

# Run CMD and return its stdout and stderr together, and the wait status.
sub _capture {
    my ($cmd, $env) = @_;
    my $pid = open(my $fh, '-|');
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        eval {
            open STDERR, '>&', \*STDOUT or die "dup: $!\n";
            open STDIN, '<', '/dev/null' or die "/dev/null: $!\n";
            $ENV{$_} = $env->{$_} for keys %{ $env || {} };
            exec { $cmd->[0] } @$cmd or die "exec $cmd->[0]: $!\n";
        };
        print STDERR $@;
        _exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($out, $?);
}

# Wait up to TIMEOUT seconds for our child PID; returns its wait status, or
# undef if it is still running.
sub _wait_pid {
    my ($pid, $timeout) = @_;
    my $end = time + $timeout;
    while (1) {
        my $r = waitpid($pid, WNOHANG);
        return $? if $r == $pid;
        return 0 if $r < 0;    # not our child (any more)
        return undef if time >= $end;
        sleep 0.02;
    }
}

# Stop our child PID: SIGNAL, then SIGKILL after TIMEOUT seconds.
sub _stop_pid {
    my ($pid, $signal, $timeout) = @_;
    kill $signal, $pid;
    my $st = _wait_pid($pid, $timeout);
    return $st if defined $st;
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return $?;
}

# A wait status as a shell would report it: the exit code, or 128 + signal.
sub _exit_code {
    my ($st) = @_;
    return WEXITSTATUS($st) if WIFEXITED($st);
    return 128 + WTERMSIG($st) if WIFSIGNALED($st);
    return $st;
}

sub _slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    my $text = <$fh>;
    return $text // '';
}

# A whole file, or '' when it cannot be read.
sub slurp { return _slurp(@_) }

# The part of PATH after its first OFFSET bytes (what a restart wrote).
sub slurp_from { return _slurp_from(@_) }
sub _slurp_from {
    my ($path, $offset) = @_;
    return substr(_slurp($path), $offset // 0);
}

# RFC 3339 "2026-01-01T12:00:00.123Z" -> epoch seconds (fractional), or undef.
sub epoch {
    my ($ts) = @_;
    my ($y, $mo, $d, $h, $mi, $sec, $frac) =
        ($ts // '') =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?Z$/ or return undef;
    return Time::Local::timegm($sec, $mi, $h, $d, $mo - 1, $y) + ($frac // 0);
}

# Epoch seconds -> RFC 3339 "2026-01-01T12:00:00.123Z" (the inverse of epoch).
sub rfc3339 {
    my ($t) = @_;
    my @g = gmtime(int $t);
    return sprintf '%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', $g[5] + 1900, $g[4] + 1, @g[3, 2, 1, 0],
        int(($t - int $t) * 1000);
}

sub _tail {
    my ($path, $n) = @_;
    my @lines = split /\n/, _slurp($path);
    splice @lines, 0, @lines - $n if @lines > $n;
    return join "\n", @lines;
}

sub _diag_tail {
    my ($path, $n) = @_;
    return unless -s $path;
    Test::More::diag("---- last lines of $path:\n" . _tail($path, $n // 40));
}

# Run CMD as the postgres user when we are root: PostgreSQL refuses to run
# as root.
sub _as_postgres {
    my (@cmd) = @_;
    return $> == 0 ? (_which('runuser') // 'runuser', '-u', 'postgres', '--', @cmd) : @cmd;
}

# ---------------------------------------------------------------- stack ---

# Live stacks, weakly held, for the END block.
my @LIVE;

sub new {
    my ($class, %opts) = @_;
    my $dir = tempdir('callorch-test-XXXXXX', TMPDIR => 1, CLEANUP => 0);
    # Run as root, postgres works as user postgres and must reach its
    # directory below this one.
    chmod 0755, $dir;
    my $self = bless {
        dir   => $dir,
        owner => $$,    # a forked child must never tear down its parent's stack
        leave => $ENV{CALLORCH_TEST_LEAVE} ? 1 : 0,
        phone_base => $opts{phone_base} // 0,
        phone_seq  => 0,
        http  => HTTP::Tiny->new(keep_alive => 0, timeout => 30, agent => 'callorch-test/1'),
    }, $class;
    Test::More::diag("test directory $dir (kept: CALLORCH_TEST_LEAVE is set)") if $self->{leave};
    push @LIVE, $self;
    weaken($LIVE[-1]);

    # Interrupted tests still clean up: exit() runs the END block.  A test
    # or script that installs its own handlers keeps them.
    my %num = (HUP => 1, INT => 2, TERM => 15);
    for my $sig (keys %num) {
        next if defined $SIG{$sig} && $SIG{$sig} ne '' && $SIG{$sig} ne 'DEFAULT';
        $SIG{$sig} = sub { exit(128 + $num{$sig}) };
    }
    return $self;
}

sub tmpdir      { return $_[0]{dir} }

# A fresh valid phone number per call: +1555 and 7 digits, counting up
# from new()'s phone_base (default 0), so a test's groups of calls can
# keep to number ranges of their own.
sub next_phone {
    my ($self) = @_;
    return sprintf '+1555%07d', $self->{phone_base} + ++$self->{phone_seq};
}
sub config_path { return $_[0]{config_path} }
sub daemon_pid  { return $_[0]{daemon_pid} }

# A short poll loop: returns the first true value of CODE, or dies (returns
# false with soft => 1) after timeout seconds (default 10).
sub wait_for {
    my ($self, $code, %o) = @_;
    my $timeout = $o{timeout} // 10;
    my $v = wait_until($code, $timeout, $o{interval} // 0.05);
    return $v if $v;
    return 0 if $o{soft};
    croak sprintf('timed out after %gs waiting for %s', $timeout, $o{what} // 'a condition');
}

# The same without a stack: CODE's first true value within TIMEOUT seconds
# (default 5), polled every INTERVAL (default 0.02), else its last value.
sub wait_until {
    my ($code, $timeout, $interval) = @_;
    my $end = time + ($timeout // 5);
    while (1) {
        my $v = $code->();
        return $v if $v || time >= $end;
        sleep($interval // 0.02);
    }
}

# The processes whose parent is PID, as { pid, title } sorted by pid.
sub children_of {
    my ($self, $ppid) = @_;
    my @kids;
    opendir my $dh, '/proc' or croak "/proc: $!";
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        my $stat = _slurp("/proc/$pid/stat");
        # The command name may hold spaces and parens: parse after the last ')'.
        my ($state, $parent) = split ' ', substr($stat, rindex($stat, ')') + 1);
        next unless defined $parent && $parent == $ppid;
        (my $title = _slurp("/proc/$pid/cmdline")) =~ tr/\0/ /;
        $title =~ s/^\s+|\s+$//g;
        push @kids, { pid => $pid + 0, title => $title };
    }
    closedir $dh;
    return sort { $a->{pid} <=> $b->{pid} } @kids;
}

# ------------------------------------------------------------- postgres ---

sub pg_port { return $_[0]{pg_port} }

# The postmaster's pid while it runs.
sub pg_pid {
    my ($self) = @_;
    return undef unless $self->{pg_running};
    my ($pid) = _slurp("$self->{dir}/pg/data/postmaster.pid") =~ /^(\d+)/;
    return $pid;
}

sub pg_conninfo {
    my ($self) = @_;
    $self->{pg_port} //= free_port();
    $self->{pg_port_published} = 1;
    return "host=127.0.0.1 port=$self->{pg_port} dbname=callorch user=callorch";
}

# initdb on first use, then start; creates the database callorch (owner and
# superuser callorch, trust authentication on loopback and the socket).
sub start_postgres {
    my ($self) = @_;
    croak 'postgres is already running' if $self->{pg_running};
    my $bin = pg_bindir() or croak 'no PostgreSQL binaries found';
    my $pgdir = "$self->{dir}/pg";
    my $data  = "$pgdir/data";
    my $log   = "$pgdir/postgres.log";

    unless (-d $data) {
        make_path($pgdir);
        if ($> == 0) {
            my ($uid, $gid) = (getpwnam('postgres'))[ 2, 3 ];
            chown $uid, $gid, $pgdir or croak "chown $pgdir: $!";
        }
        # Durability is left alone on purpose (fsync, synchronous_commit on):
        # the tests must see what production sees.
        # (1 MB WAL segments: a cluster of 23 MB, not 39, to copy)
        my @initdb = ("$bin/initdb", '-D', $data, '-U', 'callorch', '--auth=trust',
            '-E', 'UTF8', '--locale=C', '--wal-segsize=1');
        my $conf_text = "\n# callorch test stack (port and socket directory are given on the"
            . " command line)\n"
            . "listen_addresses = '127.0.0.1'\n"
            . "shared_buffers = 16MB\n"
            . "max_connections = 200\n"
            . "log_min_messages = warning\n";
        # initdb and CREATE DATABASE take most of a stack's start: the
        # first test keeps a copy of its fresh cluster (stopped, with the
        # empty database callorch) in the build tree, the others copy it
        # (keyed by the binaries, the initdb options and the conf).
        my $tmpl = builddir() . '/t/pg-template-'
            . md5_hex(join "\0", @initdb[ 0, 3 .. $#initdb ], $conf_text, $>);
        if (-d $tmpl && _run(cmd => [ 'cp', '-a', $tmpl, $data ], log => "$pgdir/initdb.log") == 0) {
            # a copy of a fresh cluster
        } else {
            remove_tree($data);
            my $st = _run(cmd => [ _as_postgres(@initdb) ], log => "$pgdir/initdb.log", cwd => $pgdir);
            if ($st != 0) {
                _diag_tail("$pgdir/initdb.log");
                croak "initdb failed (status $st)";
            }
            open my $conf, '>>', "$data/postgresql.conf" or croak "postgresql.conf: $!";
            print $conf $conf_text;
            close $conf or croak "postgresql.conf: $!";
            $self->{pg_make_template} = $tmpl if !-d $tmpl && -d builddir() . '/t' && -w _;
        }
    }

    for my $try (1 .. 3) {
        my $port = $self->{pg_port} //= free_port();
        my $from = (-s $log || 0);
        my $st = _run(
            cmd => [ _as_postgres("$bin/pg_ctl", '-D', $data, '-l', $log, '-o', "-p $port -k $pgdir",
                '-w', '-t', '30', 'start') ],
            log => "$pgdir/pg_ctl.log", cwd => $pgdir);
        if ($st == 0) {
            $self->{pg_running} = 1;
            last;
        }
        # Lost the race for the port: take another, unless a config
        # already points at this one.
        if (!$self->{pg_port_published}
            && _slurp_from($log, $from) =~ /could not bind|Address already in use/) {
            delete $self->{pg_port};
            next;
        }
        _diag_tail($log);
        _diag_tail("$pgdir/pg_ctl.log");
        croak "pg_ctl start failed (status $st)";
    }
    croak 'postgres: no free port after 3 tries' unless $self->{pg_running};
    $self->{pg_port_published} = 1;

    unless ($self->{pg_db_created}) {
        $self->psql('CREATE DATABASE callorch', db => 'postgres')
            unless $self->psql("SELECT 1 FROM pg_database WHERE datname = 'callorch'", db => 'postgres');
        $self->{pg_db_created} = 1;
    }
    if (my $tmpl = delete $self->{pg_make_template}) {
        # Stopped cleanly, copied, renamed into place: another test copying
        # the template never sees half of it.  Best effort.
        $self->stop_postgres;
        my $part = "$tmpl.part$$";
        if (_run(cmd => [ 'cp', '-a', $data, $part ], log => "$pgdir/initdb.log") != 0
            || !rename($part, $tmpl)) {
            remove_tree($part);
        }
        $self->start_postgres;
    }
    return $self;
}

# Graceful stop by default (mode => 'immediate' for a crash).
sub stop_postgres {
    my ($self, %o) = @_;
    return unless $self->{pg_running};
    my $pgdir = "$self->{dir}/pg";
    my $st = _run(
        cmd => [ _as_postgres(pg_bindir() . '/pg_ctl', '-D', "$pgdir/data", '-m', $o{mode} // 'fast',
            '-w', '-t', '30', 'stop') ],
        log => "$pgdir/pg_ctl.log", cwd => $pgdir);
    if ($st != 0) {
        # pg_ctl could not stop it: kill the postmaster; its backends follow.
        my ($pid) = _slurp("$pgdir/data/postmaster.pid") =~ /^(\d+)/;
        kill 'KILL', $pid if $pid;
    }
    $self->{pg_running} = 0;
    return $st == 0;
}

# Same port, same data.
sub restart_postgres {
    my ($self) = @_;
    $self->stop_postgres;
    return $self->start_postgres;
}

# Run SQL over TCP as callorch (db => NAME for another database); returns
# psql's unaligned, tuples-only output.  Dies with psql's message on error.
sub psql {
    my ($self, $sql, %o) = @_;
    croak 'postgres is not running' unless $self->{pg_running};
    my ($out, $st) = _capture(
        [ _psql_bin(), '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1',
          '-p', $self->{pg_port}, '-U', 'callorch', '-d', $o{db} // 'callorch', '-c', $sql ],
        { PGCONNECT_TIMEOUT => 5 });
    croak "psql failed (status $st): $out" if $st != 0;
    $out =~ s/\n\z//;
    return $out;
}

# Apply the SQL migrations with callorchctl migrate (writes the default
# config first if none was written); returns callorchctl's output.
sub migrate {
    my ($self) = @_;
    $self->write_config unless $self->{config_path};
    my $ctl = builddir() . '/src/callorchctl';
    croak "$ctl is not built" unless -x $ctl;
    my ($out, $st) = _capture([ $ctl, '-c', $self->{config_path}, '--sql-dir', srcdir() . '/sql',
        'migrate' ]);
    croak "callorchctl migrate failed (status $st): $out" if $st != 0;
    return $out;
}

# callorchctl -c <this config> ARGS, as a test that it exits 0; returns its
# output.
sub ctl_ok {
    my ($self, @args) = @_;
    my ($out, $st) = _capture([ builddir() . '/src/callorchctl', '-c', $self->{config_path}, @args ]);
    Test::More::is($st, 0, "callorchctl @args") or Test::More::diag($out);
    return $out;
}

# POST /api/v1/calls {to, scriptId}, as a test that it answers 201; returns
# the call.
sub post_call_ok {
    my ($self, $to, $script) = @_;
    my ($st, $c) = $self->api(POST => '/api/v1/calls', { to => $to, scriptId => $script });
    Test::More::is($st, 201, "POST a call to $to ($script)") or Test::More::diag(Test::More::explain($c));
    return $c;
}

# GET /api/v1/calls/ID: the call, or undef when it is not 200.
sub get_call {
    my ($self, $id) = @_;
    my ($st, $c) = $self->api(GET => "/api/v1/calls/$id");
    return $st == 200 ? $c : undef;
}

# ---------------------------------------------------------------- redis ---

sub redis_port {
    my ($self) = @_;
    $self->{redis_port} //= free_port();
    $self->{redis_port_published} = 1;
    return $self->{redis_port};
}

sub _redis_ping {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
        Timeout => 1) or return 0;
    print $s "PING\r\n";
    my $line = <$s> // '';
    close $s;
    return $line =~ /^\+PONG/;
}

# redis-server on loopback with no persistence at all: a restart is empty.
sub start_redis {
    my ($self) = @_;
    croak 'redis is already running' if $self->{redis_pid};
    my $dir = "$self->{dir}/redis";
    make_path($dir);
    my $log = "$dir/redis.log";
    for my $try (1 .. 3) {
        my $port = $self->{redis_port} //= free_port();
        my $from = (-s $log || 0);    # the log is appended to across restarts
        my $pid = _spawn(
            cmd => [ _which('redis-server') // 'redis-server', '--bind', '127.0.0.1',
                '--port', $port, '--save', '', '--appendonly', 'no', '--dir', $dir,
                '--daemonize', 'no', '--logfile', '' ],
            log => $log, cwd => $dir);
        # Wait for its own "ready" line, not just any PONG: after losing the
        # port race the PONG could come from someone else's server.
        my $ready = qr/Ready to accept connections/;
        $self->wait_for(sub { _slurp_from($log, $from) =~ $ready || waitpid($pid, WNOHANG) == $pid },
            timeout => 10, soft => 1);
        if (kill(0, $pid) && _slurp_from($log, $from) =~ $ready && _redis_ping($port)) {
            $self->{redis_pid} = $pid;
            $self->{redis_port_published} = 1;
            return $self;
        }
        _stop_pid($pid, 'KILL', 5);
        if (!$self->{redis_port_published} && _slurp_from($log, $from) =~ /Address already in use/) {
            delete $self->{redis_port};
            next;
        }
        _diag_tail($log);
        croak 'redis-server did not start';
    }
    croak 'redis: no free port after 3 tries';
}

sub redis_pid { return $_[0]{redis_pid} }

sub stop_redis {
    my ($self) = @_;
    my $pid = delete $self->{redis_pid} or return;
    _stop_pid($pid, 'TERM', 10);
    return 1;
}

# Same port, empty.
sub restart_redis {
    my ($self) = @_;
    $self->stop_redis;
    return $self->start_redis;
}

# Run redis-cli against the stack's server; returns its output.
sub redis_cli {
    my ($self, @args) = @_;
    croak 'redis is not running' unless $self->{redis_pid};
    my ($out, $st) = _capture([ _which('redis-cli') // 'redis-cli', '-h', '127.0.0.1',
        '-p', $self->{redis_port}, @args ]);
    croak "redis-cli failed (status $st): $out" if $st != 0;
    $out =~ s/\n\z//;
    return $out;
}

# Wait until the leading scheduler started N more ticks (default 3): each
# tick renews the leader lease in Redis, so its PTTL jumps back up.  For
# tests that must show that the scheduler looked and did nothing, instead
# of sleeping.  Dies after TIMEOUT seconds (default 30; soft => 1: false).
sub scheduler_ticks {
    my ($self, $n, %o) = @_;
    $n //= 3;
    my $key = ($self->_current_config->{redis}{key_prefix} // 'callorch:') . 'leader';
    my ($seen, $last) = (0, undef);
    return $self->wait_for(sub {
        my $ttl = eval { $self->redis_cli('PTTL', $key) } // -2;
        $seen++ if defined $last && $ttl > $last + 5;
        $last = $ttl;
        $seen >= $n;
    }, timeout => $o{timeout} // 30, interval => 0.01, soft => $o{soft}, what => "$n scheduler ticks");
}

# ---------------------------------------------------------------- kafka ---

sub kafka_brokers {
    my ($self) = @_;
    return $self->{kafka_brokers};
}

# t/kafka-broker: topics => ['calls:4', ...], brokers => N.  The broker picks
# its own ports (librdkafka's mock cluster cannot be told one), so a new
# broker has new ports: for an outage use kafka_down/kafka_up instead.
sub start_kafka {
    my ($self, %o) = @_;
    croak 'the kafka broker is already running' if $self->{kafka_pid};
    my $bin = builddir() . '/t/kafka-broker';
    croak "$bin is not built (make; out-of-tree builds: set CALLORCH_BUILDDIR)" unless -x $bin;
    my $dir = "$self->{dir}/kafka";
    make_path($dir);
    my $addr = "$dir/bootstrap";
    unlink $addr;
    my $n = $o{brokers} // 1;
    # -P: the broker dies with this process, even if it is SIGKILLed.
    my $pid = _spawn(
        cmd => [ $bin, '-P', '-b', $n, (map { ('-t', $_) } @{ $o{topics} // ['calls:4'] }), '-o', $addr ],
        log => "$dir/broker.log", cwd => $dir);
    # The broker renames the file into place, so it is never half-written.
    my $ok = $self->wait_for(sub { -s $addr || waitpid($pid, WNOHANG) == $pid },
        timeout => 10, soft => 1);
    unless ($ok && -s $addr) {
        _stop_pid($pid, 'KILL', 5);
        _diag_tail("$dir/broker.log");
        croak 'kafka-broker did not start';
    }
    chomp(my $brokers = _slurp($addr));
    @$self{qw(kafka_pid kafka_brokers kafka_count)} = ($pid, $brokers, $n);
    return $self;
}

sub kafka_pid { return $_[0]{kafka_pid} }

sub stop_kafka {
    my ($self) = @_;
    my $pid = delete $self->{kafka_pid} or return;
    _stop_pid($pid, 'TERM', 10);
    return 1;
}

# Signal the broker and wait until its log confirms ("all N broker(s) down").
sub _kafka_signal {
    my ($self, $sig, $state) = @_;
    croak 'the kafka broker is not running' unless $self->{kafka_pid};
    my $log = "$self->{dir}/kafka/broker.log";
    my $re = qr/all \d+ broker\(s\) \Q$state\E/;
    my $before = () = _slurp($log) =~ /$re/g;
    kill $sig, $self->{kafka_pid};
    $self->wait_for(sub { my $n = () = _slurp($log) =~ /$re/g; $n > $before },
        timeout => 5, what => "kafka brokers $state");
    return 1;
}

# All brokers stop listening and drop their connections; state is kept.
sub kafka_down { return $_[0]->_kafka_signal('USR1', 'down') }

# The brokers listen again on the same ports.
sub kafka_up { return $_[0]->_kafka_signal('USR2', 'up') }

# ------------------------------------------------------------------ all ---

# Options go to start_kafka.
sub start_all {
    my ($self, %o) = @_;
    $self->start_postgres;
    $self->start_redis;
    $self->start_kafka(%o);
    return $self;
}

# --------------------------------------------------------------- config ---

# The port of the provider simulator; once it is handed out (in a config,
# or to a test) the simulator must take that one.
sub provider_port {
    my ($self) = @_;
    $self->{provider_port_published} = 1;
    return $self->{provider_port} //= free_port();
}

# Start callorch-provider-sim on provider_port with the stack's callback
# secret; ARGS are extra command-line options (e.g. '--delay', '0-50ms';
# a later '--secret' wins).  Waits for its /healthz.  Returns $self.
sub start_sim {
    my ($self, @args) = @_;
    croak 'the simulator is already running' if $self->{sim_pid};
    my $bin = builddir() . '/src/callorch-provider-sim';
    croak "$bin is not built" unless -x $bin;
    my $log = "$self->{dir}/sim.log";
    for my $try (1 .. 3) {
        my $port = $self->{provider_port} //= free_port();
        my $from = (-s $log || 0);
        my $pid = _spawn(cmd => [ $bin, '--listen', "127.0.0.1:$port", '--secret', $CALLBACK_SECRET,
                @args ], log => $log, cwd => $self->{dir});
        my $ua = HTTP::Tiny->new(keep_alive => 0, timeout => 2);
        my $exited;
        my $up = $self->wait_for(sub {
            return 0 if $exited ||= waitpid($pid, WNOHANG) == $pid;
            # our own answer: another test's simulator may hold the port
            _listens($pid, $port) && $ua->get("http://127.0.0.1:$port/healthz")->{status} == 200
        }, timeout => 10, soft => 1, interval => 0.02);
        if ($up) {
            $self->{sim_pid} = $pid;
            $self->{provider_port_published} = 1;
            return $self;
        }
        _stop_pid($pid, 'KILL', 5) unless $exited;
        # Lost the race for the port (another test took it since
        # free_port): take another, unless a config already points there.
        if (!$self->{provider_port_published} && _slurp_from($log, $from) =~ /in use/i) {
            delete $self->{provider_port};
            next;
        }
        _diag_tail($log);
        croak 'callorch-provider-sim did not start';
    }
    croak 'callorch-provider-sim: no free port after 3 tries';
}

sub sim_pid { return $_[0]{sim_pid} }
sub sim_url { return 'http://127.0.0.1:' . $_[0]->provider_port }

# The simulator's GET /stats, decoded.
sub sim_stats {
    my ($self) = @_;
    my $r = HTTP::Tiny->new(keep_alive => 0, timeout => 5)
        ->get('http://127.0.0.1:' . $self->provider_port . '/stats');
    croak "sim /stats: $r->{status} $r->{content}" unless $r->{status} == 200;
    return JSON::PP::decode_json($r->{content});
}

# SIGTERM (or SIGNAL), SIGKILL after 10 s; returns the exit code (128 +
# signal if killed), undef if none ran.
sub stop_sim {
    my ($self, $signal) = @_;
    my $pid = delete $self->{sim_pid} or return undef;
    return _exit_code(_stop_pid($pid, $signal // 'TERM', 10));
}

# stop_sim if it runs, then start_sim(ARGS): on the same port.
sub restart_sim {
    my ($self, @args) = @_;
    $self->stop_sim;
    return $self->start_sim(@args);
}

# The base config as [ section => [ [key, value], ... ] ], DESIGN.md section 6.
sub _base_config {
    my ($self) = @_;
    my $dir  = $self->{dir};
    my $http = $self->{http_port} //= free_port();
    my $user = getpwuid($<) // croak "no user name for uid $<";
    # Not started yet: a port where nothing listens, never a real default
    # (which might reach someone's real Kafka on 9092).
    my $brokers = $self->{kafka_brokers} // '127.0.0.1:' . ($self->{kafka_dead_port} //= closed_port());
    return (
        [ daemon => [
            [ user             => $user ],
            [ pid_file         => "$dir/callorchd.pid" ],
            [ control_socket   => "$dir/control.sock" ],
            [ log_level        => 'debug' ],
            [ log_target       => "$dir/callorchd.log" ],
            # Below stop_daemon's 15 s, so the daemon's own escalation is seen.
            [ shutdown_timeout => '10s' ],
        ] ],
        [ http => [
            [ listen          => "127.0.0.1:$http" ],
            [ workers         => 2 ],
            [ public_base_url => "http://127.0.0.1:$http" ],
            [ api_keys        => '' ],
        ] ],
        [ postgres => [
            [ conninfo  => $self->pg_conninfo ],
            [ pool_size => 4 ],
        ] ],
        [ redis => [
            [ host       => '127.0.0.1' ],
            [ port       => $self->redis_port ],
            [ key_prefix => 'callorch:' ],
        ] ],
        [ kafka => [
            [ brokers   => $brokers ],
            [ topic     => 'calls' ],
            [ group_id  => 'callorch-dispatch' ],
            [ consumers => 2 ],
            # The mock broker waits session.timeout.ms - 1 s before it
            # completes a rebalance after a member leaves or dies (44 s with
            # the default 45 s), also when a restarted daemon's consumers
            # join: keep restarts, respawns and reloads quick (2 s), with a
            # heartbeat well within the session (with a 2 s session the
            # group did not form in t/41).
            [ 'rdkafka.session.timeout.ms' => 3000 ],
            [ 'rdkafka.heartbeat.interval.ms' => 1000 ],
            # Reconnect within a second after kafka_up (default: up to 10 s).
            [ 'rdkafka.reconnect.backoff.max.ms' => 1000 ],
            # Hand a message over at once: by default a consumer's fetch
            # waits up to 500 ms for data (the producers ignore it with a
            # log line) and a producer lingers 5 ms for a batch; with a
            # few calls at a time under a cap each call paid the wait
            # (t/40: 52 s -> 20 s).
            [ 'rdkafka.fetch.wait.max.ms' => 10 ],
            [ 'rdkafka.linger.ms' => 0 ],
        ] ],
        [ dispatch => [
            [ max_concurrent_calls => 30 ],
            [ max_attempts         => 3 ],
        ] ],
        # Tests run at any hour: no calling hours unless a test sets them
        # (the test numbers, +1555..., have no zone data anyway); the zone
        # data is the build's own.
        [ compliance => [
            [ calling_hours     => '' ],
            [ calling_days      => 'mon-sun' ],
            [ timezone_prefixes => builddir() . '/data/tzprefix.tsv' ],
        ] ],
        # BUSY and NO_ANSWER retry by the backoff of [dispatch], as they did
        # before [retry] (whose defaults wait 10 min and 2 h); t/86 tests
        # the rules themselves.
        [ retry => [
            [ busy      => 'backoff' ],
            [ no_answer => 'backoff' ],
        ] ],
        [ provider => [
            [ url             => 'http://127.0.0.1:' . $self->provider_port . '/api/v1/calls' ],
            [ timeout         => '10s' ],
            [ callback_auth   => 'hmac' ],
            [ callback_secret => $CALLBACK_SECRET ],
        ] ],
    );
}

# The config text: the base config with OVERRIDES ('section.key' => value;
# undef deletes the key; a new key or section is appended).
sub config_text {
    my ($self, %ovr) = @_;
    my @sections = $self->_base_config;
    for my $name (sort keys %ovr) {
        my ($sec, $key) = $name =~ /^([^.]+)\.(.+)$/
            or croak "config override '$name' is not 'section.key'";
        my ($s) = grep { $_->[0] eq $sec } @sections;
        push @sections, $s = [ $sec => [] ] unless $s;
        my ($kv) = grep { $_->[0] eq $key } @{ $s->[1] };
        if (!defined $ovr{$name}) {
            @{ $s->[1] } = grep { $_->[0] ne $key } @{ $s->[1] };
        } elsif ($kv) {
            $kv->[1] = $ovr{$name};
        } else {
            push @{ $s->[1] }, [ $key => $ovr{$name} ];
        }
    }
    my $text = "; generated by t/lib/CallorchTest.pm\n";
    for my $s (@sections) {
        $text .= "\n[$s->[0]]\n";
        $text .= $_->[1] eq '' ? "$_->[0] =\n" : "$_->[0] = $_->[1]\n" for @{ $s->[1] };
    }
    return $text;
}

# Write config_text(OVERRIDES) to TMPDIR/callorch.ini; returns the path.
sub write_config {
    my ($self, %ovr) = @_;
    my $path = "$self->{dir}/callorch.ini";
    my $text = $self->config_text(%ovr);
    # Write and rename: a daemon reloading on SIGHUP never sees half a file.
    open my $fh, '>', "$path.tmp" or croak "$path.tmp: $!";
    print $fh $text;
    close $fh or croak "$path.tmp: $!";
    rename "$path.tmp", $path or croak "rename $path: $!";
    $self->{config_path} = $path;
    $self->{config_overrides} = {%ovr};
    return $path;
}

# A minimal INI reader: { section => { key => value } } (later keys win).
sub _parse_ini {
    my ($text) = @_;
    my (%ini, $sec);
    for my $line (split /\n/, $text) {
        next if $line =~ /^\s*(?:[;#]|$)/;
        if ($line =~ /^\s*\[([^\]]+)\]/) {
            $sec = $1;
        } elsif (defined $sec && $line =~ /^\s*([^=]+?)\s*=\s*(.*?)\s*$/) {
            (my $v = $2) =~ s/\s+;.*$//;
            $ini{$sec}{$1} = $v;
        }
    }
    return \%ini;
}

# The config the daemon runs with (or would start with).
sub _current_config {
    my ($self) = @_;
    my $path = $self->{daemon_config} // $self->{config_path};
    return $path ? _parse_ini(_slurp($path)) : {};
}

sub http_port {
    my ($self) = @_;
    my $listen = $self->_current_config->{http}{listen};
    return $1 if defined $listen && (split /\s*,\s*/, $listen)[0] =~ /:(\d+)$/;
    return $self->{http_port} //= free_port();
}

sub base_url { return 'http://127.0.0.1:' . $_[0]->http_port }

# The first [http] api_keys entry of the current config, or undef.
sub api_key {
    my ($self) = @_;
    my ($key) = grep { $_ ne '' } split /\s*,\s*/, $self->_current_config->{http}{api_keys} // '';
    return $key;
}

# -------------------------------------------------------------- daemon ---

sub log_text { return _slurp("$_[0]{dir}/callorchd.log") }

# Start callorchd -f -c CONFIG in the background and wait until /healthz
# answers 200.  Options: binary (relative to the build dir; default
# src/callorchd), config (default: the written one, written now if none),
# args (extra arguments), env (extra environment), timeout (default 20),
# wait => 0 (return at once), tunables => { republish_grace => 2, ... }
# (shortened timings: runs t/callorchd-testhooks with CALLORCH_TEST_<NAME>
# set, see src/util/tunables.h).  Returns the master pid.
sub start_daemon {
    my ($self, %o) = @_;
    croak "callorchd is already running (pid $self->{daemon_pid})" if $self->{daemon_pid};
    $self->write_config unless $o{config} || $self->{config_path};
    # tunables => { NAME => seconds }: the test build, with
    # CALLORCH_TEST_<NAME> shortening a timing of src/util/tunables.h
    if ($o{tunables}) {
        $o{binary} //= 't/callorchd-testhooks';
        $o{env} = { %{ $o{env} || {} },
            map { ('CALLORCH_TEST_' . uc($_) => $o{tunables}{$_}) } keys %{ $o{tunables} } };
    }
    my $bin = $o{binary} // 'src/callorchd';
    $bin = builddir() . "/$bin" unless $bin =~ m{^/};
    croak "$bin is not built (make; out-of-tree builds: set CALLORCH_BUILDDIR)" unless -x $bin;
    my $out = "$self->{dir}/callorchd.out";
    my $timeout = $o{timeout} // 20;

    my $log = "$self->{dir}/callorchd.log";
    for my $try (1 .. 3) {
        my $config = $o{config} // $self->{config_path};
        my ($out_from, $log_from) = ((-s $out || 0), (-s $log || 0));
        my $pid = _spawn(cmd => [ $bin, '-f', '-c', $config, @{ $o{args} || [] } ],
            log => $out, cwd => $self->{dir}, pgroup => 1, env => $o{env});
        @$self{qw(daemon_pid daemon_config)} = ($pid, $config);
        return $pid if defined $o{wait} && !$o{wait};

        my ($exited, $status);
        my $url = $self->base_url . '/healthz';
        my $ua = HTTP::Tiny->new(keep_alive => 0, timeout => 2);
        my $end = time + $timeout;
        while (time < $end) {
            if (waitpid($pid, WNOHANG) == $pid) {
                ($exited, $status) = (1, $?);
                last;
            }
            # The listening socket must be ours: after losing the port race
            # the 200 could come from another test's daemon.
            return $pid if $ua->get($url)->{status} == 200 && _listens($pid, $self->http_port);
            sleep 0.1;
        }
        if ($exited) {
            delete @$self{qw(daemon_pid daemon_config)};
            kill 'KILL', -$pid;    # children it may have left behind
            # Lost the race for the HTTP port: if the port is ours to choose,
            # choose again.
            if (!$o{config} && !exists $self->{config_overrides}{'http.listen'}
                && (_slurp_from($out, $out_from) . _slurp_from($log, $log_from))
                    =~ /Address already in use/) {
                delete $self->{http_port};
                $self->write_config(%{ $self->{config_overrides} });
                next;
            }
            _diag_tail("$self->{dir}/callorchd.log");
            _diag_tail($out);
            croak sprintf('callorchd exited with status %d before /healthz answered',
                _exit_code($status));
        }
        _diag_tail("$self->{dir}/callorchd.log");
        _diag_tail($out);
        $self->_kill_daemon;
        croak "callorchd: no 200 from $url within ${timeout}s";
    }
    croak 'callorchd: no free HTTP port after 3 tries';
}

# Whether process PID or one of its children holds the socket listening on
# 127.0.0.1:PORT (or on any address), by the socket inode in /proc.
sub _listens {
    my ($pid, $port) = @_;
    my %inodes;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        for my $line (split /\n/, _slurp($f)) {
            my @f = split ' ', $line;
            # local_address is HEXIP:HEXPORT, st 0A is LISTEN, inode is field 9
            next unless @f > 9 && $f[1] =~ /:([0-9A-F]{4})$/ && hex($1) == $port && $f[3] eq '0A';
            $inodes{ $f[9] } = 1;
        }
    }
    return 0 unless %inodes;
    for my $p ($pid, map { $_->{pid} } __PACKAGE__->children_of($pid)) {
        opendir my $dh, "/proc/$p/fd" or next;
        for my $fd (readdir $dh) {
            my $l = readlink "/proc/$p/fd/$fd" // next;
            return 1 if $l =~ /^socket:\[(\d+)\]$/ && $inodes{$1};
        }
    }
    return 0;
}

# SIGTERM (or signal => NAME), wait up to timeout seconds (default 15), then
# SIGKILL the process group.  Returns the exit code, or 128 + signal.
sub stop_daemon {
    my ($self, %o) = @_;
    my $pid = $self->{daemon_pid} or return undef;
    kill $o{signal} // 'TERM', $pid;
    my $st = _wait_pid($pid, $o{timeout} // 15);
    unless (defined $st) {
        Test::More::diag("callorchd (pid $pid) did not stop in time: SIGKILL");
        kill 'KILL', -$pid;
        waitpid($pid, 0);
        $st = $?;
    }
    delete @$self{qw(daemon_pid daemon_config)};
    # The children die with the master (PR_SET_PDEATHSIG); allow them a
    # moment, but do not kill them: a test checking that none is left
    # must see a leak.
    $self->wait_for(sub { !kill(0, -$pid) }, timeout => 2, soft => 1);
    return _exit_code($st);
}

# Teardown: fast stop, then SIGKILL to the whole process group.
sub _kill_daemon {
    my ($self) = @_;
    my $pid = delete $self->{daemon_pid} or return;
    delete $self->{daemon_config};
    kill 'INT', $pid;
    _wait_pid($pid, 5) // do { kill 'KILL', $pid; waitpid($pid, 0) };
    kill 'KILL', -$pid;
}

# ------------------------------------------------------------------ http ---

# METHOD PATH [BODY [HEADERS]]: BODY is a reference (sent as JSON) or a
# string (sent as is, as application/json unless HEADERS say otherwise).
# Sends "Authorization: Bearer <first api key>" when the config has
# api_keys, unless HEADERS have Authorization (undef: send none).
# Returns (status, decoded JSON or raw content, headers); status 599 means
# no HTTP answer (the content says why).
sub api {
    my ($self, $method, $path, $body, $headers) = @_;
    my %h = %{ $headers || {} };
    my ($auth) = grep { lc $_ eq 'authorization' } keys %h;
    if (defined $auth) {
        delete $h{$auth} unless defined $h{$auth};
    } elsif (defined(my $key = $self->api_key)) {
        $h{Authorization} = "Bearer $key";
    }
    my %req = (headers => \%h);
    if (defined $body) {
        $req{content} = ref $body ? JSON::PP->new->utf8->canonical->encode($body) : $body;
        $h{'Content-Type'} = 'application/json' unless grep { lc $_ eq 'content-type' } keys %h;
    }
    my $r = $self->{http}->request($method, $self->base_url . $path, \%req);
    my $content = $r->{content};
    if (($r->{headers}{'content-type'} // '') =~ m{^application/(?:[\w.+-]+\+)?json}i
        && $r->{status} != 599 && length($content // '')) {
        my $json = eval { JSON::PP->new->utf8->allow_nonref->decode($content) };
        $content = $json unless $@;
    }
    return ($r->{status}, $content, $r->{headers});
}

# The machine may be loaded (other tests, builds, benchmarks): psql_retry is
# psql retried when it cannot connect (up to 6 tries a second apart), and
# api_retry is api retried while the answer is 503 (the daemon's database
# pool reconnecting) or 599 (no connection), for up to 60 s (api_retry_for:
# SECONDS).  Give POSTs an Idempotency-Key, so that a retried one never
# makes a second call.
sub psql_retry {
    my ($self, $sql, %o) = @_;
    for my $try (1 .. 6) {
        my $out = eval { $self->psql($sql, %o) };
        return $out if defined $out;
        die $@ if $try == 6;
        sleep 1;
    }
}

sub api_retry { my ($self, @args) = @_; return $self->api_retry_for(60, @args) }

sub api_retry_for {
    my ($self, $seconds, @args) = @_;
    my $end = time + $seconds;
    while (1) {
        my @r = $self->api(@args);
        return @r unless ($r[0] == 503 || $r[0] == 599) && time < $end;
        sleep 0.5;
    }
}

# A new TCP connection to the daemon's HTTP port (port => PORT for
# another), for raw-socket tests; dies when it cannot connect (soft => 1:
# returns undef).
sub raw_connect {
    my ($self, %o) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{port} // $self->http_port,
        Proto => 'tcp', Timeout => 10);
    unless ($sock) {
        return undef if $o{soft};
        croak "connect: $!";
    }
    binmode $sock;
    return $sock;
}

# A subtest checking an RFC 9457 problem answer (the (status, body,
# headers) of api()): status WANT, Content-Type application/problem+json,
# a JSON object with a type URI, a title, the status and a detail; with
# FIELDS (an array of names) also errors[] naming exactly those fields,
# each with a message.
sub problem_ok {
    my ($st, $body, $h, $want, $name, %o) = @_;
    my $fields = $o{fields};
    Test::More::subtest("$name: $want" . ($fields ? " [@$fields]" : '') => sub {
        Test::More::is($st, $want, "status $want") or Test::More::diag(Test::More::explain($body));
        Test::More::like($h->{'content-type'} // '', qr{^application/problem\+json\b},
            'Content-Type: application/problem+json');
        Test::More::is(ref $body, 'HASH', 'body is a JSON object') or return;
        Test::More::like($body->{type} // '', qr{^(?:https?://\S+|about:blank)$}, 'type is a URI');
        Test::More::like($body->{title} // '', qr/\S/, 'title');
        Test::More::is($body->{status}, $want, 'status member');
        Test::More::like($body->{detail} // '', qr/\S/, 'detail');
        return unless $fields;
        Test::More::is(ref $body->{errors}, 'ARRAY', 'errors is an array') or return;
        Test::More::is_deeply([ sort map { $_->{field} } @{ $body->{errors} } ], [ sort @$fields ],
            'errors[].field');
        Test::More::ok(!(grep { !defined $_->{message} || $_->{message} !~ /\S/ } @{ $body->{errors} }),
            'every error has a message');
    });
}

# Read one HTTP/1.1 response from SOCK (raw-socket tests): { status,
# headers (lower-case names), body, json }, or { status => 0, error =>
# 'eof' | 'timeout' | 'error: …' }.  Bytes after the response stay buffered
# on the socket object for the next call (pipelining).
sub raw_read {
    my ($sock, $timeout) = @_;
    my $buf = \${*$sock}{co_rbuf};
    $$buf //= '';
    my $end = time + ($timeout // 20);
    my $sel = IO::Select->new($sock);
    while (1) {
        if ($$buf =~ /\AHTTP\/1\.[01] (\d{3})[^\r\n]*\r\n(.*?)\r\n\r\n/s) {
            my ($status, $htext, $hlen) = ($1, $2, $+[0]);
            my %h;
            for (split /\r\n/, $htext) {
                $h{ lc $1 } //= $2 if /^([^:]+):[ \t]*(.*?)[ \t]*$/;
            }
            my $clen = $h{'content-length'} // 0;
            if (length($$buf) >= $hlen + $clen) {
                my $body = substr($$buf, $hlen, $clen);
                substr($$buf, 0, $hlen + $clen) = '';
                my $json = ($h{'content-type'} // '') =~ /json/ ? eval { JSON::PP::decode_json($body) } : undef;
                return { status => $status + 0, headers => \%h, body => $body, json => $json };
            }
        }
        my $left = $end - time;
        return { status => 0, error => 'timeout' } if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($sock, my $chunk, 65536);
        return { status => 0, error => defined $n ? 'eof' : "error: $!" } unless $n;
        $$buf .= $chunk;
    }
}

# ------------------------------------------------------- C unit programs ---

# Run the C TAP program t/NAME against this stack, passing its TAP through
# on stdout; returns its exit status (0 = passed).  The program may ask for
# a server to be stopped or started again: it prints "# WORD stop" or
# "# WORD start" and waits for a line on its stdin, which it gets once
# CONTROL->{WORD}->('stop' | 'start') returned.  CALLORCH_TEST_WRAPPER (e.g.
# "valgrind --error-exitcode=99", as `make check-valgrind` sets it) is put
# in front of the program.
sub run_tap_program {
    my ($self, $name, %control) = @_;
    my $bin = builddir() . "/t/$name";
    -x $bin or croak "$bin not built (make check builds it)";
    my @wrap = split ' ', $ENV{CALLORCH_TEST_WRAPPER} // '';
    local $| = 1;
    require IPC::Open2;
    my $pid = IPC::Open2::open2(my $from, my $to, @wrap, $bin);
    while (my $line = <$from>) {
        print $line;
        if ($line =~ /^# (\w+) (stop|start)$/ && $control{$1}) {
            $control{$1}->($2);
            print {$to} "done\n";
            $to->flush;
        }
    }
    close $to;
    waitpid($pid, 0);
    return $?;
}

# ------------------------------------------------------------- teardown ---

# Stop everything this stack started and remove its directory (unless
# CALLORCH_TEST_LEAVE).  Idempotent; runs from DESTROY and END.
sub teardown {
    my ($self) = @_;
    return if $self->{torn_down} || $$ != $self->{owner};
    $self->{torn_down} = 1;
    local ($?, $!, $@);    # never change the test's exit status
    eval { $self->_kill_daemon };
    eval { $self->stop_postgres(mode => 'immediate') };
    eval { $self->stop_redis };
    eval { $self->stop_kafka };
    eval { $self->stop_sim };
    if ($self->{leave}) {
        Test::More::diag("test directory left in $self->{dir}");
    } else {
        # A process still dying may write a last file: retry once, then say so.
        for my $try (1 .. 2) {
            remove_tree($self->{dir}, { error => \my $err });
            last unless -e $self->{dir};
            if ($try == 2) {
                my @why = map { my ($f, $m) = %$_; "$f: $m" } @$err;
                Test::More::diag("could not remove $self->{dir}: @why");
            }
            sleep 0.5;
        }
    }
    return;
}

sub DESTROY { $_[0]->teardown }

END {
    for my $s (grep { defined } @LIVE) {
        $s->teardown;
    }
}

1;

__END__

=head1 NAME

CallorchTest - the test stack for callorch's integration tests

=head1 SYNOPSIS

    use Test::More;
    use CallorchTest;

    CallorchTest::require_stack();
    my $s = CallorchTest->new;
    $s->start_all;                          # PostgreSQL, Redis, Kafka broker
    $s->migrate;
    $s->write_config('http.workers' => 3, 'http.api_keys' => 'k1');
    my $pid = $s->start_daemon;
    my ($status, $call) = $s->api(POST => '/api/v1/calls',
        { to => '+15551234567', scriptId => 'welcome' });
    is($s->stop_daemon, 0, 'clean stop');
    done_testing;

=head1 RUNNING

C<make check> sets C<CALLORCH_BUILDDIR> and C<CALLORCH_SRCDIR>.  Under
B<prove> they default to the source tree holding this module, which is
right for an in-tree build only; for an out-of-tree build say where it is:

    CALLORCH_BUILDDIR=/path/to/build prove -I t/lib t/01-stack.t

C<CALLORCH_TEST_LEAVE=1> keeps the temporary directory (configs, logs,
database) and prints its path.  C<CALLORCH_TEST_REQUIRE_STACK=1> turns the
skip of C<require_stack()> into a bail-out, for CI.  C<CALLORCH_PG_BINDIR>
overrides where the PostgreSQL server binaries are looked for.

Running as root (as CI does), PostgreSQL runs as the user C<postgres>
through B<runuser>.  Every component listens on 127.0.0.1 only, on a
port picked free (bind to port 0) and retried if another process took it
first.

=head1 FUNCTIONS

=over

=item require_stack()

Skips the test file, naming what is missing, unless PostgreSQL, Redis and
the built t/kafka-broker are available.

=item builddir(), srcdir()

=item free_port()

A loopback port that nothing listened on a moment ago.

=item closed_port()

A loopback port that refuses connections for as long as the test runs
(held bound, never listening): no parallel test can take it.

=item callback_secret(), callback_key()

The C<whsec_> secret in every generated config, and the raw HMAC key it
encodes, for signing webhooks in tests.

=item wait_until(CODE, TIMEOUT = 5, INTERVAL = 0.02)

CODE's first true value within TIMEOUT seconds, else its last value: the
poll loop of C<wait_for>, for tests without a stack.

=item slurp(PATH), read_file(PATH), slurp_from(PATH, OFFSET)

A whole file (C<slurp>: '' when unreadable; C<read_file> dies), or what
follows its first OFFSET bytes.

=item epoch(RFC3339)

"2026-01-01T12:00:00.123Z" as epoch seconds (fractional), undef if not one.

=item problem_ok(STATUS, BODY, HEADERS, WANT, NAME, fields => [...])

A subtest: an RFC 9457 problem answer with status WANT (type URI, title,
status, detail), and with C<fields> an C<errors> array naming exactly
those fields.

=back

=head1 METHODS

=over

=item new(phone_base => 0)

Creates the temporary directory.  Also installs SIGINT/SIGTERM/SIGHUP
handlers (unless the script has its own) so an interrupted test cleans up.

=item tmpdir, config_path, daemon_pid

=item next_phone

A fresh phone number per call, C<+1555> and 7 digits counting up from
C<phone_base>.

=item raw_connect(port => http_port, soft => 0)

A TCP connection to the daemon, for raw HTTP; dies when it cannot
connect (C<soft>: undef).

=item wait_for(CODE, timeout => 10, what => '...', soft => 0)

Polls CODE until it returns true and returns that value; on timeout dies
with "timed out ... waiting for WHAT", or returns 0 with C<soft>.

=item children_of(PID)

The child processes of PID from /proc, as C<{ pid, title }>; C<title> is
the command line with NULs turned into spaces (the process title).

=item start_postgres, stop_postgres(mode => 'fast'), restart_postgres

initdb (first time), start, and database C<callorch> owned by superuser
C<callorch>, trust authentication.  Durability settings are left at their
defaults.  Restart keeps port and data.  Log: TMPDIR/pg/postgres.log.

=item pg_conninfo, pg_port, pg_pid, psql(SQL, db => 'callorch')

C<psql> returns the unaligned, tuples-only output and dies on an error.

=item migrate

Runs C<callorchctl -c CONFIG --sql-dir SRCDIR/sql migrate>.

=item start_redis, stop_redis, restart_redis, redis_port, redis_pid, redis_cli(ARGS)

No persistence: a restarted Redis is empty.  Same port after a restart.

=item scheduler_ticks(N, timeout => 30, soft => 0)

Returns once the leading scheduler renewed its lease in Redis N more
times (one renewal a tick): proof that it looked, where a test would
otherwise sleep to show that nothing happens.

=item start_kafka(topics => ['calls:4'], brokers => 1), stop_kafka, kafka_brokers, kafka_pid

Runs t/kafka-broker.  A new broker gets new ports.

=item kafka_down, kafka_up

All brokers stop listening and drop their connections, then listen again
on the same ports with topics, messages and committed offsets intact.
Both return once the broker confirmed.

=item start_all(%kafka_options)

=item provider_port

A port reserved for the provider simulator; the generated config's
C<[provider] url> points at it.

=item start_sim(ARGS), restart_sim(ARGS), stop_sim(SIGNAL = 'TERM'), sim_pid, sim_url, sim_stats

Runs callorch-provider-sim on C<provider_port> with the stack's
secret and ARGS (a later C<--secret> wins), waits for its /healthz;
C<restart_sim> stops a running one first; C<stop_sim> returns its exit code.

=item config_text(%overrides), write_config(%overrides)

The generated config, with C<'section.key' =E<gt> value> overrides (undef
deletes a key).  C<write_config> writes TMPDIR/callorch.ini atomically and
returns its path.

=item start_daemon(binary => 'src/callorchd', config => PATH, args => [], env => {}, timeout => 20, wait => 1, tunables => {})

Forks C<callorchd -f -c CONFIG> in a process group of its own (output
appended to TMPDIR/callorchd.out) and waits for C<GET /healthz> to answer
200; returns the master pid.  C<tunables> (e.g. C<{ republish_grace =E<gt>
2 }>, seconds) runs the test build t/callorchd-testhooks instead, with
C<CALLORCH_TEST_REPUBLISH_GRACE> etc. set: the timings of
src/util/tunables.h that are no configuration key, shortened.

=item stop_daemon(signal => 'TERM', timeout => 15)

Returns the exit code (128 + signal if killed).  SIGKILLs the process
group after the timeout.

=item http_port, base_url, api_key, log_text

=item api(METHOD, PATH, BODY, HEADERS)

Returns (status, decoded JSON or raw content, headers).  Adds the bearer
key of the config unless HEADERS hold C<Authorization> (undef: none).

=item teardown

Stops the daemon (SIGINT, then SIGKILL to its group), PostgreSQL
(immediate), Redis and the broker, and removes the directory.  Runs by
itself from DESTROY and END, also when the test dies.

=back

=cut
