#!/usr/bin/perl
# callorchctl migrate and check-config, and what sql/001_schema.sql promises:
# applied once, recorded, serialized between concurrent runs, rolled back on
# error; the JSON rendering of a call; the database-level guarantees.
use strict;
use warnings;
use Test::More;
use File::Copy qw(copy);
use File::Temp qw(tempdir);
use CallorchTest;

my $ctl = CallorchTest::builddir() . '/src/callorchctl';
my $sqldir = CallorchTest::srcdir() . '/sql';
my $dir = tempdir(CLEANUP => 1);

plan(skip_all => 'PostgreSQL server binaries not found (Debian package postgresql)')
    unless CallorchTest::pg_bindir();
my $s = CallorchTest->new;
$s->start_postgres;
my $base = $s->pg_conninfo;

# ----------------------------------------------------------------- helpers --

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $text;
    close $fh;
    return "$dir/$name";
}

# conninfo of the same server, another database
sub conninfo_db {
    my ($db) = @_;
    return $base =~ /\bdbname=\S+/ ? $base =~ s/\bdbname=\S+/dbname=$db/r : "$base dbname=$db";
}

# SQL on database DB: psql's unaligned output; dies on error
sub sql {
    my ($db, $query) = @_;
    return $s->psql($query, db => $db);
}

# SQL that is expected to fail: (failed, message)
sub sql_error {
    my ($db, $query) = @_;
    my $out = eval { $s->psql($query, db => $db) };
    return defined $out ? (0, $out) : (1, "$@");
}

my $n_db = 0;
sub fresh_db {
    my $db = sprintf 'migtest_%d_%d', $$, ++$n_db;
    sql('postgres', "CREATE DATABASE $db");
    return $db;
}

# A config of the harness's kind, pointing at CONNINFO.
sub config_for {
    my ($name, $conninfo) = @_;
    return write_file($name, $s->config_text('postgres.conninfo' => $conninfo));
}

sub run {
    my $cmd = join ' ', map { "'" . s/'/'\\''/gr . "'" } @_;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

# A loopback port nothing listens on (bound a moment ago, never listened).
sub closed_port { return CallorchTest::closed_port() }

# ---------------------------------------------------------------- migrate --

# The shipped migrations, in the order they must be applied (by number).
my @files = map { $_->[1] } sort { $a->[0] <=> $b->[0] }
    map { m{/((\d+)_[^/]*\.sql)$} ? [ $2, $1 ] : () } glob("$sqldir/*.sql");
my $n = @files;
my @versions = map { /^(\d+)_/ ? $1 : () } @files;
ok($n >= 1 && $files[0] eq '001_schema.sql', "$n migrations, starting with 001_schema.sql");

my $db = fresh_db();
my $cfg = config_for('ok.ini', conninfo_db($db));

my ($rc, $out) = run($ctl, '-c', $cfg, '--sql-dir', $sqldir, 'migrate');
is($rc, 0, 'migrate on an empty database exits 0') or diag($out);
is(join(',', $out =~ /^applied (\S+)$/mg), join(',', @files), 'it applies every file, in order');
like($out, qr/$n applied, 0 already present/, 'and counts them');
is(sql($db, "SELECT string_agg(version || ' ' || file, ',' ORDER BY version) FROM schema_migrations"),
    join(',', map { "$versions[$_] $files[$_]" } 0 .. $#files), 'schema_migrations records each');
is(sql($db, "SELECT count(*) FROM pg_tables WHERE tablename IN ('calls','call_attempts','idempotency_keys')"),
    3, 'the tables exist');

($rc, $out) = run($ctl, '-c', $cfg, '--sql-dir', $sqldir, 'migrate');
is($rc, 0, 'second run exits 0');
like($out, qr/0 applied, $n already present/, 'second run applies nothing');
unlike($out, qr/^applied/m, 'and lists no file');

{
    local $ENV{CALLORCH_SQLDIR} = $sqldir;
    ($rc, $out) = run($ctl, '-c', $cfg, 'migrate');
    is($rc, 0, 'CALLORCH_SQLDIR sets the migration directory');
    like($out, qr/$n already present/, 'and is used');
    ($rc, $out) = run($ctl, '-c', $cfg, '--sql-dir', "$dir/nonexistent", 'migrate');
    is($rc, 1, '--sql-dir overrides CALLORCH_SQLDIR (missing dir: exit 1)');
    like($out, qr{cannot open migration directory .*/nonexistent}, 'naming the directory');
}

# --------------------------------------------------------- the schema ------

my $call = sql($db, q{INSERT INTO calls (to_number, script_id, max_attempts, metadata)
    VALUES ('+15551234567', 'welcome-flow', 3, '{"campaign":"fall"}') RETURNING id});
my $json = sql($db, "SELECT call_json(c) FROM calls c WHERE id = '$call'");
my @keys = $json =~ /"(\w+)":/g;
is(join(',', @keys), 'id,to,scriptId,metadata,campaign,status,attempts,maxAttempts,lastError,'
    . 'externalCallId,nextAttemptAt,createdAt,updatedAt,startedAt,endedAt,'
    . 'timezone,timezones,callingWindow,notBefore,expiresAt,holdReason,campaignId,priority',
    'call_json: the keys of DESIGN section 4, then those of section 9, then 10, in order');
like($json, qr/"holdReason":null,"campaignId":null,"priority":5\}$/,
    'section 10 fields of a plain call: no campaign, priority 5');
like($json, qr/"endedAt":null,"timezone":null,"timezones":\[\],"callingWindow":null,"notBefore":null,"expiresAt":null,"holdReason":null,/,
    'section 9 fields of a plain call: no zone, no zones ([]), no window, schedule, expiry or hold');
like($json, qr/"createdAt":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"/, 'RFC 3339 UTC with milliseconds');
like($json, qr/"lastError":null,"externalCallId":null,"nextAttemptAt":null/, 'NULLs are JSON null');
like($json, qr/"status":"PENDING","attempts":0,"maxAttempts":3/, 'defaults: PENDING, 0 attempts');
like($json, qr/"metadata":\{"campaign": ?"fall"\}/, 'metadata passed through');
is(sql($db, q{SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'German';
    SELECT call_json(c)->>'createdAt' = to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    FROM calls c WHERE id = '} . $call . q{'}), 't', 'timestamps do not depend on TimeZone or DateStyle');

my $bare = sql($db, q{INSERT INTO calls (to_number, script_id, max_attempts)
    VALUES ('+15557654321', 'x', 1) RETURNING call_json(calls)});
like($bare, qr/"metadata":\{\}/, 'no metadata sent: {}');

is(sql($db, "SELECT call_attempt_log('$call')"), '[]', 'attemptLog of a call without attempts: []');
sql($db, "INSERT INTO call_attempts (call_id, attempt, outcome, external_call_id) VALUES ('$call', 2, 'BUSY', 'p-2'), ('$call', 1, 'FAILED', 'p-1')");
my $log = sql($db, "SELECT call_attempt_log('$call')");
like($log, qr/^\[\{"attempt":1,"startedAt":"[^"]+Z","endedAt":null,"outcome":"FAILED","error":null,"externalCallId":"p-1"\},\{"attempt":2,/,
    'attemptLog entries ordered by attempt, with their fields');
my $detail = sql($db, "SELECT call_detail_json(c) FROM calls c WHERE id = '$call'");
is(substr($detail, 0, length($json) - 1), substr($json, 0, -1), 'call_detail_json starts with call_json');
like($detail, qr/,"attemptLog":\[\{"attempt":1.*\]\}$/, 'and ends with attemptLog');
is(sql($db, "SELECT json_typeof(call_detail_json(c)) FROM calls c WHERE id = '$call'"), 'object', 'valid JSON');

sql($db, "UPDATE calls SET status = 'IN_PROGRESS' WHERE id = '$call'");
my $other = sql($db, q{INSERT INTO calls (to_number, script_id, max_attempts)
    VALUES ('+15551234567', 'welcome-flow', 3) RETURNING id});
my ($erc, $err) = sql_error($db, "UPDATE calls SET status = 'IN_PROGRESS' WHERE id = '$other'");
isnt($erc, 0, 'a second IN_PROGRESS call for one number is refused');
like($err, qr/calls_one_in_progress_per_number/, 'by the partial unique index');
($erc, $err) = sql_error($db, "UPDATE calls SET status = 'DONE' WHERE id = '$other'");
like($err, qr/calls_status_check/, 'unknown status refused');
($erc, $err) = sql_error($db, "UPDATE calls SET attempts = 4 WHERE id = '$other'");
like($err, qr/calls_attempts_check/, 'attempts above max_attempts refused');
is(sql($db, "SELECT updated_at > created_at FROM calls WHERE id = '$call'"), 't',
    'updated_at follows updates');

# ---------------------------------------------------- concurrent runs ------

my $cdb = fresh_db();
my $ccfg = config_for('conc.ini', conninfo_db($cdb));
my @kids;
for my $i (1 .. 4) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$dir/conc$i.out" or die;
        open STDERR, '>&', \*STDOUT or die;
        exec $ctl, '-c', $ccfg, '--sql-dir', $sqldir, 'migrate' or die "exec: $!";
    }
    push @kids, $pid;
}
my @status = map { waitpid($_, 0); $? >> 8 } @kids;
is("@status", '0 0 0 0', 'four concurrent runs all exit 0');
my $applied = 0;
for my $i (1 .. 4) {
    open my $fh, '<', "$dir/conc$i.out" or die;
    local $/;
    my $o = <$fh>;
    $applied += () = $o =~ /^applied /mg;
}
is($applied, $n, 'between them, each file was applied exactly once');
is(sql($cdb, 'SELECT count(*) FROM schema_migrations'), $n, 'and recorded once');

# ----------------------------------------------------- failing migration --

my $fdb = fresh_db();
my $fcfg = config_for('fail.ini', conninfo_db($fdb));
my $bad = tempdir(CLEANUP => 1);
copy("$sqldir/001_schema.sql", "$bad/001_schema.sql") or die;
open my $fh, '>', "$bad/002_broken.sql" or die;
print $fh "CREATE TABLE half_done (a int);\n\nSELECT no_such_column\n  FROM calls;\n";
close $fh;
open $fh, '>', "$bad/003_later.sql" or die;
print $fh "CREATE TABLE later (a int);\n";
close $fh;
($rc, $out) = run($ctl, '-c', $fcfg, '--sql-dir', $bad, 'migrate');
is($rc, 1, 'a failing migration exits 1');
like($out, qr{002_broken\.sql:3: column "no_such_column" does not exist \(42703\)},
    'naming file, line, PostgreSQL message and SQLSTATE');
is(sql($fdb, 'SELECT string_agg(version, \',\' ORDER BY version) FROM schema_migrations'), '001',
    '001 applied and recorded, 002 not');
is(sql($fdb, "SELECT to_regclass('half_done') IS NULL AND to_regclass('later') IS NULL"), 't',
    '002 rolled back entirely, 003 not attempted');

# -------------------------------------------------- database unreachable --

my $port = closed_port();
my $ucfg = config_for('closed.ini', "host=127.0.0.1 port=$port dbname=x user=x password=sekrit connect_timeout=3");
($rc, $out) = run($ctl, '-c', $ucfg, '--sql-dir', $sqldir, 'migrate');
is($rc, 1, 'unreachable database: exit 1');
like($out, qr/^callorchctl: cannot connect to PostgreSQL \(conninfo [^)]*port=$port[^)]*\): .*refused/m,
    'with a clear message');
unlike($out, qr/sekrit/, 'the password is not printed');
like($out, qr/password=\*\*\*/, 'but masked');

# ------------------------------------------------------------ command line --

($rc, $out) = run($ctl, 'frobnicate');
is($rc, 2, 'unknown command: exit 2');
like($out, qr/unknown command 'frobnicate'.*Usage: callorchctl/s, 'with the usage');
($rc, $out) = run($ctl, '--no-such-option', 'migrate');
is($rc, 2, 'unknown option: exit 2');
like($out, qr/Usage: callorchctl/, 'with the usage');
($rc, $out) = run($ctl);
is($rc, 2, 'no command: exit 2');
($rc, $out) = run($ctl, '--help');
is($rc, 0, '--help exits 0');
like($out, qr/migrate.*check-config/s, 'and lists the commands');
($rc, $out) = run($ctl, '-V');
is($rc, 0, '-V exits 0');
like($out, qr/^callorchctl \(callorch\) \d+\.\d+/, 'and prints the version');

# ------------------------------------------------------------ check-config --

($rc, $out) = run($ctl, '-c', $cfg, 'check-config');
is($rc, 0, 'check-config on a valid file exits 0');
is($out, "$cfg: ok\n", 'and says FILE: ok');
my $invalid = write_file('invalid.ini', "[postgres]\nconninfo = x\n[http]\nworkers = 0\n"
    . "[provider]\ncallback_secret = " . CallorchTest::callback_secret() . "\n");
($rc, $out) = run($ctl, '-c', $invalid, 'check-config');
is($rc, 1, 'check-config on an invalid file exits 1');
like($out, qr/^\Q$invalid\E:4: .*workers/, 'with file:line: message');
($rc, $out) = run($ctl, '-c', "$dir/missing.ini", 'check-config');
is($rc, 1, 'check-config on a missing file exits 1');
($rc, $out) = run($ctl, '-c', $invalid, 'migrate');
is($rc, 1, 'migrate with an invalid config exits 1');

done_testing();
