#!/usr/bin/perl
# Client events (DESIGN.md section 10) on the real stack: the outbox row
# written with each state change, delivery by the events child as signed
# Standard Webhooks POSTs ([events] url, or a call's own events_url), in
# order per call, retries after 5xx, a receiver that never answers not
# delaying other calls, GET /api/v1/calls/{id}/events, the /metrics
# families, and a chaos case (the events child killed, PostgreSQL
# restarted while calls flow).
#
# The receiver is t/lib/CallorchReceiver.pm: /hook answers 200, /fail/N
# 503 N times then 200, /hang never answers.
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(hmac_sha256_base64);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX ();
use Time::HiRes qw(sleep time);
use CallorchReceiver;
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new(phone_base => 9_000_000);
$s->start_all;
$s->migrate;
$s->start_sim('--delay', '100ms-300ms', '--success-rate', '1');

my $KEY    = 'client-events-key-0123456789abcdef';
my $SECRET = 'whsec_' . encode_base64($KEY, '');
my $CLIENT = 'test-client-key-90';
my $rcv    = CallorchReceiver->start($s->tmpdir . '/events.jsonl');
my %CONFIG = (
    'http.api_keys'               => $CLIENT,
    'dispatch.max_attempts'       => 3,
    'dispatch.backoff_base'       => '200ms',
    'dispatch.backoff_max'        => '1s',
    'dispatch.scheduler_interval' => '100ms',
    'events.url'                  => $rcv->url . '/hook',
    'events.secret'               => $SECRET,
    'events.timeout'              => '2s',
);
my $master = $s->start_daemon(config => $s->write_config(%CONFIG));

my $seq = 0;
sub post_call {
    my (%extra) = @_;
    my $phone = $extra{to} // $s->next_phone;
    my ($st, $body) = $s->api_retry('POST', '/api/v1/calls',
        { to => $phone, scriptId => 't90', %extra },
        { 'Idempotency-Key' => "t90-$$-" . ++$seq });
    die "POST /api/v1/calls: $st" unless $st == 201;
    return $body->{id};
}

# N calls whose events go to the receiver's PATH (events_url set with SQL
# while dispatch is paused, so that no state change comes before it).
sub calls_to {
    my ($n, $path) = @_;
    my $ctl = CallorchTest::builddir() . '/src/callorchctl';
    my $cfg = $s->config_path;
    system("'$ctl' -c '$cfg' pause >/dev/null") == 0 or die 'callorchctl pause failed';
    my @ids = map { post_call() } 1 .. $n;
    $s->psql("UPDATE calls SET events_url = '" . $rcv->url . "$path' WHERE id IN ("
        . join(',', map {"'$_'"} @ids) . ")") if defined $path;
    system("'$ctl' -c '$cfg' resume >/dev/null") == 0 or die 'callorchctl resume failed';
    return @ids;
}

# Force the simulator's outcome for a number.
sub force_outcome {
    my ($phone, $status) = @_;
    my $r = HTTP::Tiny->new->request('PUT', $s->sim_url . "/control/outcomes/$phone",
        { content => encode_json({ status => $status }), headers => { 'Content-Type' => 'application/json' } });
    die "sim outcome: $r->{status}" unless $r->{status} =~ /^20[014]$/;
}

sub sql_list { my @r = split /\n/, $s->psql_retry($_[0]); return @r }

sub outbox_of {
    my ($id) = @_;
    return map { my ($q, $t, $st) = split /\|/; { seq => $q, type => $t, state => $st } }
        sql_list("SELECT seq, type, state FROM call_events WHERE call_id = '$id' ORDER BY seq");
}

sub wait_terminal {
    my ($ids, $timeout) = @_;
    my $list = join ',', map {"'$_'"} @$ids;
    return $s->wait_for(sub {
        $s->psql_retry("SELECT count(*) FROM calls WHERE id IN ($list)"
            . " AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')") == 0
    }, timeout => $timeout // 60, soft => 1);
}

sub wait_delivered {
    my ($ids, $timeout) = @_;
    my $list = join ',', map {"'$_'"} @$ids;
    return $s->wait_for(sub {
        $s->psql_retry("SELECT count(*) FROM call_events WHERE call_id IN ($list) AND state <> 'delivered'") == 0
    }, timeout => $timeout // 60, soft => 1);
}

# The receiver's requests for /PATH…, with the event decoded and the
# signature checked.
sub received {
    my ($prefix) = @_;
    my @out;
    for my $h ($rcv->hooks) {
        next unless index($h->{path}, $prefix) == 0;
        my $hd = $h->{headers};
        my $expect = hmac_sha256_base64("$hd->{'webhook-id'}.$hd->{'webhook-timestamp'}.$h->{body}", $KEY);
        $expect .= '=' x ((4 - length($expect) % 4) % 4);
        my @sigs = split / /, $hd->{'webhook-signature'} // '';
        push @out, { %$h, seq => ($hd->{'webhook-id'} // '') =~ /^evt_(\d+)$/ ? $1 : -1,
            sig_ok => (grep { $_ eq "v1,$expect" } @sigs) ? 1 : 0, event => $h->{json} };
    }
    return @out;
}

# Per call: first deliveries in increasing seq order; returns a failure text or ''.
sub order_problems {
    my (@hooks) = @_;
    my (%last, %seen, @bad);
    for my $h (@hooks) {
        my $id = $h->{event}{data}{id} // next;
        next if $seen{ $h->{seq} }++;    # a redelivery (at-least-once)
        push @bad, "call $id: seq $h->{seq} after $last{$id}" if defined $last{$id} && $h->{seq} < $last{$id};
        $last{$id} = $h->{seq};
    }
    return join '; ', @bad;
}

# ============================================ 1. the basic flow, signed ===
my $fail_phone = $s->next_phone;
force_outcome($fail_phone, 'FAILED');
my @ok_ids = map { post_call() } 1 .. 10;
my $failed_id = post_call(to => $fail_phone);
my @ids = (@ok_ids, $failed_id);
ok(wait_terminal(\@ids), 'basic: every call reached a final status');
ok(wait_delivered(\@ids, 30), 'basic: every outbox row delivered');

is($s->psql("SELECT status FROM calls WHERE id = '$failed_id'"), 'FAILED', 'basic: the forced call FAILED');
for my $id (@ok_ids) {
    my @types = map { $_->{type} } outbox_of($id);
    is("@types", 'call.started call.completed', "basic: $id: one row per state change") or last;
}
my @ft = map { $_->{type} } outbox_of($failed_id);
is("@ft", 'call.started call.attempt_failed call.started call.attempt_failed call.started call.failed',
    'basic: the failed call: started / attempt_failed per attempt, then failed');

my @hooks = received('/hook');
my %by_seq;
$by_seq{ $_->{seq} } //= $_ for @hooks;
my @rows = sql_list("SELECT seq FROM call_events WHERE call_id IN (" . join(',', map {"'$_'"} @ids) . ")");
is(scalar(grep { !$by_seq{$_} } @rows), 0, 'basic: every outbox row arrived at the receiver');
is(scalar(grep { !$_->{sig_ok} } @hooks), 0, 'basic: every signature verifies (HMAC-SHA256, [events] secret)');
is(scalar(grep { ($_->{headers}{'content-type'} // '') ne 'application/json' } @hooks), 0,
    'basic: Content-Type application/json');
is(scalar(grep { abs(($_->{headers}{'webhook-timestamp'} // 0) - $_->{t}) > 5 } @hooks), 0,
    'basic: webhook-timestamp is the send time');
my ($one) = grep { $_->{event}{type} eq 'call.completed' } @hooks;
ok($one && $one->{event}{data}{status} eq 'COMPLETED' && $one->{event}{timestamp} =~ /^\d{4}-\d\d-\d\dT/,
    'basic: body {"type","data":<call>,"timestamp"}');
is(order_problems(@hooks), '', 'basic: in order per call');

# ================================= 2. 5xx, then success: retried with backoff
{
    my ($id) = calls_to(1, '/fail/2');
    ok(wait_terminal([$id]), 'retry: the call finished');
    ok(wait_delivered([$id], 30), 'retry: its events were delivered in the end');
    my @h = received('/fail/2');
    is(scalar(@h), 4, 'retry: 2 tries answered 503, then 2 events delivered');
    is(order_problems(@h), '', 'retry: in order');
    my ($st, $ev) = $s->api('GET', "/api/v1/calls/$id/events");
    is($st, 200, 'GET events: 200');
    is(ref $ev, 'ARRAY', 'GET events: an array');
    is(join(' ', map { "$_->{type}:$_->{state}" } @$ev), 'call.started:delivered call.completed:delivered',
        'GET events: types and states in seq order');
    is($ev->[0]{attempts}, 3, 'GET events: the first event took 3 tries');
    is($ev->[0]{lastStatus}, 200, 'GET events: lastStatus 200');
    ok($ev->[0]{deliveredAt} && $ev->[0]{createdAt}, 'GET events: createdAt and deliveredAt');
    ok($ev->[0]{seq} < $ev->[1]{seq}, 'GET events: seq order');
    my @gap = map { $_->{t} } @h[0 .. 2];
    cmp_ok($gap[2] - $gap[1], '>=', 1.5, 'retry: backoff doubles (1 s, then 2 s)');

    # a receiver that answers 500 every time: tried again and again, pending
    my ($bad) = calls_to(1, '/status/500');
    ok($s->wait_for(sub { $s->psql("SELECT COALESCE(max(attempts), 0) FROM call_events WHERE call_id = '$bad'") >= 2 },
        timeout => 20, soft => 1), '500: the event is tried again');
    my (undef, $bev) = $s->api('GET', "/api/v1/calls/$bad/events");
    is(ref $bev eq 'ARRAY' && $bev->[0]{state}, 'pending', '500: still pending (until max_age)');
    is(ref $bev eq 'ARRAY' && $bev->[0]{lastStatus}, 500, '500: lastStatus 500');
    $s->psql("UPDATE call_events SET state = 'failed' WHERE call_id = '$bad'");
}

# ======================= 3. GET /api/v1/calls/{id}/events: errors, auth ===
{
    my ($st) = $s->api('GET', '/api/v1/calls/00000000-0000-4000-8000-000000000000/events');
    is($st, 404, 'GET events: unknown call 404');
    ($st) = $s->api('GET', '/api/v1/calls/not-a-uuid/events');
    is($st, 404, 'GET events: malformed id 404');
    ($st) = $s->api('GET', "/api/v1/calls/$ok_ids[0]/events", undef, { Authorization => undef });
    is($st, 401, 'GET events: without the API key 401');
    ($st) = $s->api('POST', "/api/v1/calls/$ok_ids[0]/events", {});
    is($st, 405, 'GET events: POST 405');
}

# ====== 4. a receiver that never answers does not delay other calls' events
{
    my @dead = calls_to(3, '/hang');
    my $good = post_call();
    ok(wait_terminal([ @dead, $good ]), 'hang: the calls finished');
    ok(wait_delivered([$good], 10), "hang: the good call's events were delivered");
    my $lag = $s->psql("SELECT max(extract(epoch FROM delivered_at - created_at)) FROM call_events WHERE call_id = '$good'");
    cmp_ok($lag, '<', 1.5, "hang: each of them within 1.5 s of its state change (events timeout is 2 s)");
    my @stuck = sql_list("SELECT state || ':' || COALESCE(last_error, '') FROM call_events WHERE call_id = '$dead[0]' ORDER BY seq");
    like($stuck[0] // '', qr/^pending:/, 'hang: the dead URL\'s first event is still pending');
    is(scalar(@stuck), 2, 'hang: its second event exists (and waits behind the first)');
    $s->wait_for(sub { ($s->psql("SELECT COALESCE(last_error, '') FROM call_events WHERE call_id = '$dead[0]' ORDER BY seq LIMIT 1")) =~ /time/i },
        timeout => 10, soft => 1);
    like($s->psql("SELECT COALESCE(last_error, '') FROM call_events WHERE call_id = '$dead[0]' ORDER BY seq LIMIT 1"),
        qr/time/i, 'hang: the try ended with a timeout');
    is(scalar(grep { index($_->{path}, '/hang') == 0 && $_->{event}{type} eq 'call.completed' } received('/hang')), 0,
        'hang: no later event of a hanging call was sent');
    # let the dead events go away so later checks only see their own
    $s->psql("UPDATE call_events SET state = 'failed' WHERE call_id IN (" . join(',', map {"'$_'"} @dead) . ")");
}

# ============================================================= 5. metrics
{
    my $r = HTTP::Tiny->new->get($s->base_url . '/metrics');
    my ($d) = $r->{content} =~ /^callorch_events_delivered_total (\d+)$/m;
    ok(defined $d && $d >= 20, "metrics: callorch_events_delivered_total ($d)");
    like($r->{content}, qr/^callorch_events_failed_total \d+$/m, 'metrics: callorch_events_failed_total');
    $s->wait_for(sub { HTTP::Tiny->new->get($s->base_url . '/metrics')->{content} =~ /^callorch_events_pending 0$/m },
        timeout => 10, soft => 1);
    like(HTTP::Tiny->new->get($s->base_url . '/metrics')->{content}, qr/^callorch_events_pending 0$/m,
        'metrics: callorch_events_pending gauge');
}

# =========== 6. no URL anywhere: no outbox row (the events_settings switch)
{
    $s->psql("UPDATE events_settings SET default_url_set = false");
    my $id = post_call();
    ok(wait_terminal([$id]), 'no url: the call finished');
    is($s->psql("SELECT count(*) FROM call_events WHERE call_id = '$id'"), 0, 'no url: no outbox row');
    $s->psql("UPDATE events_settings SET default_url_set = true");
}

# ==================== 6b. past [events] max_age: failed, and counted as such
{
    my ($id) = calls_to(1, '/status/500');
    ok(wait_terminal([$id]), 'max_age: the call finished');
    $s->wait_for(sub { $s->psql("SELECT count(*) FROM call_events WHERE call_id = '$id' AND attempts >= 1") > 0 },
        timeout => 10, soft => 1);
    $s->psql("UPDATE call_events SET created_at = now() - interval '25 hours' WHERE call_id = '$id'");
    ok($s->wait_for(sub { $s->psql("SELECT count(*) FROM call_events WHERE call_id = '$id' AND state <> 'failed'") == 0 },
        timeout => 20, soft => 1), 'max_age: both events failed after their next try');
    my ($st, $ev) = $s->api('GET', "/api/v1/calls/$id/events");
    is(join(' ', map { "$_->{state}:" . ($_->{lastStatus} // '') . ':' . ($_->{lastError} // '') } @$ev),
        'failed:500:HTTP 500 failed:500:HTTP 500', 'max_age: GET events shows failed, lastStatus, lastError');
    my ($f) = HTTP::Tiny->new->get($s->base_url . '/metrics')->{content} =~ /^callorch_events_failed_total (\d+)$/m;
    cmp_ok($f // 0, '>=', 2, 'max_age: callorch_events_failed_total counts them');
}

# ======== 7. chaos: kill the events child, restart PostgreSQL, calls flow
{
    my @chaos;
    my $kill_events = sub {
        my ($kid) = grep { $_->{title} eq 'callorchd: events' } $s->children_of($master);
        return 0 unless $kid;
        kill 'KILL', $kid->{pid};
        $s->wait_for(sub { grep { $_->{title} eq 'callorchd: events' && $_->{pid} != $kid->{pid} } $s->children_of($master) },
            timeout => 30, soft => 1);
        return 1;
    };
    my @phones = map { $s->next_phone } 1 .. 10;
    force_outcome($phones[$_], 'FAILED') for 0 .. 2;
    my $kills = 0;
    for my $round (1 .. 4) {
        push @chaos, post_call(to => $phones[ ($round * 7 + $_) % @phones ]) for 1 .. 8;
        sleep 0.3;
        $kills += $kill_events->();
        $s->restart_postgres if $round == 2;
        sleep 0.5;
    }
    is($kills, 4, 'chaos: the events child was killed 4 times (and respawned)');
    ok(wait_terminal(\@chaos, 120), 'chaos: every call reached a final status');
    ok(wait_delivered(\@chaos, 120), 'chaos: every outbox row delivered');
    my $list = join ',', map {"'$_'"} @chaos;
    # one row per state change: one call.started per attempt, one final event
    my $bad = $s->psql_retry("SELECT count(*) FROM calls c WHERE c.id IN ($list) AND ("
        . " (SELECT count(*) FROM call_events e WHERE e.call_id = c.id AND e.type = 'call.started')"
        . "   <> (SELECT count(*) FROM call_attempts a WHERE a.call_id = c.id)"
        . " OR (SELECT count(*) FROM call_events e WHERE e.call_id = c.id"
        . "     AND e.type IN ('call.completed', 'call.failed')) <> 1)");
    is($bad, 0, 'chaos: exactly one outbox row per state change');
    my @h = grep { my $id = $_->{event}{data}{id} // ''; grep { $_ eq $id } @chaos } received('/hook');
    my %got = map { $_->{seq} => 1 } @h;
    my @missing = grep { !$got{$_} } sql_list("SELECT seq FROM call_events WHERE call_id IN ($list)");
    is(scalar(@missing), 0, 'chaos: every event arrived at the receiver');
    is(order_problems(@h), '', 'chaos: first deliveries in seq order per call');
    is(scalar(grep { !$_->{sig_ok} } @h), 0, 'chaos: every signature verifies');
    diag(sprintf 'chaos figures: calls=%d events=%d deliveries=%d (duplicates %d) kills=%d',
        scalar @chaos, scalar keys %got, scalar @h, @h - keys %got, $kills);
}

# ===== 9. two daemons share the outbox: each event once, in order per call
{
    # Daemon B: same database and receiver, its own port, files and no
    # Kafka consumers (only its events child matters here), as in t/71.
    my $sb = CallorchTest->new;
    my $bdir = $sb->tmpdir;
    my $master_b;
    for my $try (1 .. 3) {
        my $bport = CallorchTest::free_port();
        my $text = $s->config_text(%CONFIG,
            'kafka.consumers'       => 0,
            'http.listen'           => "127.0.0.1:$bport",
            'http.public_base_url'  => "http://127.0.0.1:$bport",
            'daemon.pid_file'       => "$bdir/callorchd.pid",
            'daemon.control_socket' => "$bdir/control.sock",
            'daemon.log_target'     => "$bdir/callorchd.log");
        open my $fh, '>', "$bdir/callorch.ini" or die $!;
        print $fh $text;
        close $fh;
        last if $master_b = eval { $sb->start_daemon(config => "$bdir/callorch.ini") };
        die $@ if $try == 3;
    }
    my ($calls, $per) = (500, 4);
    my $url = $rcv->url . '/two';
    # finished calls inserted as such (an INSERT writes no event), then
    # their events, not due until the UPDATE
    $s->psql(<<"SQL");
WITH c AS (
    INSERT INTO calls (to_number, script_id, status, max_attempts)
    SELECT '+1555' || lpad(g::text, 7, '0'), 't90-two', 'COMPLETED', 3 FROM generate_series(1, $calls) g
    RETURNING id)
INSERT INTO call_events (call_id, type, payload, url, next_try_at)
SELECT c.id, 'call.started', json_build_object('type', 'call.started', 'data', json_build_object('id', c.id, 'i', i),
       'timestamp', callorch_ts(now())), '$url', now() + interval '1 hour'
  FROM c, generate_series(1, $per) i
 ORDER BY c.id, i;
UPDATE call_events SET next_try_at = now() WHERE url = '$url';
SQL
    ok($s->wait_for(sub { $s->psql("SELECT count(*) FROM call_events WHERE url = '$url' AND state <> 'delivered'") == 0 },
        timeout => 60, soft => 1), 'two daemons: every event delivered');
    my @h = received('/two');
    my %n;
    $n{ $_->{seq} }++ for @h;
    is(scalar(keys %n), $calls * $per, 'two daemons: every event arrived');
    # At least once: an event tried again (its try timed out while the
    # receiver was slow under load) may arrive twice; one sent once by
    # either daemon (attempts = 1) must have arrived once.
    my %tries = map { split /\|/ } split /\n/,
        $s->psql("SELECT seq, attempts FROM call_events WHERE url = '$url'");
    my @twice = grep { $n{$_} > 1 } keys %n;
    is(scalar(grep { $tries{$_} == 1 } @twice), 0,
        'two daemons: no event tried once arrived twice (never sent by both)')
        or diag("arrived twice: @twice");
    diag(sprintf 'two daemons: %d events arrived twice after a retry', scalar @twice);
    is(order_problems(@h), '', 'two daemons: in seq order per call');
    my %by = (A => $s, B => $sb);
    for my $name (sort keys %by) {
        my ($d) = HTTP::Tiny->new->get($by{$name}->base_url . '/metrics')->{content}
            =~ /^callorch_events_delivered_total (\d+)$/m;
        diag("two daemons: daemon $name delivered " . ($d // '?'));
    }
    $sb->stop_daemon;
    $s->psql("DELETE FROM calls WHERE script_id = 't90-two'");
    is($s->psql("SELECT count(*) FROM call_events WHERE url = '$url'"), 0,
        'retention: deleting calls deletes their events (foreign key, cascade)');
}

# ============= 8. no secret: an event with its own URL is never sent unsigned
{
    $s->write_config('http.api_keys' => $CLIENT, 'events.url' => '', 'events.secret' => '',
        'dispatch.scheduler_interval' => '100ms');
    my $from = length $s->log_text;
    kill 'HUP', $master;
    ok($s->wait_for(sub { substr($s->log_text, $from) =~ /outbox switch set" default_url_set=false/ },
        timeout => 30, soft => 1), 'no secret: reloaded, the new events child cleared the switch');
    my ($id) = calls_to(1, '/unsigned');
    ok(wait_terminal([$id]), 'no secret: the call finished');
    $s->wait_for(sub { $s->psql("SELECT count(*) FROM call_events WHERE call_id = '$id' AND attempts >= 1") > 0 },
        timeout => 10, soft => 1);
    like($s->psql("SELECT state || ':' || COALESCE(last_error, '') FROM call_events WHERE call_id = '$id' ORDER BY seq LIMIT 1"),
        qr/^pending:not sent: \[events\] secret is not set/, 'no secret: the event stays pending, lastError says why');
    is(scalar(received('/unsigned')), 0, 'no secret: nothing was sent');
    like(substr($s->log_text, $from), qr/events are never sent unsigned/, 'no secret: logged');
}

done_testing;
