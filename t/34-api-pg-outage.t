#!/usr/bin/perl
# PostgreSQL goes away under a running callorchd (DESIGN.md section 4:
# "Database unreachable: 503 with Retry-After, never a crash or a hang"):
# every database-backed endpoint answers 503 + Retry-After promptly, /readyz
# says 503 and /healthz 200; when PostgreSQL is back on the same port the
# API recovers by itself within a bounded wait — same master, same http
# workers, and every call answered 201 before the outage is still there.
# Twice: a clean shutdown (fast) and a crash (immediate).
#
# The daemon is the test build with the pools' reconnect backoff capped at
# 1 s (production 5 s, src/util/tunables.h), so a shorter outage takes it
# to its cap.
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchTest;

CallorchTest::require_stack();

my $PROMPT = 8;    # s: "answered promptly" (the pool's queue timeout is 5 s), generous

my $s = CallorchTest->new(phone_base => 3_000_000);
$s->start_all;
$s->migrate;
$s->write_config('http.workers' => 2);
my $BACKOFF_MAX = 1;    # s, the pools' reconnect backoff cap (0.1 s doubling)
my $LONG = 3;           # s, the longer outage: past 0.1 + 0.2 + 0.4 + 0.8 s, at the cap
my $master = $s->start_daemon(tunables => { pg_backoff_max => $BACKOFF_MAX });

sub http_workers {
    return sort { $a <=> $b } map { $_->{pid} } grep { $_->{title} =~ /http/ } $s->children_of($master);
}
my @workers = http_workers();
is(scalar @workers, 2, "two http workers: @workers");


# METHOD PATH [BODY]: (status, body, headers, seconds taken).
sub timed {
    my $t0 = time;
    my @r = $s->api(@_);
    return (@r, time - $t0);
}

sub unavailable_ok {
    my ($st, $b, $h, $took, $name) = @_;
    subtest "$name: 503 + Retry-After" => sub {
        is($st, 503, 'status 503') or diag explain $b;
        like($h->{'retry-after'} // '', qr/^[1-9]\d*$/, 'Retry-After: seconds');
        like($h->{'content-type'} // '', qr{^application/(?:problem\+)?json\b}, 'a JSON body');
        ok($took < $PROMPT, sprintf('answered in %.2fs', $took));
    };
}

# ---- raw HTTP: many requests at the same moment

sub raw_post_text {
    my $body = encode_json({ to => $s->next_phone, scriptId => 'outage' });
    return "POST /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n\r\n$body";
}

# Send every text on its own connection at once; statuses in order.
sub raw_statuses {
    my (@texts) = @_;
    my @socks = map {
        IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->http_port, Proto => 'tcp',
            Timeout => 10) or die "connect: $!"
    } @texts;
    syswrite($socks[$_], $texts[$_]) for 0 .. $#texts;
    my @st;
    for my $sock (@socks) {
        my $sel = IO::Select->new($sock);
        my ($buf, $end) = ('', time + 30);
        while ($sel->can_read(max0($end - time))) {
            last unless sysread($sock, $buf, 65536, length $buf);
        }
        push @st, $buf =~ m{^HTTP/1\.1 (\d{3})} ? $1 : 0;
        close $sock;
    }
    return @st;
}
sub max0 { return $_[0] > 0 ? $_[0] : 0 }

# ----------------------------------------------------------------------

my %stored;    # id => to, for every 201
{
    my ($st, $c) = $s->api(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => 'before' });
    is($st, 201, 'before the outage: 201');
    $stored{ $c->{id} } = $c->{to};
}
my ($some_id) = keys %stored;

for my $mode (qw(fast immediate)) {
    # A few calls right before, to check they survive.
    for (1 .. 5) {
        my ($st, $c) = $s->api(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => "pre-$mode" });
        $stored{ $c->{id} } = $c->{to} if $st == 201;
    }

    ok($s->stop_postgres(mode => $mode), "PostgreSQL stopped ($mode)");
    my $down_at = time;

    # Every POST during the outage is a prompt 503, from the first on.
    my (%seen, $slowest);
    $slowest = 0;
    for my $i (1 .. 10) {
        my ($st, $b, $h, $took) = timed(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => 'down' });
        $seen{$st}++;
        $slowest = $took if $took > $slowest;
        $stored{ $b->{id} } = $b->{to} if $st == 201;    # cannot happen; if it does, it must be kept
    }
    is(join(',', map { "$_=$seen{$_}" } sort keys %seen), '503=10',
        "$mode: 10 POSTs during the outage: all 503");
    ok($slowest < $PROMPT, sprintf('%s: the slowest answered in %.2fs', $mode, $slowest));

    unavailable_ok(timed(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => 'down' }), "$mode: POST");
    unavailable_ok(timed(GET => "/api/v1/calls/$some_id"), "$mode: GET one");
    unavailable_ok(timed(GET => '/api/v1/calls'), "$mode: list");
    unavailable_ok(timed(PATCH => "/api/v1/calls/$some_id", { scriptId => 'x' }), "$mode: PATCH");
    unavailable_ok(timed(POST => "/api/v1/calls/$some_id/cancel"), "$mode: cancel");
    unavailable_ok(timed(GET => '/api/v1/metrics'), "$mode: metrics");

    my $t0 = time;
    my @st = raw_statuses(map { raw_post_text() } 1 .. 20);
    is("@st", join(' ', (503) x 20), "$mode: 20 concurrent POSTs: all 503");
    ok(time - $t0 < $PROMPT, sprintf('%s: ... all answered within %.2fs', $mode, time - $t0));

    # Both workers say not ready (each request may land on either).
    my @ready = map { ($s->api(GET => '/readyz'))[0] } 1 .. 10;
    is("@ready", join(' ', (503) x 10), "$mode: /readyz 503 (10 times)");
    my ($st, $b, $h) = $s->api(GET => '/readyz');
    like($h->{'retry-after'} // '', qr/^\d+$/, "$mode: /readyz 503 with Retry-After");
    is(($s->api(GET => '/healthz'))[0], 200, "$mode: /healthz 200 all the same");
    # A longer outage, so the pools' reconnect backoff grows to its cap:
    # answers stay prompt 503s all along.
    my %later;
    my $worst = 0;
    while (time - $down_at < $LONG) {
        my ($st, undef, undef, $took) = timed(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => 'down' });
        $later{$st}++;
        $worst = $took if $took > $worst;
        sleep 0.25;
    }
    is(join(',', keys %later), '503', "$mode: still 503 after ${LONG}s down");
    ok($worst < $PROMPT, sprintf('%s: ... the slowest in %.2fs', $mode, $worst));
    note(sprintf '%s: outage lasted %.1fs', $mode, time - $down_at);

    # ---- back
    $s->start_postgres;
    my $up_at = time;
    my $back = $s->wait_for(sub {
        my ($st, $c) = $s->api(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => 'back' });
        $stored{ $c->{id} } = $c->{to} if $st == 201;
        return $st == 201;
    }, timeout => 30, soft => 1);
    ok($back, "$mode: PostgreSQL back on the same port: POST answers 201 again");
    note(sprintf '%s: first 201 %.1fs after the restart', $mode, time - $up_at);

    # Both workers recovered: ten in a row, on fresh connections.
    my $all = $s->wait_for(sub {
        for (1 .. 10) {
            my ($st, $c) = $s->api(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => 'back' });
            $stored{ $c->{id} } = $c->{to} if $st == 201;
            return 0 unless $st == 201;
            return 0 unless ($s->api(GET => '/readyz'))[0] == 200;
        }
        return 1;
    }, timeout => 30, soft => 1);
    ok($all, "$mode: ten POSTs and /readyz in a row succeed (both workers recovered)");
    is(($s->api(GET => "/api/v1/calls/$some_id"))[0], 200, "$mode: GET 200 again");

    ok(kill(0, $master), "$mode: the master is still running");
    is($s->daemon_pid, $master, "$mode: the same master pid");
    is_deeply([ http_workers() ], \@workers, "$mode: the same http workers (no restart)");
}

{
    my $ids = join "','", keys %stored;
    is($s->psql("SELECT count(*) FROM calls WHERE id IN ('$ids')"), scalar keys %stored,
        'every call answered 201 is stored (' . scalar(keys %stored) . ')');
}
unlike($s->log_text, qr/msg="child (?:exited|killed)/, 'no child exited or was killed');
is($s->stop_daemon, 0, 'callorchd stops cleanly');

done_testing;
