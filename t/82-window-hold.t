#!/usr/bin/perl
# The calling window checked at dial time (DESIGN.md section 9), on the
# real stack: the dispatcher, just before it would take a slot, holds a
# call whose window is closed (PENDING, holdReason "window", nextAttemptAt
# = the next opening) instead of dialling it.
#
#  a) [compliance] calling_hours is an hour-long window opening two hours
#     from now (UTC; the +1555 test numbers have no zone data and
#     unknown_timezone = utc): a call is not dialled, stays PENDING with
#     holdReason "window" and nextAttemptAt exactly the next opening; a
#     call whose own stored callingWindow is open now is dialled;
#  b) unknown_timezone = skip with any calling hours: a number without
#     zone data is held (holdReason "window") for RULES_SKIP_RECHECK; a
#     call whose stored zone is not in tzdata (removed since the create)
#     is held for an hour too, not dialled blind, and the log says why.
#
# The calls are created while dispatch is paused, and any hold the API
# decided at create time is cleared with SQL before dispatch resumes, so
# that the dispatcher's own check is what holds them.
use strict;
use warnings;
use POSIX qw(floor strftime);
use Test::More;
use Time::HiRes qw(time);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new(phone_base => 8_200_000);
$s->start_all;
$s->migrate;
$s->start_sim('--delay', '200ms', '--success-rate', '1', '--seed', '82');

# An hour-long window opening two hours from now, to the minute, in UTC.
my $open_at = floor((time + 2 * 3600) / 60) * 60;
my $hours = strftime('%H:%M', gmtime $open_at) . '-' . strftime('%H:%M', gmtime($open_at + 3600));

my %base = (
    'dispatch.max_concurrent_calls' => 5,
    'dispatch.scheduler_interval'   => '200ms',
);
$s->write_config(%base, 'compliance.calling_hours' => $hours,
    'compliance.unknown_timezone' => 'utc');
$s->start_daemon;

sub ctl { return $s->ctl_ok(@_) }

sub post { return $s->post_call_ok(@_) }

sub get_call { return $s->get_call(@_) }

# The row as the dispatcher left it: status, hold_reason, next_attempt_at
# (unix seconds, fractional), attempts.
sub row {
    my ($id) = @_;
    my @f = split /\|/, $s->psql("SELECT status, COALESCE(hold_reason, ''),"
        . " COALESCE(extract(epoch FROM next_attempt_at)::text, ''), attempts"
        . " FROM calls WHERE id = '$id'"), -1;
    return { status => $f[0], hold => $f[1], next => $f[2], attempts => $f[3] };
}

sub wait_held {
    my ($id, $what) = @_;
    my $r;
    ok($s->wait_for(sub { $r = row($id); $r->{hold} ne '' }, timeout => 30, soft => 1),
        "$what: held by the dispatcher") or diag explain $r;
    return $r;
}

# A hold the API may have decided at create time is undone: the call is
# due, and only the dispatcher's check can hold it.
sub clear_hold {
    my ($id) = @_;
    $s->psql("UPDATE calls SET next_attempt_at = NULL, hold_reason = NULL,"
        . " published_at = NULL WHERE id = '$id'");
}

# ================================================= a) window closed ===
ctl('pause');
my $closed = post($s->next_phone, 'win-closed');
my $own    = post($s->next_phone, 'win-own-open');
clear_hold($_->{id}) for $closed, $own;
# its own window: every day, the whole day
$s->psql("UPDATE calls SET calling_window = "
    . "'{\"start\":\"00:00\",\"end\":\"24:00\",\"days\":[\"mon\",\"tue\",\"wed\",\"thu\","
    . "\"fri\",\"sat\",\"sun\"]}' WHERE id = '$own->{id}'");
ctl('resume');

my $r = wait_held($closed->{id}, 'a: closed window');
is($r->{status}, 'PENDING', 'a: the held call stays PENDING');
is($r->{hold}, 'window', 'a: hold_reason window');
is($r->{attempts}, 0, 'a: no attempt started');
cmp_ok(abs(($r->{next} || 0) - $open_at), '<', 0.001,
    "a: nextAttemptAt is the next opening ($hours UTC)") or diag("next $r->{next} want $open_at");
my $c = get_call($closed->{id});
is($c->{holdReason}, 'window', 'a: the resource shows holdReason "window"');
like($c->{nextAttemptAt} // '', qr/^\Q@{[strftime('%Y-%m-%dT%H:%M:00', gmtime $open_at)]}\E/,
    'a: the resource shows nextAttemptAt at the opening');

ok($s->wait_for(sub { my $x = get_call($own->{id}); $x && $x->{status} eq 'COMPLETED' },
        timeout => 30, soft => 1), 'a: the call with its own open window is dialled');
is($s->sim_stats->{started}, 1, 'a: the simulator started only that call');
$s->scheduler_ticks(3);
is(row($closed->{id})->{attempts}, 0, 'a: the held call is not dialled on later ticks');
like($s->log_text, qr/msg="call held".*reason=window/, 'a: the dispatcher logged the hold');

# ========================================= b) unknown_timezone = skip ===
$s->stop_daemon;
$s->write_config(%base, 'compliance.calling_hours' => '',
    'compliance.unknown_timezone' => 'skip');
$s->start_daemon;
ctl('pause');
my $skip = post($s->next_phone, 'win-skip');
my $gone = post($s->next_phone, 'win-zone-gone');
clear_hold($_->{id}) for $skip, $gone;
$s->psql("UPDATE calls SET timezones = '{Nowhere/Atlantis}' WHERE id = '$gone->{id}'");
my $t0 = time;
ctl('resume');
$r = wait_held($skip->{id}, 'b: no zone data with unknown_timezone = skip');
is($r->{hold}, 'window', 'b: hold_reason window');
is($r->{attempts}, 0, 'b: not dialled');
cmp_ok($r->{next}, '>=', floor($t0) + 3600 - 1, 'b: held for an hour (from)');
cmp_ok($r->{next}, '<=', time + 3600 + 1, 'b: held for an hour (to)');
$r = wait_held($gone->{id}, 'b: a zone not in tzdata');
is($r->{hold}, 'window', 'b: hold_reason window');
cmp_ok($r->{next}, '>=', floor($t0) + 3600 - 1, 'b: held for an hour');
like($s->log_text,
    qr/msg="cannot check the calling window; call held for an hour" call=\Q$gone->{id}\E .*Nowhere/,
    'b: the log says why');
is($s->sim_stats->{started}, 1, 'b: the simulator started nothing more');

$s->stop_daemon;
done_testing();
