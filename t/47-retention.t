#!/usr/bin/perl
# [retention] (DESIGN.md section 6): the scheduler deletes processed webhook
# ids older than webhook_events, idempotency keys older than
# idempotency_keys and, when finished_calls is set, calls that ended longer
# ago (with their attempts and idempotency keys), in batches (1000 rows per
# statement) spread over ticks; recent rows and calls not finished stay;
# finished_calls = 0 keeps every call.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new;
$s->start_all;
$s->migrate;

sub q1 { return $s->psql($_[0]) }

# N finished calls of TAG that ended AGE ago, each with one attempt and an
# idempotency key; and K calls not finished (PENDING, due in a year), as old.
sub seed {
    my ($tag, $n, $age) = @_;
    q1("INSERT INTO calls (to_number, script_id, status, attempts, max_attempts, created_at,"
        . " ended_at) SELECT '+1555' || lpad(g::text, 7, '0'), '$tag-' || g,"
        . " (ARRAY['COMPLETED','FAILED','CANCELLED'])[1 + g % 3], 1, 3,"
        . " now() - interval '$age' - interval '1 h', now() - interval '$age'"
        . " FROM generate_series(1, $n) g");
    q1("INSERT INTO call_attempts (call_id, attempt, started_at, ended_at, outcome)"
        . " SELECT id, 1, created_at, ended_at, 'COMPLETED' FROM calls WHERE script_id LIKE '$tag-%'");
    q1("INSERT INTO idempotency_keys (key, request_hash, call_id, created_at)"
        . " SELECT 'k-' || script_id, decode(repeat('00', 32), 'hex'), id, now()"
        . " FROM calls WHERE script_id LIKE '$tag-%'");
}

sub count_calls { return q1("SELECT count(*) FROM calls WHERE script_id LIKE '$_[0]-%'") }

# ------------------------------------------------------------------ seed ---
seed('old', 2500, '10 days');       # past finished_calls = 5d
seed('recent', 20, '1 day');        # within it
q1("INSERT INTO calls (to_number, script_id, max_attempts, created_at, next_attempt_at)"
    . " SELECT '+1556' || lpad(g::text, 7, '0'), 'pending-' || g, 3, now() - interval '30 days',"
    . " now() + interval '365 days' FROM generate_series(1, 5) g");
my $keep_call = q1("SELECT id FROM calls WHERE script_id = 'pending-1'");
q1("INSERT INTO webhook_events (id, call_id, received_at) SELECT 'old-' || g, NULL,"
    . " now() - interval '8 days' FROM generate_series(1, 2500) g");
q1("INSERT INTO webhook_events (id, call_id, received_at) SELECT 'new-' || g, NULL,"
    . " now() - interval '6 days' FROM generate_series(1, 10) g");
q1("INSERT INTO idempotency_keys (key, request_hash, call_id, created_at) SELECT 'oldkey-' || g,"
    . " decode(repeat('00', 32), 'hex'), '$keep_call', now() - interval '25 hours'"
    . " FROM generate_series(1, 1500) g");
q1("INSERT INTO idempotency_keys (key, request_hash, call_id, created_at) SELECT 'newkey-' || g,"
    . " decode(repeat('00', 32), 'hex'), '$keep_call', now() - interval '23 hours'"
    . " FROM generate_series(1, 10) g");

# ---------------------------------------------------------- prune, in batches
$s->start_sim;
$s->write_config(
    'dispatch.scheduler_interval' => '100ms',
    'dispatch.reconcile_interval' => '200ms',
    'retention.webhook_events'    => '7d',
    'retention.idempotency_keys'  => '24h',
    'retention.finished_calls'    => '5d');
$s->start_daemon;
my $t = time;
my $done = $s->wait_for(sub {
    count_calls('old') == 0
        && q1("SELECT count(*) FROM webhook_events WHERE id LIKE 'old-%'") == 0
        && q1("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'oldkey-%'") == 0
}, timeout => 60, interval => 0.2, soft => 1);
ok($done, sprintf('old webhook ids, idempotency keys and finished calls pruned (%.1fs)', time - $t))
    or diag(q1("SELECT (SELECT count(*) FROM calls WHERE script_id LIKE 'old-%'),"
        . " (SELECT count(*) FROM webhook_events WHERE id LIKE 'old-%'),"
        . " (SELECT count(*) FROM idempotency_keys WHERE key LIKE 'oldkey-%')"));
is(q1("SELECT count(*) FROM call_attempts a WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE c.id = a.call_id)"),
    0, 'no attempt left without its call');
is(q1("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'k-old-%'"), 0,
    "the pruned calls' idempotency keys went with them");
is(count_calls('recent'), 20, 'calls finished within finished_calls are kept');
is(q1("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'k-recent-%'"), 20,
    'and their (recent) idempotency keys');
is(count_calls('pending'), 5, 'old calls that did not finish are kept');
is(q1("SELECT count(*) FROM webhook_events WHERE id LIKE 'new-%'"), 10, 'recent webhook ids are kept');
is(q1("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'newkey-%'"), 10, 'recent idempotency keys are kept');
my $log = $s->log_text;
my @batches = $log =~ /msg="retention: old rows deleted" table=finished_calls count=(\d+)/g;
ok(@batches >= 3 && !grep({ $_ > 1000 } @batches),
    'finished calls deleted in batches of at most 1000 (' . join(',', @batches) . ')');
my @wh = $log =~ /msg="retention: old rows deleted" table=webhook_events count=(\d+)/g;
ok(@wh >= 3 && !grep({ $_ > 1000 } @wh), 'webhook ids in batches too (' . join(',', @wh) . ')');
$s->stop_daemon;

# --------------------------------------------- finished_calls = 0 keeps all
seed('kept', 50, '400 days');
q1("INSERT INTO webhook_events (id, call_id, received_at) VALUES ('probe', NULL, now() - interval '30 days')");
$s->write_config(
    'dispatch.scheduler_interval' => '100ms',
    'dispatch.reconcile_interval' => '200ms');   # [retention] defaults: finished_calls = 0
$s->start_daemon;
ok($s->wait_for(sub { q1("SELECT count(*) FROM webhook_events WHERE id = 'probe'") == 0 },
        timeout => 30, interval => 0.2, soft => 1),
    'with the defaults the retention runs (an old webhook id went)');
# another round after that one (the probe's batch was the first)
q1("INSERT INTO webhook_events (id, call_id, received_at) VALUES ('probe2', NULL, now() - interval '30 days')");
ok($s->wait_for(sub { q1("SELECT count(*) FROM webhook_events WHERE id = 'probe2'") == 0 },
        timeout => 30, interval => 0.2, soft => 1), 'and again');
is(count_calls('kept'), 50, 'finished_calls = 0: calls that ended 400 days ago are kept');
is(count_calls('recent'), 20, 'and the others too');
$s->stop_daemon;
done_testing();
