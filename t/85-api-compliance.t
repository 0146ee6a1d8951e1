#!/usr/bin/perl
# The call fields of DESIGN.md section 9 at the API: timezone,
# callingWindow, notBefore and expiresAt accepted on create and PATCH and
# echoed; each malformed one a 400 naming it; the zones a call gets (its
# timezone, else its number's prefix data, else none); the hold decided at
# create (a future notBefore: "schedule"; a window closed now: "window",
# until its next opening) and the call not dialled before it is due, but
# dialled after; PATCH recomputing zones and hold, never earlier than a
# retry wait, and null clearing a field.
use strict;
use warnings;
use JSON::PP;
use POSIX qw(floor strftime);
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new;
$s->start_all;
$s->migrate;
$s->start_sim;
$s->write_config('dispatch.scheduler_interval' => '100ms');
$s->start_daemon;

sub problem_ok { CallorchTest::problem_ok(@_) }

# An instant as RFC 3339 UTC with milliseconds (what the resource shows).
sub iso {
    my ($t) = @_;
    my $s = floor($t);
    return strftime('%Y-%m-%dT%H:%M:%S', gmtime $s) . sprintf('.%03dZ', ($t - $s) * 1000 + 1e-6);
}

# RFC 3339 with milliseconds back to epoch seconds.
sub epoch_of {
    my ($ts) = @_;
    return undef unless defined $ts;
    my ($y, $mo, $d, $h, $mi, $sec, $ms) = $ts =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z$/
        or return undef;
    require Time::Local;
    return Time::Local::timegm($sec, $mi, $h, $d, $mo - 1, $y) + $ms / 1000;
}

sub create {
    my (%body) = @_;
    $body{to} //= $s->next_phone;
    $body{scriptId} //= 'compliance';
    return $s->api(POST => '/api/v1/calls', \%body);
}

sub created_ok {
    my ($name, %body) = @_;
    my ($st, $c) = create(%body);
    is($st, 201, "$name: 201") or diag explain $c;
    return ref $c eq 'HASH' ? $c : {};
}

sub patch {
    my ($id, $body) = @_;
    return $s->api(PATCH => "/api/v1/calls/$id", $body);
}

# A window of one hour that opens two whole hours after the current UTC
# hour, in a zone OFFSET hours east of UTC: closed now, and its next
# opening is the same instant whatever the zone.
sub closed_window {
    my ($t, $offset) = @_;
    my $h = (gmtime $t)[2];
    my $start = ($h + 2 + $offset) % 24;
    return ({ start => sprintf('%02d:00', $start), end => sprintf('%02d:00', ($start + 1) % 24) },
        floor($t / 3600) * 3600 + 2 * 3600);
}

# ------------------------------------------ held at create: "schedule" ---

{
    my $to = $s->next_phone;
    my $t = time;
    my $nb3 = iso(floor($t) + 4);
    my $c = created_ok('notBefore 3 s ahead', to => $to, notBefore => $nb3);
    is($c->{holdReason}, 'schedule', 'holdReason schedule');
    is($c->{nextAttemptAt}, $nb3, 'nextAttemptAt = notBefore');
    is($s->psql("SELECT published_at IS NULL FROM calls WHERE id = '$c->{id}'"), 't',
        'not published at create');
    my ($st, $g) = $s->api(GET => "/api/v1/calls/$c->{id}");
    is($g->{holdReason}, 'schedule', 'GET: holdReason schedule while held');
    sleep(0.2) while time < epoch_of($nb3) - 0.7;
    is($s->sim_stats->{started}, 0, 'not dialled before notBefore: the simulator saw no start');
    is(starts_for($to), 0, '... and no attempt is recorded');
    my $dialled = $s->wait_for(sub { $s->sim_stats->{started} > 0 }, timeout => 20, soft => 1,
        interval => 0.1, what => 'the call dialled');
    ok($dialled, 'dialled after notBefore');
    is(starts_for($to), 1, '... one attempt, of this call');
    my $started = $s->psql("SELECT extract(epoch FROM a.started_at) FROM call_attempts a"
        . " JOIN calls c ON c.id = a.call_id WHERE c.id = '$c->{id}' AND a.attempt = 1");
    cmp_ok($started || 0, '>=', epoch_of($nb3), 'the attempt started at or after notBefore');
}

# The attempts recorded for number TO.
sub starts_for {
    my ($to) = @_;
    return $s->psql("SELECT count(*) FROM call_attempts a JOIN calls c ON c.id = a.call_id"
        . " WHERE c.to_number = '$to'") + 0;
}

# ------------------------------------------------- accepted and echoed ---

my $now = time;
my $nb = iso($now + 3600);
my $ex = iso($now + 7200);
my $c = created_ok('every section 9 field', timezone => 'America/Chicago',
    callingWindow => { start => '09:00', end => '20:00', days => [qw(fri mon)] },
    notBefore => $nb, expiresAt => $ex);
is($c->{timezone}, 'America/Chicago', 'timezone echoed');
is_deeply($c->{timezones}, ['America/Chicago'], 'timezones = [timezone]');
is_deeply($c->{callingWindow}, { start => '09:00', end => '20:00', days => [qw(mon fri)] },
    'callingWindow echoed in its normal form (days in week order)');
is($c->{notBefore}, $nb, 'notBefore echoed');
is($c->{expiresAt}, $ex, 'expiresAt echoed');
is($c->{status}, 'PENDING', 'PENDING');
like($c->{holdReason} // '', qr/^(?:schedule|window)$/, 'held (notBefore an hour ahead)');

$c = created_ok('fractional seconds and an offset',
    notBefore => '2999-01-01T09:00:00.123456+02:00', expiresAt => '2999-01-02T00:00:00.5z');
is($c->{notBefore}, '2999-01-01T07:00:00.123Z', 'notBefore in UTC, to the millisecond');
is($c->{expiresAt}, '2999-01-02T00:00:00.500Z', 'expiresAt: a lowercase z accepted');
is($c->{holdReason}, 'schedule', 'holdReason schedule');
is($c->{nextAttemptAt}, '2999-01-01T07:00:00.123Z', 'nextAttemptAt = notBefore');

$c = created_ok('nulls on create', timezone => undef, callingWindow => undef, notBefore => undef,
    expiresAt => undef);
is($c->{$_}, undef, "$_ null") for qw(timezone callingWindow notBefore expiresAt holdReason nextAttemptAt);

# ------------------------------------------------------------ zones ---

$c = created_ok('+1555 number');
is_deeply($c->{timezones}, [], '+1555...: no zone data, timezones []');
is($s->psql("SELECT timezones IS NULL FROM calls WHERE id = '$c->{id}'"), 't',
    '... stored as NULL (no zone data), as sql/009 says');
$c = created_ok('+1907 number', to => '+19075551234');
is_deeply($c->{timezones}, [qw(America/Adak America/Anchorage)],
    '+1907...: the zones of prefix 1907 in the data');
$c = created_ok('+33 number', to => '+33612345678');
is_deeply($c->{timezones}, ['Europe/Paris'], '+33...: Europe/Paris');
$c = created_ok('+1907 number with a timezone', to => '+19075551234', timezone => 'UTC');
is_deeply($c->{timezones}, ['UTC'], 'a timezone overrides the number\'s zones');

# ------------------------------------------------------------- 400s ---

my @bad = (
    [ 'unknown zone',            { timezone => 'Mars/Olympus_Mons' },            'timezone' ],
    [ 'zone with ..',            { timezone => '../etc/passwd' },                'timezone' ],
    [ 'zone not a string',       { timezone => 5 },                              'timezone' ],
    [ 'window bad time',         { callingWindow => { start => '25:00', end => '20:00' } }, 'callingWindow' ],
    [ 'window unknown day',      { callingWindow => { start => '09:00', end => '20:00', days => ['funday'] } }, 'callingWindow' ],
    [ 'window unknown member',   { callingWindow => { start => '09:00', end => '20:00', tz => 'UTC' } }, 'callingWindow' ],
    [ 'window not an object',    { callingWindow => '09:00-20:00' },             'callingWindow' ],
    [ 'notBefore no offset',     { notBefore => '2999-01-01T09:00:00' },         'notBefore' ],
    [ 'notBefore a date',        { notBefore => '2999-01-01' },                  'notBefore' ],
    [ 'notBefore Feb 30',        { notBefore => '2999-02-30T09:00:00Z' },        'notBefore' ],
    [ 'notBefore a number',      { notBefore => 1700000000 },                    'notBefore' ],
    [ 'expiresAt space for T',   { expiresAt => '2999-01-01 09:00:00Z' },        'expiresAt' ],
    [ 'expiresAt bad offset',    { expiresAt => '2999-01-01T09:00:00+24:00' },   'expiresAt' ],
    [ 'expiresAt before notBefore', { notBefore => '2999-01-02T00:00:00Z', expiresAt => '2999-01-01T00:00:00Z' }, 'expiresAt' ],
    [ 'expiresAt = notBefore',   { notBefore => '2999-01-02T00:00:00Z', expiresAt => '2999-01-02T00:00:00Z' }, 'expiresAt' ],
    [ 'expiresAt in the past',   { expiresAt => '2020-01-01T00:00:00Z' },        'expiresAt' ],
    [ 'unknown field',           { notAfter => '2999-01-01T00:00:00Z' },         'notAfter' ],
);
for my $b (@bad) {
    my ($name, $body, $field) = @$b;
    my ($st, $p, $h) = create(%$body);
    problem_ok($st, $p, $h, 400, "create, $name", fields => [$field]);
}

# -------------------------------------------- held at create: "window" ---

for my $z ([ 'UTC', 0 ], [ 'Etc/GMT-3', 3 ]) {
    my ($zone, $offset) = @$z;
    my ($w, $opens) = closed_window(time, $offset);
    my $c = created_ok("window closed now in $zone", timezone => $zone, callingWindow => $w);
    is($c->{holdReason}, 'window', "$zone: holdReason window");
    is($c->{nextAttemptAt}, iso($opens), "$zone: nextAttemptAt = the next opening, " . iso($opens));
    is($s->psql("SELECT published_at IS NULL FROM calls WHERE id = '$c->{id}'"), 't',
        "$zone: not published at create");
    # the same window with a notBefore after its opening: the window of the next day
    my ($st2, $c2) = create(timezone => $zone, callingWindow => $w, notBefore => iso($opens + 1800));
    is($st2, 201, "$zone: with notBefore inside the window: 201");
    is($c2->{holdReason}, 'schedule', "$zone: open at notBefore: holdReason schedule");
    is($c2->{nextAttemptAt}, iso($opens + 1800), "$zone: nextAttemptAt = notBefore");
}

# ------------------------------------------------------------- PATCH ---

{
    my $far = iso(floor(time) + 3600);
    my $c = created_ok('to patch', notBefore => $far);
    my $id = $c->{id};
    is($c->{holdReason}, 'schedule', 'patch subject held by schedule');

    my ($st, $p) = patch($id, { to => '+19075551234' });
    is($st, 200, 'PATCH to: 200') or diag explain $p;
    is_deeply($p->{timezones}, [qw(America/Adak America/Anchorage)], 'PATCH to: zones recomputed');
    is($p->{nextAttemptAt}, $far, 'PATCH to: still held until notBefore');

    ($st, $p) = patch($id, { timezone => 'Europe/Paris' });
    is($st, 200, 'PATCH timezone: 200');
    is($p->{timezone}, 'Europe/Paris', 'timezone set');
    is_deeply($p->{timezones}, ['Europe/Paris'], 'timezones = [timezone]');

    ($st, $p) = patch($id, { timezone => undef });
    is($st, 200, 'PATCH timezone null: 200');
    is($p->{timezone}, undef, 'timezone cleared');
    is_deeply($p->{timezones}, [qw(America/Adak America/Anchorage)], 'zones of the number again');

    my ($w, $opens) = closed_window(time + 3600 + 60, 0);
    ($st, $p) = patch($id, { timezone => 'UTC', callingWindow => $w });
    is($st, 200, 'PATCH a window closed at notBefore: 200') or diag explain $p;
    is($p->{holdReason}, 'window', 'holdReason window');
    is($p->{nextAttemptAt}, iso($opens), 'nextAttemptAt = the opening after notBefore');
    is_deeply($p->{callingWindow}, { %$w, days => [qw(mon tue wed thu fri sat sun)] },
        'callingWindow set (every day when days are left out)');

    ($st, $p) = patch($id, { callingWindow => undef });
    is($st, 200, 'PATCH callingWindow null: 200');
    is($p->{callingWindow}, undef, 'callingWindow cleared');
    is($p->{holdReason}, 'schedule', 'held by notBefore again');
    is($p->{nextAttemptAt}, $far, 'until notBefore');

    my $ph;
    ($st, $p, $ph) = patch($id, { expiresAt => iso(floor(time) + 1800) });
    problem_ok($st, $p, $ph, 400, 'PATCH expiresAt before the stored notBefore',
        fields => ['expiresAt']);
    ($st, $p) = patch($id, { expiresAt => iso(floor(time) + 7200) });
    is($st, 200, 'PATCH expiresAt after notBefore: 200');
    ($st, $p) = patch($id, { notBefore => iso(floor(time) + 9000) });
    is($st, 400, 'PATCH notBefore after the stored expiresAt: 400');
    is($p->{errors}[0]{field}, 'notBefore', '... naming notBefore');
    ($st, $p) = patch($id, { expiresAt => '2020-01-01T00:00:00Z' });
    is($st, 400, 'PATCH expiresAt in the past: 400');
    is($p->{errors}[0]{field}, 'expiresAt', '... naming expiresAt');
    ($st, $p) = patch($id, { timezone => 'Nowhere/Town' });
    is($st, 400, 'PATCH unknown zone: 400');
    is($p->{errors}[0]{field}, 'timezone', '... naming timezone');

    ($st, $p) = patch($id, { to => '+15550009999' });
    is_deeply($p->{timezones}, ['UTC'], 'PATCH to with a timezone set: timezones stay [timezone]');
    ($st, $p) = patch($id,
        { expiresAt => undef, notBefore => undef, timezone => undef, to => '+15550009998' });
    is($st, 200, 'PATCH notBefore, expiresAt, timezone null: 200') or diag explain $p;
    is($p->{$_}, undef, "$_ cleared") for qw(notBefore expiresAt timezone holdReason nextAttemptAt);
    is_deeply($p->{timezones}, [], 'to +1555...: timezones []');
    is($s->psql("SELECT timezones IS NULL FROM calls WHERE id = '$id'"), 't',
        '... stored as NULL');
}

# A retry wait (no hold reason, a next attempt ahead) is never shortened.
{
    my $c = created_ok('retry wait', notBefore => iso(floor(time) + 3600));
    my $id = $c->{id};
    $s->psql("UPDATE calls SET next_attempt_at = now() + interval '2 hours', hold_reason = NULL,"
        . " not_before = NULL WHERE id = '$id'");
    my $wait = $s->psql("SELECT callorch_ts(next_attempt_at) FROM calls WHERE id = '$id'");
    my ($st, $p) = patch($id, { notBefore => iso(floor(time) + 600) });
    is($st, 200, 'PATCH notBefore of a call waiting for a retry: 200') or diag explain $p;
    is($p->{nextAttemptAt}, $wait, 'the later retry wait is kept');
    is($p->{holdReason}, undef, 'no hold reason: a retry wait');
    my $later = iso(floor(time) + 3 * 3600);
    ($st, $p) = patch($id, { notBefore => $later });
    is($p->{nextAttemptAt}, $later, 'a notBefore after it wins');
    is($p->{holdReason}, 'schedule', '... as a schedule hold');
}

# The dispatcher's attempt budget hold ("frequency") is kept too, unless
# `to` changes (the budget is the old number's).
{
    my $c = created_ok('frequency hold', notBefore => iso(floor(time) + 3600));
    my $id = $c->{id};
    $s->psql("UPDATE calls SET next_attempt_at = now() + interval '2 hours',"
        . " hold_reason = 'frequency', not_before = NULL WHERE id = '$id'");
    my $wait = $s->psql("SELECT callorch_ts(next_attempt_at) FROM calls WHERE id = '$id'");
    my $nb = iso(floor(time) + 600);
    my ($st, $p) = patch($id, { notBefore => $nb });
    is($st, 200, 'PATCH notBefore of a call held for its number\'s attempts: 200');
    is($p->{nextAttemptAt}, $wait, 'the later frequency hold is kept');
    is($p->{holdReason}, 'frequency', '... with its reason');
    ($st, $p) = patch($id, { to => $s->next_phone });
    is($p->{holdReason}, 'schedule', 'a new number: the frequency hold no longer applies');
    is($p->{nextAttemptAt}, $nb, '... held until notBefore');
}

# EXPIRED is a status the list filter takes.
{
    my ($st, $b) = $s->api(GET => '/api/v1/calls?status=EXPIRED');
    is($st, 200, 'GET ?status=EXPIRED: 200');
    my ($st2, $m) = $s->api(GET => '/api/v1/metrics');
    ok(exists $m->{EXPIRED}, 'metrics list EXPIRED');
}

is($s->stop_daemon, 0, 'callorchd stops cleanly');

# The prefix table is loaded by the master at start: a missing or malformed
# file is a configuration error, which -t reports too.
{
    my $bin = CallorchTest::builddir() . '/src/callorchd';
    my $path = $s->write_config;
    my ($out, $rc) = CallorchTest::run_command($bin, '-t', '-c', $path);
    is($rc, 0, '-t with the build\'s prefix data: 0') or diag($out);
    my $missing = $s->tmpdir . '/no-such-tzprefix.tsv';
    $path = $s->write_config('compliance.timezone_prefixes' => $missing);
    ($out, $rc) = CallorchTest::run_command($bin, '-t', '-c', $path);
    is($rc, 1, '-t with a missing prefix file: 1');
    like($out, qr/^callorchd: \[compliance\] timezone_prefixes: \Q$missing\E: No such file/m,
        '... naming the key, the file and the reason') or diag($out);
    ($out, $rc) = CallorchTest::run_command($bin, '-f', '-c', $path);
    is($rc, 1, 'callorchd -f with a missing prefix file exits 1');
    like($out, qr/timezone_prefixes: \Q$missing\E/, '... saying why');
    my $bad = $s->tmpdir . '/bad-tzprefix.tsv';
    open my $fh, '>', $bad or die "$bad: $!";
    print $fh "1907\tAmerica/Anchorage\nnot a line\n";
    close $fh;
    $path = $s->write_config('compliance.timezone_prefixes' => $bad);
    ($out, $rc) = CallorchTest::run_command($bin, '-t', '-c', $path);
    is($rc, 1, '-t with a malformed prefix file: 1');
    like($out, qr/timezone_prefixes: \Q$bad\E:2/, '... naming the file and line') or diag($out);
}
done_testing;
