#!/usr/bin/perl
# Campaigns (DESIGN.md section 10) on the real stack: create with valid and
# invalid items (rejected by index, the do-not-call list among them),
# campaign defaults on the items, the limits (10 000 calls: 413 naming
# "calls"; unknown fields; eventsUrl not http(s)), Idempotency-Key, the
# counts as the simulator settles the calls, FINISHED when all are done
# (and no calls added after), pause/resume/cancel and their 409s, the list
# and a campaign's calls with keyset cursors, the calls' campaignId and
# priority, a 10 000-call campaign (timed: diag only; bench/campaign has
# the target), and callorchctl campaigns / pause ID / resume ID.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use JSON::PP;
use CallorchTest;

CallorchTest::require_stack();
my $KEY = 'campaign-test-key-0123456789';
my $s = CallorchTest->new;
$s->start_all;
$s->migrate;
$s->start_sim('--delay', '20ms-60ms', '--success-rate', '1', '--seed', '7');
$s->write_config(
    'http.api_keys'                 => $KEY,
    'dispatch.max_concurrent_calls' => 10,
    'dispatch.max_attempts'         => 2,
    'dispatch.scheduler_interval'   => '100ms',
    'compliance.calling_hours'      => '',
);
$s->start_daemon;

sub problem_ok { CallorchTest::problem_ok(@_) }
my $TS_RE = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
my $n = 0;
sub phone { return sprintf '+1555%07d', 3000000 + ++$n }

# ------------------------------------------------------------- create ---

$s->api(PUT => '/api/v1/dnc/+15559990001', {});
my @items = (
    { to => phone(), metadata => { row => 0 } },
    { to => 'nope' },                                     # 1: bad number
    { to => phone(), priority => 9, scriptId => 'own-flow' },
    { to => '+15559990001' },                             # 3: listed
    { to => phone(), bogus => 1 },                        # 4: unknown field
    { to => phone(), priority => 12 },                    # 5: bad priority
    { to => phone(), eventsUrl => 'ftp://x' },            # 6: bad eventsUrl
);
my ($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', {
    name => 'fall', scriptId => 'welcome-flow', calls => \@items, maxConcurrent => 3,
    callsPerSecond => 2.5, priority => 7, retry => { busy => '5m', no_answer => 'never' },
    maxAttempts => 4, eventsUrl => 'https://hooks.example/cb', metadata => { team => 'a' },
});
is($st, 201, 'POST /api/v1/campaigns: 201') or diag explain $b;
my $cid = $b->{id};
like($h->{location} // '', qr{^/api/v1/campaigns/\Q$cid\E$}, 'Location names the campaign');
is($b->{status}, 'RUNNING', 'RUNNING');
is($b->{name}, 'fall', 'name');
is($b->{scriptId}, 'welcome-flow', 'scriptId');
is($b->{maxConcurrent}, 3, 'maxConcurrent echoed');
is($b->{callsPerSecond}, 2.5, 'callsPerSecond echoed');
is($b->{priority}, 7, 'priority echoed');
is_deeply($b->{retry}, { busy => '5m', no_answer => 'never' }, 'retry echoed');
is($b->{maxAttempts}, 4, 'maxAttempts echoed');
is($b->{eventsUrl}, 'https://hooks.example/cb', 'eventsUrl echoed');
is_deeply($b->{metadata}, { team => 'a' }, 'metadata echoed');
like($b->{createdAt}, $TS_RE, 'createdAt');
is($b->{finishedAt}, undef, 'finishedAt null');
is($b->{counts}{PENDING}, 2, 'counts: the 2 valid calls PENDING');
is_deeply([ sort keys %{ $b->{counts} } ],
    [ sort qw(PENDING IN_PROGRESS COMPLETED FAILED CANCELLED SUPPRESSED EXPIRED) ], 'counts by every status');
is_deeply([ map { $_->{index} } @{ $b->{rejected} } ], [ 1, 3, 4, 5, 6 ], 'rejected by index, in order');
my %rej = map { $_->{index} => [ map { $_->{field} } @{ $_->{errors} } ] } @{ $b->{rejected} };
is_deeply($rej{1}, ['to'], 'bad number: field to');
is_deeply($rej{3}, ['to'], 'listed number: field to');
is_deeply($rej{4}, ['bogus'], 'unknown item field named');
is_deeply($rej{5}, ['priority'], 'bad priority named');
is_deeply($rej{6}, ['eventsUrl'], 'item eventsUrl not http(s) named');

my $calls = $s->psql("SELECT to_number, script_id, priority, max_attempts "
    . "FROM calls WHERE campaign_id = '$cid' ORDER BY priority");
is($calls, join("\n", "$items[0]{to}|welcome-flow|7|4", "$items[2]{to}|own-flow|9|4"),
    'items take the campaign defaults (scriptId, priority, maxAttempts) unless they set them');

# the call resource
my $one = $s->psql("SELECT id FROM calls WHERE campaign_id = '$cid' AND priority = 9");
($st, $b) = $s->api(GET => "/api/v1/calls/$one");
is($b->{campaignId}, $cid, 'a call carries campaignId');
is($b->{priority}, 9, '... and priority');

# --------------------------------------------------------- validation ---

($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', { name => 'x', scriptId => 's', calls => [], colour => 1 });
problem_ok($st, $b, $h, 400, 'unknown campaign field', fields => ['colour']);
($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', { scriptId => 's' });
problem_ok($st, $b, $h, 400, 'name required', fields => ['name']);
($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', { name => 'x', scriptId => 's', eventsUrl => 'file:///etc/passwd' });
problem_ok($st, $b, $h, 400, 'eventsUrl not http(s)', fields => ['eventsUrl']);
($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', { name => 'x', scriptId => 's', retry => { busy => '0s', sunny => '5m', voicemail => 'backoff' } });
problem_ok($st, $b, $h, 400, 'retry rules checked like [retry]', fields => [ 'retry', 'retry' ]);
($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', { name => 'x', scriptId => 's', priority => 10, maxConcurrent => 0, callsPerSecond => 0 });
problem_ok($st, $b, $h, 400, 'settings ranges', fields => [ 'priority', 'maxConcurrent', 'callsPerSecond' ]);
($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', { name => 'x', scriptId => 's', calls => [ map { { to => '+15550000000' } } 1 .. 10001 ] });
problem_ok($st, $b, $h, 413, 'more than 10 000 calls', fields => ['calls']);
($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', 'not json');
problem_ok($st, $b, $h, 400, 'malformed JSON', fields => ['body']);
($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', '{}', { 'Content-Type' => 'text/plain' });
problem_ok($st, $b, $h, 415, 'not JSON');
($st, $b, $h) = $s->api(GET => '/api/v1/campaigns/not-a-uuid');
problem_ok($st, $b, $h, 404, 'malformed campaign id');
($st, $b, $h) = $s->api(GET => '/api/v1/campaigns/00000000-0000-4000-8000-000000000000');
problem_ok($st, $b, $h, 404, 'unknown campaign');
($st, $b, $h) = $s->api(DELETE => "/api/v1/campaigns/$cid");
is($st, 405, 'DELETE a campaign: 405');
($st, $b, $h) = $s->api(GET => '/api/v1/campaigns', undef, { Authorization => undef });
is($st, 401, 'no key: 401');

# POST /api/v1/calls: priority and eventsUrl
($st, $b, $h) = $s->api(POST => '/api/v1/calls', { to => phone(), scriptId => 's', priority => 2, eventsUrl => 'http://e.example/x' });
is($st, 201, 'single call with priority and eventsUrl: 201') or diag explain $b;
is($b->{priority}, 2, 'priority 2');
is($b->{campaignId}, undef, 'campaignId null for a single call');
is($s->psql("SELECT events_url FROM calls WHERE id = '$b->{id}'"), 'http://e.example/x', 'events_url stored');
($st, $b, $h) = $s->api(POST => '/api/v1/calls', { to => phone(), scriptId => 's', eventsUrl => 'javascript:alert(1)' });
problem_ok($st, $b, $h, 400, 'single call eventsUrl not http(s)', fields => ['eventsUrl']);

# ------------------------------------------------------- idempotency ---

my $body = { name => 'idem', scriptId => 's', calls => [ { to => phone() }, { to => 'bad' } ] };
($st, $b) = $s->api(POST => '/api/v1/campaigns', $body, { 'Idempotency-Key' => 'camp-1' });
is($st, 201, 'with a key: 201');
my $first = $b;
($st, $b) = $s->api(POST => '/api/v1/campaigns', $body, { 'Idempotency-Key' => 'camp-1' });
is($st, 200, 'same key and body: 200');
is($b->{id}, $first->{id}, '... the same campaign');
is_deeply($b->{rejected}, $first->{rejected}, '... with the same rejected list');
is($s->psql("SELECT count(*) FROM calls WHERE campaign_id = '$first->{id}'"), 1, 'no call created twice');
($st, $b, $h) = $s->api(POST => '/api/v1/campaigns', { %$body, name => 'other' }, { 'Idempotency-Key' => 'camp-1' });
problem_ok($st, $b, $h, 422, 'same key, other body', fields => ['Idempotency-Key']);

# --------------------------------------------- counts, FINISHED, add ---

my $done = $s->wait_for(sub {
    my (undef, $c) = $s->api(GET => "/api/v1/campaigns/$cid");
    $c->{status} eq 'FINISHED' ? $c : undef;
}, timeout => 60, interval => 0.3, what => 'campaign FINISHED', soft => 1);
ok($done, 'the campaign FINISHED once its calls were done');
# campaign.finished goes to the outbox with the change (sql/019); with no
# [events] secret in this config nothing is sent, so the row stays to see
is($s->psql("SELECT count(*) || '|' || min(url) || '|' || min(payload->'data'->>'status') || '|'"
        . " || bool_and(call_id IS NULL) FROM call_events"
        . " WHERE campaign_id = '$cid' AND type = 'campaign.finished'"),
    '1|https://hooks.example/cb|FINISHED|true',
    'campaign.finished: one outbox row, to the campaign\'s eventsUrl, the FINISHED campaign, no call');
is($s->psql("SELECT count(DISTINCT call_id) FROM call_events WHERE campaign_id = '$cid'"
        . " AND type = 'call.completed' AND url = 'https://hooks.example/cb'"),
    2, 'its calls\' events go to the campaign\'s eventsUrl');
($st, $b) = $s->api(GET => "/api/v1/campaigns/$cid");
is($b->{counts}{COMPLETED}, 2, 'counts: 2 COMPLETED');
is($b->{counts}{PENDING} + $b->{counts}{IN_PROGRESS}, 0, 'nothing pending or in progress');
like($b->{finishedAt} // '', $TS_RE, 'finishedAt set');
($st, $b, $h) = $s->api(POST => "/api/v1/campaigns/$cid/calls", { calls => [ { to => phone() } ] });
problem_ok($st, $b, $h, 409, 'adding calls to a FINISHED campaign');
for my $a (qw(pause resume cancel)) {
    ($st, $b, $h) = $s->api(POST => "/api/v1/campaigns/$cid/$a");
    problem_ok($st, $b, $h, 409, "$a a FINISHED campaign");
}

# many calls of one campaign settling at once: the counts stay exact and
# the campaign finishes once, with no deadlock between the settles
($st, $b) = $s->api(POST => '/api/v1/campaigns', { name => 'crowd', scriptId => 's',
    calls => [ map { { to => phone() } } 1 .. 200 ] });
my $crowd = $b->{id};
my $fin = $s->wait_for(sub {
    my (undef, $c) = $s->api(GET => "/api/v1/campaigns/$crowd");
    $c->{status} eq 'FINISHED' ? $c : undef;
}, timeout => 120, interval => 0.3, what => '200-call campaign FINISHED', soft => 1);
ok($fin, '200 calls settled concurrently: FINISHED');
my %real = map { split /\|/ } split /\n/,
    $s->psql("SELECT status, count(*) FROM calls WHERE campaign_id = '$crowd' GROUP BY status");
is_deeply({ map { $_ => $fin->{counts}{$_} } grep { $fin->{counts}{$_} } keys %{ $fin->{counts} || {} } },
    \%real, 'its counts are what count(*) says') if $fin;
unlike($s->log_text, qr/deadlock/, 'no deadlock logged');

# ------------------------------------------- pause, resume, cancel, add ---

my $later = CallorchTest::rfc3339(time + 3600);
($st, $b) = $s->api(POST => '/api/v1/campaigns', { name => 'held', scriptId => 's', notBefore => $later,
    calls => [ map { { to => phone() } } 1 .. 3 ] });
is($st, 201, 'a campaign held until later: 201');
my $held = $b->{id};
is($s->psql("SELECT count(*) FROM calls WHERE campaign_id = '$held' AND hold_reason = 'schedule'"), 3,
    'its calls are held by the campaign notBefore');
($st, $b) = $s->api(POST => "/api/v1/campaigns/$held/pause");
is($st, 200, 'pause: 200');
is($b->{status}, 'PAUSED', 'PAUSED');
($st, $b) = $s->api(POST => "/api/v1/campaigns/$held/pause");
is($b->{status}, 'PAUSED', 'pause again: still PAUSED');
($st, $b) = $s->api(POST => "/api/v1/campaigns/$held/calls", { calls => [ { to => phone() }, { to => 'x' }, {} ] });
is($st, 200, 'add calls to a PAUSED campaign: 200') or diag explain $b;
is($b->{created}, 1, '1 created');
is_deeply([ map { $_->{index} } @{ $b->{rejected} } ], [ 1, 2 ], '2 rejected by index');
($st, $b, $h) = $s->api(POST => "/api/v1/campaigns/$held/calls", { calls => [], extra => 1 });
problem_ok($st, $b, $h, 400, 'add: unknown field', fields => ['extra']);
($st, $b) = $s->api(POST => "/api/v1/campaigns/$held/resume");
is($b->{status}, 'RUNNING', 'resume: RUNNING');
($st, $b) = $s->api(POST => "/api/v1/campaigns/$held/cancel");
is($st, 200, 'cancel: 200');
is($b->{status}, 'CANCELLED', 'CANCELLED');
is($b->{counts}{CANCELLED}, 4, 'its 4 PENDING calls CANCELLED');
like($b->{finishedAt} // '', $TS_RE, 'finishedAt set on cancel');
($st, $b, $h) = $s->api(POST => "/api/v1/campaigns/$held/resume");
problem_ok($st, $b, $h, 409, 'resume a CANCELLED campaign');
($st, $b, $h) = $s->api(POST => "/api/v1/campaigns/$held/calls", { calls => [ { to => phone() } ] });
problem_ok($st, $b, $h, 409, 'add calls to a CANCELLED campaign');

# a PAUSED campaign whose calls all ended stays PAUSED; resume finishes it
($st, $b) = $s->api(POST => '/api/v1/campaigns', { name => 'paused-out', scriptId => 's',
    notBefore => $later, calls => [ { to => phone() } ] });
my $po = $b->{id};
$s->api(POST => "/api/v1/campaigns/$po/pause");
my $poc = $s->psql("SELECT id FROM calls WHERE campaign_id = '$po'");
($st) = $s->api(POST => "/api/v1/calls/$poc/cancel");
is($st, 200, 'its only call cancelled on its own');
($st, $b) = $s->api(GET => "/api/v1/campaigns/$po");
is($b->{status}, 'PAUSED', 'a PAUSED campaign with nothing left stays PAUSED');
($st, $b) = $s->api(POST => "/api/v1/campaigns/$po/resume");
is($b->{status}, 'FINISHED', 'resuming it: FINISHED');
like($b->{finishedAt} // '', $TS_RE, '... with finishedAt');

# ------------------------------------------------------------- lists ---

for my $i (1 .. 3) {
    $s->api(POST => '/api/v1/campaigns', { name => "list-$i", scriptId => 's', calls => [] });
}
my (@seen, $cursor);
for my $page (1 .. 10) {
    ($st, $b) = $s->api(GET => '/api/v1/campaigns?pageSize=2' . ($cursor ? "&cursor=$cursor" : ''));
    is($st, 200, "campaign list page $page: 200") or last;
    push @seen, map { $_->{name} } @{ $b->{data} };
    $cursor = $b->{nextCursor} or last;
}
my $total = $s->psql('SELECT count(*) FROM campaigns');
is(scalar @seen, $total, "keyset paging saw every campaign once ($total)");
is($seen[0], 'list-3', 'newest first');
($st, $b, $h) = $s->api(GET => '/api/v1/campaigns?status=RUNNING');
problem_ok($st, $b, $h, 400, 'campaign list takes no status', fields => ['status']);

($st, $b) = $s->api(GET => "/api/v1/campaigns/$held/calls?pageSize=3");
is($st, 200, 'a campaign\'s calls: 200');
is(scalar @{ $b->{data} }, 3, 'a page of 3');
is($b->{total}, 4, 'total 4');
ok($b->{nextCursor}, 'a next cursor');
($st, $b) = $s->api(GET => "/api/v1/campaigns/$held/calls?pageSize=3&cursor=$b->{nextCursor}");
is(scalar @{ $b->{data} }, 1, 'the last one on the next page');
is($b->{nextCursor}, undef, 'no cursor after');
($st, $b) = $s->api(GET => "/api/v1/campaigns/$cid/calls?status=COMPLETED");
is(scalar @{ $b->{data} }, 2, 'status filter');
ok(!(grep { $_->{campaignId} ne $cid } @{ $b->{data} }), 'only that campaign\'s calls');
($st, $b, $h) = $s->api(GET => '/api/v1/campaigns/00000000-0000-4000-8000-000000000000/calls');
problem_ok($st, $b, $h, 404, 'calls of an unknown campaign');

# PATCH priority
($st, $b) = $s->api(POST => '/api/v1/calls', { to => phone(), scriptId => 's', notBefore => $later });
my $pid = $b->{id};
($st, $b) = $s->api(PATCH => "/api/v1/calls/$pid", { priority => 8 });
is($st, 200, 'PATCH priority: 200');
is($b->{priority}, 8, '... priority 8');
($st, $b, $h) = $s->api(PATCH => "/api/v1/calls/$pid", { priority => 10 });
problem_ok($st, $b, $h, 400, 'PATCH priority out of range', fields => ['priority']);
($st, $b, $h) = $s->api(PATCH => "/api/v1/calls/$pid", { eventsUrl => 'http://x.example/' });
problem_ok($st, $b, $h, 400, 'PATCH eventsUrl: not a PATCH field', fields => ['eventsUrl']);

# ------------------------------------------------- 10 000-call campaign ---

my @big = map { { to => sprintf('+1666%07d', $_), metadata => { row => $_ } } } 1 .. 10000;
my $t0 = time;
($st, $b) = $s->api(POST => '/api/v1/campaigns', { name => 'big', scriptId => 's', calls => \@big,
    notBefore => $later });
my $dt = time - $t0;
is($st, 201, '10 000-call campaign: 201') or diag explain($b->{errors} // $b);
is($b->{counts}{PENDING}, 10000, '10 000 PENDING');
is(scalar @{ $b->{rejected} // [] }, 0, 'none rejected');
diag(sprintf '10 000-call campaign created in %.2f s (bench/campaign has the 2 s target)', $dt);
my $big = $b->{id};
my (undef, $m0) = $s->api(GET => '/api/v1/metrics');
$t0 = time;
($st, $b) = $s->api(POST => "/api/v1/campaigns/$big/cancel");
$dt = time - $t0;
is($st, 200, 'cancel the 10 000-call campaign: 200');
is($b->{counts}{CANCELLED}, 10000, '10 000 CANCELLED in its counts');
my (undef, $m1) = $s->api(GET => '/api/v1/metrics');
is($m1->{CANCELLED} - $m0->{CANCELLED}, 10000, 'and in the global counts');
is($m0->{PENDING} - $m1->{PENDING}, 10000, '10 000 fewer PENDING');
diag(sprintf '10 000 calls cancelled in %.2f s', $dt);

# ------------------------------------------------------- callorchctl ---

my $ctl = CallorchTest::builddir() . '/src/callorchctl';
my $cfg = $s->config_path;
my ($out, $rc) = CallorchTest::run_command($ctl, '-c', $cfg, 'campaigns');
is($rc, 0, 'callorchctl campaigns: exit 0') or diag $out;
like($out, qr/^ID\s+NAME\s+STATUS/m, 'a table with a header');
like($out, qr/\Q$cid\E\s+fall\s+FINISHED\b.*100%/, 'the finished campaign at 100%');
($st, $b) = $s->api(POST => '/api/v1/campaigns', { name => 'ctl', scriptId => 's', notBefore => $later,
    calls => [ { to => phone() } ] });
my $ctlid = $b->{id};
($out, $rc) = CallorchTest::run_command($ctl, '-c', $cfg, 'pause', $ctlid);
is($rc, 0, 'callorchctl pause ID: exit 0') or diag $out;
is($s->psql("SELECT status FROM campaigns WHERE id = '$ctlid'"), 'PAUSED', '... PAUSED');
($out, $rc) = CallorchTest::run_command($ctl, '-c', $cfg, 'resume', $ctlid);
is($rc, 0, 'callorchctl resume ID: exit 0') or diag $out;
is($s->psql("SELECT status FROM campaigns WHERE id = '$ctlid'"), 'RUNNING', '... RUNNING');
($out, $rc) = CallorchTest::run_command($ctl, '-c', $cfg, 'pause', $cid);
isnt($rc, 0, 'pause a FINISHED campaign: failure');
like($out, qr/409|FINISHED/, '... says why');
($out, $rc) = CallorchTest::run_command($ctl, '-c', $cfg, 'pause', 'not-an-id');
isnt($rc, 0, 'pause with a bad id: failure');
like($out, qr/campaign id/i, '... a usage message about the id');
($out, $rc) = CallorchTest::run_command($ctl, '-c', $cfg, 'campaigns', 'extra');
isnt($rc, 0, 'campaigns with an argument: usage error');

done_testing;
