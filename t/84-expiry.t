#!/usr/bin/perl
# expiresAt (DESIGN.md section 9), on the real stack: a call not finished
# by its expiry ends EXPIRED and is never dialled after it.
#
#  a) calls whose expires_at has passed, or passes a moment later, end
#     EXPIRED within a few scheduler ticks while dispatch is paused (the
#     scheduler's sweep, not the dispatcher), never dialled, counted in
#     call_status_counts and in /metrics callorch_calls_expired_total;
#  b) a call waiting for its retry (its first attempt FAILED) whose expiry
#     passes ends EXPIRED with its one attempt, and is not dialled again;
#  c) a call expired when the dispatcher loads it ends EXPIRED there,
#     without a slot, even when the sweep does not run.
use strict;
use warnings;
use HTTP::Tiny;
use Test::More;
use Time::HiRes qw(time);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new(phone_base => 8_400_000);
$s->start_all;
$s->migrate;
my $R = '+15558400901';    # b) fails its first attempt
$s->start_sim('--delay', '200ms', '--success-rate', '1', '--seed', '84',
    '--outcome', "$R=FAILED");
$s->write_config(
    'dispatch.max_concurrent_calls' => 5,
    'dispatch.max_attempts'         => 3,
    'dispatch.backoff_base'         => '5m',
    'dispatch.backoff_max'          => '10m',
    'dispatch.scheduler_interval'   => '200ms',
);
$s->start_daemon;

sub ctl { return $s->ctl_ok(@_) }

sub post { return $s->post_call_ok(@_) }

sub get_call { return $s->get_call(@_) }

sub status { return $s->psql("SELECT status FROM calls WHERE id = '$_[0]'") }

sub wait_status {
    my ($id, $want, $timeout, $what) = @_;
    my $st;
    ok($s->wait_for(sub { $st = status($id); $st eq $want }, timeout => $timeout,
            interval => 0.1, soft => 1), "$what: $want") or diag("status $st");
}

sub expires {
    my ($id, $when) = @_;
    $s->psql("UPDATE calls SET expires_at = $when WHERE id = '$id'");
}

sub expired_count {
    return $s->psql("SELECT sum(n) FROM call_status_counts WHERE status = 'EXPIRED'");
}

sub metric {
    my ($name) = @_;
    my $text = HTTP::Tiny->new->get($s->base_url . '/metrics')->{content} // '';
    return $text =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

# ============================================ a) the sweep, paused ===
ctl('pause');
my $past = post($s->next_phone, 'exp-past');
my $soon = post($s->next_phone, 'exp-soon');
expires($past->{id}, "now() - interval '1 second'");
expires($soon->{id}, "now() + interval '1 second'");
my $t0 = time;
wait_status($past->{id}, 'EXPIRED', 10, 'a: expires_at passed');
wait_status($soon->{id}, 'EXPIRED', 10, 'a: expires_at a second later');
cmp_ok(time - $t0, '>=', 0.9, 'a: the near expiry was waited for');
my $c = get_call($past->{id});
is($c->{attempts}, 0, 'a: no attempt');
ok(defined $c->{endedAt}, 'a: endedAt set');
like($c->{lastError} // '', qr/expired/, 'a: lastError says why');
is(expired_count(), 2, 'a: call_status_counts counts two EXPIRED');
is(metric('callorch_calls_expired_total'), 2, '/metrics: callorch_calls_expired_total 2');
ctl('resume');
$s->scheduler_ticks(3);
is($s->sim_stats->{started}, 0, 'a: nothing was dialled');

# ========================================= b) in the retry wait ===
my $r = post($R, 'exp-retry');
ok($s->wait_for(sub { $s->psql("SELECT status || attempts FROM calls WHERE id = '$r->{id}'")
            eq 'PENDING1' }, timeout => 30, soft => 1),
    'b: the first attempt failed; a retry is planned');
expires($r->{id}, "now()");
wait_status($r->{id}, 'EXPIRED', 10, 'b: the retry wait passed its expiry');
is(get_call($r->{id})->{attempts}, 1, 'b: one attempt, not dialled again');
is($s->sim_stats->{started}, 1, 'b: the simulator started it once');

# =========================================== c) at the dispatcher ===
# With the sweep failing (its function renamed away for a moment), only
# the dispatcher's load can end the call.
ctl('pause');
my $d = post($s->next_phone, 'exp-dispatch');
$s->psql("UPDATE calls SET next_attempt_at = NULL, hold_reason = NULL, published_at = NULL,"
    . " expires_at = now() - interval '1 second' WHERE id = '$d->{id}'");
$s->psql('ALTER FUNCTION expire_calls(int) RENAME TO expire_calls_off');
ctl('resume');
wait_status($d->{id}, 'EXPIRED', 20, 'c: expired by the dispatcher');
$s->psql('ALTER FUNCTION expire_calls_off(int) RENAME TO expire_calls');
like($s->log_text, qr/msg="call expired before it could be dialled" call=\Q$d->{id}\E/,
    'c: the dispatcher ended it at the load');
like($s->log_text, qr/msg="expiry sweep failed/, 'c: (the sweep was failing meanwhile)');
is($s->sim_stats->{started}, 1, 'c: not dialled');
is(metric('callorch_calls_expired_total'), 4, '/metrics: callorch_calls_expired_total 4');

$s->stop_daemon;
done_testing();
