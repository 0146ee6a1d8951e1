#!/usr/bin/perl
# POST /api/v1/callbacks/call-status (DESIGN.md section 3 step 4 and
# section 5): Standard Webhooks verification (bad signature, stale and
# future timestamps, key rotation, several signatures in one header),
# X-Api-Key mode, webhook-id dedupe, late webhooks, unknown calls, malformed
# bodies, matching by reference or by the provider's callId, the effect of
# each outcome (COMPLETED final, FAILED/BUSY/NO_ANSWER retried or FAILED at
# max_attempts, VOICEMAIL/REJECTED/INVALID_NUMBER by their default [retry]
# rules), slot release, concurrent deliveries for one attempt
# (exactly one applied); then the real flow with a simulator that
# sends its webhooks before its 202 (--early) or twice (--duplicate).
#
# Calls are put IN_PROGRESS by the real dispatch path, with a simulator that
# drops its webhooks (--drop 1): the call stays IN_PROGRESS with its
# externalCallId recorded, and the test plays the provider's webhook,
# signing it in Perl.
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(hmac_sha256);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time);
use POSIX ();
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new(phone_base => 4_000_000);
$s->start_all;
$s->migrate;

my $JSON = JSON::PP->new->utf8->canonical;
my $PATH = '/api/v1/callbacks/call-status';

# The first secret is the stack's (the simulator signs with it), the second
# a rotated-in one.  KEY_C is configured nowhere.
my $KEY_A = CallorchTest::callback_key();
my $KEY_B = 'rotated-webhook-key-B-0123456789';
my $KEY_C = 'unknown-webhook-key-C-987654321';
my $SECRETS = CallorchTest::callback_secret() . ',whsec_' . encode_base64($KEY_B, '');
my $API_TOKEN = 'provider-callback-token-0123456789';
my $API_TOKEN2 = 'rotated-callback-token-abcdefghij';
my $CLIENT_KEY = 'test-client-key-42';

my %hmac_config = (
    'http.api_keys'                => $CLIENT_KEY,
    'dispatch.max_attempts'        => 2,
    'dispatch.backoff_base'        => '30s',
    'dispatch.backoff_max'         => '15m',
    'dispatch.call_timeout'        => '10m',
    'dispatch.scheduler_interval'  => '200ms',
    'provider.callback_auth'       => 'hmac',
    'provider.callback_secret'     => $SECRETS,
    'provider.signature_tolerance' => '5m',
);


my $seq = 0;
sub new_id { return sprintf 'msg_t42_%d_%d_%d', $$, int(time), ++$seq }

sub uuid {
    my @b = map { int rand 256 } 1 .. 16;
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    my $h = join '', map { sprintf '%02x', $_ } @b;
    return join '-', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4), substr($h, 16, 4),
        substr($h, 20);
}

sub sign {
    my ($key, $id, $ts, $body) = @_;
    return 'v1,' . encode_base64(hmac_sha256("$id.$ts.$body", $key), '');
}

# POST a webhook.  body: hash (encoded canonically) or raw string; id, ts
# (default now); keys: the keys to sign with (default [A]), each signature
# a blank-separated entry; sign_body: sign this instead of the sent body;
# signature: the header as is; omit: header names to leave out; headers:
# more headers.  Returns (status, content, headers, request) where request
# replays the exact same webhook with replay(request).
sub webhook {
    my (%o) = @_;
    my $body = ref $o{body} ? $JSON->encode($o{body}) : $o{body};
    my $id = exists $o{id} ? $o{id} : new_id();
    my $ts = $o{ts} // int(time);
    my $sig = $o{signature}
        // join ' ', map { sign($_, $id, $ts, $o{sign_body} // $body) } @{ $o{keys} // [$KEY_A] };
    my %h = ('webhook-id' => $id, 'webhook-timestamp' => $ts, 'webhook-signature' => $sig,
        %{ $o{headers} // {} });
    delete $h{$_} for @{ $o{omit} // [] };
    delete $h{$_} for grep { !defined $h{$_} } keys %h;
    return replay({ body => $body, headers => \%h });
}

sub replay {
    my ($req) = @_;
    # No client key: the provider does not have one.
    my ($st, $c, $h) = $s->api(POST => $PATH, $req->{body},
        { Authorization => undef, %{ $req->{headers} } });
    return ($st, $c, $h, $req);
}

sub get_call {
    my ($id) = @_;
    my ($st, $c) = $s->api(GET => "/api/v1/calls/$id");
    return $st == 200 ? $c : undef;
}

sub in_flight {
    my (undef, $m) = $s->api(GET => '/api/v1/metrics');
    return ref $m ? $m->{inFlight} : undef;
}

# inFlight of /api/v1/metrics reaches N (releases are asynchronous).
sub in_flight_is {
    my ($n, $what) = @_;
    my $got;
    my $ok = $s->wait_for(sub { $got = in_flight(); defined $got && $got == $n },
        timeout => 20, interval => 0.2, soft => 1);
    ok($ok, $what) or diag("inFlight is " . ($got // 'null') . ", expected $n");
}

# A new call, dispatched for real, IN_PROGRESS at the (dropping) simulator
# with its externalCallId recorded.
sub in_progress_call {
    my ($label) = @_;
    my ($st, $c) = $s->api(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => "wh-$label" });
    BAIL_OUT("cannot create a call: $st") unless $st == 201;
    my $id = $c->{id};
    my $ok = $s->wait_for(sub {
        $c = get_call($id);
        $c && $c->{status} eq 'IN_PROGRESS' && defined $c->{externalCallId};
    }, timeout => 60, interval => 0.2, soft => 1);
    ok($ok, "$label: call $id is IN_PROGRESS with an externalCallId") or do {
        diag explain $c;
        BAIL_OUT('the dispatch path does not put calls IN_PROGRESS');
    };
    return $c;
}

# A well-formed webhook body for attempt N of call C.
sub wh_body {
    my ($c, $status, %o) = @_;
    my $n = $o{attempt} // $c->{attempts};
    my %b = (callId => $o{callId} // $c->{attemptLog}[ $n - 1 ]{externalCallId} // $c->{externalCallId},
        status => $status, durationSec => 42, completedAt => '2026-01-01T12:00:42Z');
    $b{reference} = "$c->{id}:$n" unless $o{no_reference};
    return \%b;
}

sub unchanged {
    my ($before, $what) = @_;
    is_deeply(get_call($before->{id}), $before, $what);
}

sub result_is {
    my ($got, $st, $c, $want_st, $want_result, $what) = @_;
    my $ok = is($st, $want_st, "$what: $want_st");
    if (defined $want_result) {
        $ok &&= is(ref $c ? $c->{result} : undef, $want_result, "$what: result $want_result");
    }
    diag explain $c unless $ok;
    return $ok;
}

# "webhook applied" lines of the log for call ID, as { attempt => count }.
sub applied_in_log {
    my ($id) = @_;
    my %n;
    for my $line (split /\n/, $s->log_text) {
        next unless $line =~ /msg="webhook applied"/ && $line =~ /\bcall=\Q$id\E\b/;
        $n{$1}++ if $line =~ /\battempt=(\d+)\b/;
    }
    return \%n;
}

$s->start_sim('--drop', '1', '--delay', '0', '--seed', '11');
$s->write_config(%hmac_config);
$s->start_daemon;

# ------------------------------------------------ authentication (hmac) ---
my $c1 = in_progress_call('auth');
in_flight_is(1, 'auth: the call holds a slot');
my $body1 = wh_body($c1, 'COMPLETED');
my $now = int(time);
{
    my ($st, $c, $h) = webhook(body => $body1, keys => [$KEY_C]);
    is($st, 401, 'signed with an unknown key: 401');
    like($h->{'content-type'} // '', qr{^application/problem\+json}, '401 is a problem+json');
    is(ref $c && $c->{status}, 401, 'problem status 401');
}
is((webhook(body => $body1, sign_body => $JSON->encode({ %$body1, status => 'FAILED' })))[0], 401,
    'signature over another body: 401');
is((webhook(body => $body1, signature => 'v1,' . encode_base64('x' x 32, '')))[0], 401,
    'a v1 signature of the right length that does not match: 401');
is((webhook(body => $body1, signature => 'v2,' . (split /,/, sign($KEY_A, 'x', 1, 'y'))[1]))[0], 401,
    'only a non-v1 signature: 401');
is((webhook(body => $body1, omit => ['webhook-signature']))[0], 401, 'no webhook-signature: 401');
is((webhook(body => $body1, omit => ['webhook-id']))[0], 401, 'no webhook-id: 401');
is((webhook(body => $body1, omit => ['webhook-timestamp']))[0], 401, 'no webhook-timestamp: 401');
my $stale_id = new_id();
is((webhook(body => $body1, id => $stale_id, ts => $now - 600))[0], 401,
    'correctly signed, timestamp 10 min old (tolerance 5 min): 401');
is((webhook(body => $body1, ts => $now + 600))[0], 401,
    'correctly signed, timestamp 10 min ahead: 401');
is((webhook(body => $body1, ts => 'abc'))[0], 401, 'non-numeric timestamp: 401');
unchanged($c1, 'auth: no rejected webhook changed the call');
in_flight_is(1, 'auth: the slot is still held');

# A signature by the second (rotated-in) secret; the webhook-id of the
# stale delivery above, which must not have been recorded.
my ($st, $res, undef, $req_g) = webhook(body => $body1, id => $stale_id, keys => [$KEY_B]);
result_is(undef, $st, $res, 200, 'applied', 'COMPLETED signed with the second secret');
my $done1 = get_call($c1->{id});
is($done1->{status}, 'COMPLETED', 'COMPLETED is final: status COMPLETED');
ok(defined $done1->{endedAt}, 'endedAt set');
ok(!defined $done1->{nextAttemptAt}, 'no nextAttemptAt');
ok(!defined $done1->{lastError}, 'no lastError');
is($done1->{attempts}, 1, 'one attempt');
is($done1->{externalCallId}, $c1->{externalCallId}, 'externalCallId kept');
is($done1->{attemptLog}[0]{outcome}, 'COMPLETED', 'attemptLog: outcome COMPLETED');
ok(defined $done1->{attemptLog}[0]{endedAt}, 'attemptLog: attempt ended');
in_flight_is(0, 'COMPLETED released the slot (inFlight 0)');
is($s->redis_cli('EXISTS', "callorch:phone:$c1->{to}"), '0', 'the phone lock is gone from Redis');

# ---------------------------------------------- replays, duplicates, late ---
($st, $res) = replay($req_g);
result_is(undef, $st, $res, 200, 'duplicate', 'the same delivery again (replay)');
unchanged($done1, 'the replay changed nothing');
($st, $res) = webhook(body => wh_body($c1, 'FAILED'), id => $stale_id);
result_is(undef, $st, $res, 200, 'duplicate', 'same webhook-id, other status (FAILED)');
unchanged($done1, 'a repeated webhook-id with another status changed nothing');
($st, $res) = webhook(body => wh_body($c1, 'BUSY'));
result_is(undef, $st, $res, 200, 'late', 'a new webhook-id for the settled attempt (late)');
unchanged($done1, 'the late webhook changed nothing');
($st, $res) = webhook(body => wh_body($c1, 'NO_ANSWER', no_reference => 1));
result_is(undef, $st, $res, 200, 'late', 'a late webhook matched by callId only');
unchanged($done1, 'the late callId-only webhook changed nothing');
in_flight_is(0, 'nothing acquired or released by the repeats');

# ---------------------------------------------------------- unknown calls ---
($st, $res) = webhook(body => { callId => 'prov-unknown-' . new_id(), reference => uuid() . ':1',
    status => 'COMPLETED' });
is($st, 404, 'unknown call by reference (random uuid): 404') or diag explain $res;
($st, $res) = webhook(body => { callId => 'prov-unknown-' . new_id(), status => 'COMPLETED' });
is($st, 404, 'unknown callId, no reference: 404') or diag explain $res;

# ------------------------------------------------------- malformed bodies ---
my $ref1 = "$c1->{id}:1";
my @bad = (
    [ 'not JSON',            'this is not json',                                          'body' ],
    [ 'a JSON array',        '[1,2,3]',                                                   'body' ],
    [ 'missing status',      { callId => $c1->{externalCallId}, reference => $ref1 },      'status' ],
    [ 'bad status value',    { %$body1, status => 'DONE' },                               'status' ],
    [ 'lower-case status',   { %$body1, status => 'completed' },                          'status' ],
    [ 'status not a string', { %$body1, status => 1 },                                    'status' ],
    [ 'status ANSWERING_MACHINE', { %$body1, status => 'ANSWERING_MACHINE' },             'status' ],
    [ 'reference "abc"',     { %$body1, reference => 'abc' },                             'reference' ],
    [ 'reference without attempt', { %$body1, reference => $c1->{id} },                   'reference' ],
    [ 'reference attempt "x"', { %$body1, reference => "$c1->{id}:x" },                   'reference' ],
    [ 'reference attempt 0', { %$body1, reference => "$c1->{id}:0" },                     'reference' ],
    [ 'reference not a uuid', { %$body1, reference => 'not-a-uuid-at-all-but-36-chars-long:1' }, 'reference' ],
    [ 'reference a number',  { %$body1, reference => 7 },                                 'reference' ],
    [ 'missing callId',      { reference => $ref1, status => 'COMPLETED' },               'callId' ],
);
my $bad_id;
for my $b (@bad) {
    my ($what, $body, $field) = @$b;
    $bad_id = new_id();
    my ($st, $c, $h) = webhook(body => $body, id => $bad_id);
    is($st, 400, "malformed ($what): 400");
    like($h->{'content-type'} // '', qr{^application/problem\+json}, "malformed ($what): problem+json");
    my @fields = ref $c && ref $c->{errors} eq 'ARRAY' ? map { $_->{field} } @{ $c->{errors} } : ();
    ok((grep { defined && $_ eq $field } @fields), "malformed ($what): errors[].field names $field")
        or diag explain $c;
}
unchanged($done1, 'no malformed webhook changed the call');
{
    my ($st400, $c400) = webhook(body => { %$body1, status => 'ANSWERING_MACHINE' });
    my ($e) = grep { ($_->{field} // '') eq 'status' } @{ ref $c400 && $c400->{errors} || [] };
    is($e && $e->{message},
        'must be one of COMPLETED, FAILED, BUSY, NO_ANSWER, VOICEMAIL, REJECTED, INVALID_NUMBER',
        'an unknown status: the message lists the allowed ones') or diag explain $c400;
}
($st, $res) = webhook(body => wh_body($c1, 'FAILED'), id => $bad_id);
result_is(undef, $st, $res, 200, 'late', 'the webhook-id of a 400 was not recorded');

# ----------------------------------------- callId only, BUSY, retry, max ---
my $c2 = in_progress_call('retry');
in_flight_is(1, 'retry: the call holds a slot');
# matched by callId only; timestamp 2 min old, within the tolerance
($st, $res) = webhook(body => wh_body($c2, 'BUSY', no_reference => 1), ts => int(time) - 120);
result_is(undef, $st, $res, 200, 'applied', 'BUSY matched by callId only (timestamp 2 min old)');
my $p2 = get_call($c2->{id});
is($p2->{status}, 'PENDING', 'BUSY: back to PENDING for a retry');
is($p2->{attempts}, 1, 'BUSY: attempts 1');
is($p2->{lastError}, 'provider reported BUSY', 'BUSY: lastError');
ok(!defined $p2->{endedAt}, 'BUSY: endedAt stays null');
ok(defined $p2->{nextAttemptAt}, 'BUSY: nextAttemptAt set');
is($p2->{attemptLog}[0]{outcome}, 'BUSY', 'BUSY: attemptLog outcome');
my $delay = CallorchTest::epoch($p2->{nextAttemptAt}) - CallorchTest::epoch($p2->{attemptLog}[0]{endedAt});
ok($delay >= 24 - 0.002 && $delay <= 36 + 0.002,
    "BUSY: nextAttemptAt = end + 30s backoff +-20% ($delay s)");
in_flight_is(0, 'BUSY released the slot');

# Make the retry due now instead of in 30 s; the scheduler dispatches it.
$s->psql("UPDATE calls SET next_attempt_at = now() WHERE id = '$c2->{id}'");
my $r2;
my $ok = $s->wait_for(sub {
    $r2 = get_call($c2->{id});
    $r2 && $r2->{status} eq 'IN_PROGRESS' && $r2->{attempts} == 2
        && defined $r2->{attemptLog}[1]{externalCallId};
}, timeout => 60, interval => 0.2, soft => 1);
ok($ok, 'retry: attempt 2 IN_PROGRESS with its own externalCallId') or diag explain $r2;
isnt($r2->{attemptLog}[1]{externalCallId}, $c2->{externalCallId}, 'retry: a new provider call id');
in_flight_is(1, 'retry: attempt 2 holds a slot');

# Webhooks about attempt 1 while attempt 2 is in progress: late.
($st, $res) = webhook(body => wh_body($c2, 'COMPLETED', attempt => 1));
result_is(undef, $st, $res, 200, 'late', 'attempt 1 COMPLETED by reference while attempt 2 runs');
($st, $res) = webhook(body => wh_body($c2, 'COMPLETED', attempt => 1, no_reference => 1));
result_is(undef, $st, $res, 200, 'late', "attempt 1 COMPLETED by attempt 1's callId only");
unchanged($r2, 'attempt 2 is untouched by webhooks about attempt 1');
in_flight_is(1, 'and still holds its slot');

# NO_ANSWER at max_attempts (2): FAILED.  Two signatures in the header, the
# first by a key nobody configured.
($st, $res) = webhook(body => wh_body($r2, 'NO_ANSWER', attempt => 2), keys => [ $KEY_C, $KEY_A ]);
result_is(undef, $st, $res, 200, 'applied', 'NO_ANSWER on the last attempt (second of two signatures valid)');
my $f2 = get_call($c2->{id});
is($f2->{status}, 'FAILED', 'NO_ANSWER at max_attempts: FAILED');
is($f2->{attempts}, 2, 'two attempts');
is($f2->{lastError}, 'provider reported NO_ANSWER', 'lastError');
ok(defined $f2->{endedAt}, 'endedAt set');
ok(!defined $f2->{nextAttemptAt}, 'no nextAttemptAt');
is_deeply([ map { $_->{outcome} } @{ $f2->{attemptLog} } ], [ 'BUSY', 'NO_ANSWER' ], 'attemptLog outcomes');
in_flight_is(0, 'the last attempt released its slot');

# FAILED on a first attempt: retry scheduled.
my $c3 = in_progress_call('failed');
($st, $res) = webhook(body => wh_body($c3, 'FAILED'));
result_is(undef, $st, $res, 200, 'applied', 'FAILED');
my $p3 = get_call($c3->{id});
is($p3->{status}, 'PENDING', 'FAILED with attempts left: PENDING');
ok(defined $p3->{nextAttemptAt}, 'FAILED: nextAttemptAt set');
is($p3->{lastError}, 'provider reported FAILED', 'FAILED: lastError');
is($p3->{attemptLog}[0]{outcome}, 'FAILED', 'FAILED: attemptLog outcome');
in_flight_is(0, 'FAILED released the slot');
is(($s->api(POST => "/api/v1/calls/$c3->{id}/cancel"))[0], 200, 'the waiting retry is cancelled');

# The outcomes of DESIGN.md section 9: accepted, recorded in the attempt log
# as sent, and retried by their [retry] rules, here the defaults (VOICEMAIL
# after 24 h; REJECTED and INVALID_NUMBER never, attempts left or not).
# t/86-retry-rules.t tests other rules on the real flow.
for my $case ([ VOICEMAIL => 'PENDING' ], [ REJECTED => 'FAILED' ], [ INVALID_NUMBER => 'FAILED' ]) {
    my ($status, $want) = @$case;
    my $c = in_progress_call(lc $status);
    ($st, $res) = webhook(body => wh_body($c, $status));
    result_is(undef, $st, $res, 200, 'applied', $status);
    my $g = get_call($c->{id});
    is($g->{status}, $want, "$status on attempt 1 of 2: $want");
    is($g->{lastError}, "provider reported $status", "$status: lastError");
    is($g->{attemptLog}[0]{outcome}, $status, "$status: attemptLog outcome");
    in_flight_is(0, "$status released the slot");
    if ($want eq 'PENDING') {
        my $d = CallorchTest::epoch($g->{nextAttemptAt}) - CallorchTest::epoch($g->{attemptLog}[0]{endedAt});
        ok(abs($d - 86400) < 0.01, "$status: nextAttemptAt = end + 24h ($d s)");
        is(($s->api(POST => "/api/v1/calls/$c->{id}/cancel"))[0], 200, "$status: the waiting retry is cancelled");
    } else {
        ok(!defined $g->{nextAttemptAt}, "$status: no retry planned");
        ok(defined $g->{endedAt}, "$status: endedAt set");
    }
}

# Concurrent deliveries for one attempt, each with its own webhook-id and
# another outcome: exactly one is applied, the others are late.
my $c5 = in_progress_call('race');
my @outcomes = qw(COMPLETED FAILED BUSY NO_ANSWER) x 2;
my %kid;
for my $i (0 .. $#outcomes) {
    my $pid = fork;
    BAIL_OUT("fork: $!") unless defined $pid;
    if ($pid == 0) {
        my ($st, $res) = webhook(body => wh_body($c5, $outcomes[$i]));
        my $r = ref $res ? $res->{result} // '' : '';
        POSIX::_exit($st != 200 ? 1 : $r eq 'applied' ? 10 + $i : $r eq 'late' ? 2 : 3);
    }
    $kid{$pid} = $i;
}
my (@applied, $late, @other);
for my $pid (keys %kid) {
    waitpid($pid, 0);
    my $code = $? >> 8;
    if ($code >= 10) { push @applied, $code - 10 } elsif ($code == 2) { $late++ } else { push @other, $code }
}
is(scalar @applied, 1, 'race: exactly one of 8 concurrent webhooks was applied');
is($late // 0, 7, 'race: the 7 others answered 200 late');
is(scalar @other, 0, 'race: no other answer');
if (@applied == 1) {
    my $won = $outcomes[ $applied[0] ];
    my $r5 = get_call($c5->{id});
    is($r5->{attempts}, 1, 'race: still one attempt');
    is($r5->{attemptLog}[0]{outcome}, $won, "race: the attempt ended with the applied outcome ($won)");
    is($r5->{status}, $won eq 'COMPLETED' ? 'COMPLETED' : 'PENDING', 'race: the call status follows it');
    $s->api(POST => "/api/v1/calls/$c5->{id}/cancel") if $r5->{status} eq 'PENDING';
}
in_flight_is(0, 'race: slot released');

# ------------------------------------------------------------ api-key mode ---
$s->stop_daemon;
$s->write_config(%hmac_config, 'provider.callback_auth' => 'api-key',
    'provider.callback_secret' => "$API_TOKEN,$API_TOKEN2");
$s->start_daemon;
my $c4 = in_progress_call('api-key');
my $body4 = wh_body($c4, 'COMPLETED');
is((webhook(body => $body4, headers => { 'X-Api-Key' => 'wrong-token-0123456789abcdef' }))[0], 401,
    'api-key: wrong X-Api-Key: 401');
is((webhook(body => $body4, headers => { 'X-Api-Key' => "${API_TOKEN}x" }))[0], 401,
    'api-key: the token with a suffix: 401');
is((webhook(body => $body4))[0], 401, 'api-key: no X-Api-Key (only an HMAC signature): 401');
is((webhook(body => $body4, headers => { Authorization => "Bearer $API_TOKEN" }))[0], 401,
    'api-key: the token as a bearer token instead: 401');
unchanged($c4, 'api-key: no rejected webhook changed the call');
my $req4;
($st, $res, undef, $req4) = webhook(body => $body4, headers => { 'X-Api-Key' => $API_TOKEN },
    omit => [qw(webhook-id webhook-timestamp webhook-signature)]);
result_is(undef, $st, $res, 200, 'applied', 'api-key: the right X-Api-Key, no Standard Webhooks headers');
my $done4 = get_call($c4->{id});
is($done4->{status}, 'COMPLETED', 'api-key: COMPLETED');
in_flight_is(0, 'api-key: slot released');
($st, $res) = replay($req4);
result_is(undef, $st, $res, 200, 'late', 'api-key: the same webhook again (no webhook-id): late');
unchanged($done4, 'api-key: the repeat changed nothing');
($st, $res) = webhook(body => wh_body($c4, 'FAILED'), headers => { 'X-Api-Key' => $API_TOKEN2 });
result_is(undef, $st, $res, 200, 'late', 'api-key: the second (rotated-in) token is accepted too');
unchanged($done4, 'api-key: and the late FAILED changed nothing');
is((webhook(body => $body4, headers => { 'X-Api-Key' => "$API_TOKEN,$API_TOKEN2" }))[0], 401,
    'api-key: both tokens joined by a comma are no token: 401');

# ------------------------------------------------ real flow: --early, --duplicate ---
# Back to hmac; quick retries so FAILED/BUSY/NO_ANSWER run their course.
my %flow_config = (%hmac_config, 'dispatch.backoff_base' => '200ms', 'dispatch.backoff_max' => '1s');

# Runs N calls through the simulator started with SIM_ARGS until each is
# COMPLETED or FAILED; returns their ids.
sub flow {
    my ($label, $opts, $n, @sim_args) = @_;
    $s->stop_sim;
    $s->start_sim(@sim_args);
    my @ids;
    for my $i (1 .. $n) {
        my ($st, $c) = $s->api(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => "$label-$i" });
        push @ids, $c->{id} if $st == 201;
    }
    is(scalar @ids, $n, "$label: $n calls accepted");
    my $list = join ',', map { "'$_'" } @ids;
    my $t0 = time;
    my $ok = $s->wait_for(sub {
        $s->psql("SELECT count(*) FROM calls WHERE id IN ($list) AND status NOT IN ('COMPLETED', 'FAILED')") == 0
    }, timeout => 180, interval => 0.5, soft => 1);
    ok($ok, sprintf '%s: every call ended COMPLETED or FAILED (%.1fs), none stuck IN_PROGRESS', $label, time - $t0)
        or diag $s->psql("SELECT id, status, attempts FROM calls WHERE id IN ($list)");
    diag("$label: " . join ', ', split /\n/,
        $s->psql("SELECT status || '=' || count(*) FROM calls WHERE id IN ($list) GROUP BY status ORDER BY 1"));
    my $rows = $s->psql(qq{SELECT count(*) FROM call_attempts WHERE call_id IN ($list)});
    is($s->psql(qq{SELECT count(*) FROM calls c WHERE id IN ($list) AND attempts <>
                    (SELECT count(*) FROM call_attempts a WHERE a.call_id = c.id)}), 0,
        "$label: one attempt row per attempt");
    is($s->psql(qq{SELECT count(*) FROM call_attempts WHERE call_id IN ($list)
                    AND (ended_at IS NULL OR outcome NOT IN ('COMPLETED', 'FAILED', 'BUSY', 'NO_ANSWER')
                         OR external_call_id IS NULL)}), 0,
        "$label: every attempt was settled by its webhook (no timeout, no provider error)");
    is($s->psql(qq{SELECT count(*) FROM calls WHERE id IN ($list) AND status = 'FAILED'
                    AND attempts < max_attempts}), 0, "$label: FAILED only after max_attempts");
    is($s->psql(qq{SELECT count(*) FROM calls WHERE id IN ($list) AND status = 'COMPLETED'
                    AND (external_call_id IS NULL OR ended_at IS NULL)}), 0,
        "$label: COMPLETED calls carry externalCallId and endedAt");
    # Each attempt was applied exactly once.  The log line is written just
    # after the transaction commits: give the last one a moment.
    my (@twice, $applied);
    $s->wait_for(sub {
        @twice = ();
        $applied = 0;
        for my $id (@ids) {
            my $n = applied_in_log($id);
            my $att = $s->psql("SELECT attempts FROM calls WHERE id = '$id'");
            $applied += $_ for values %$n;
            push @twice, "$id: " . join(',', map { "$_ x$n->{$_}" } sort keys %$n)
                if grep({ $n->{$_} != 1 } keys %$n) || keys(%$n) != $att;
        }
        !@twice;
    }, timeout => 10, interval => 0.2, soft => 1);
    is(scalar @twice, 0, "$label: every attempt's webhook was applied exactly once") or diag "@twice";
    is($applied, $rows, "$label: webhooks applied ($applied) = attempts ($rows)");
    # The simulator counts a delivery once it has read the answer, after
    # the call settled; a duplicate goes out after the first delivery.
    my $want_sent = $rows * ($opts->{sent_per_attempt} // 1);
    my $st;
    $s->wait_for(sub { $st = $s->sim_stats; $st->{webhooksSent} >= $want_sent && $st->{inProgress} == 0 },
        timeout => 20, interval => 0.2, soft => 1);
    is($st->{webhooksSent}, $want_sent, "$label: $want_sent webhook deliveries answered 2xx");
    is($st->{inProgress}, 0, "$label: nothing left in progress at the provider");
    is($st->{started}, $rows, "$label: provider starts = attempts");
    is($st->{duplicateStarts}, 0, "$label: no attempt started twice");
    is($st->{webhookFailures}, 0, "$label: no webhook delivery given up");
    in_flight_is(0, "$label: every slot released");
    return ($st, $rows, @ids);
}

$s->stop_daemon;
$s->write_config(%flow_config);
$s->start_daemon;

{
    my ($st, $rows) = flow('early', {}, 10, '--early', '1', '--delay', '0', '--success-rate', '0.6',
        '--seed', '21');
    is($st->{early}, $rows, 'early: every webhook was sent before the 202');
}
{
    my ($st, $rows, @ids) = flow('duplicate', { sent_per_attempt => 2 }, 10, '--duplicate', '1', '--delay', '0-50ms',
        '--success-rate', '0.6', '--seed', '22');
    is($st->{duplicated}, $rows, 'duplicate: every webhook was sent twice');
    my %ids = map { $_ => 1 } @ids;
    my $dups = 0;
    $s->wait_for(sub {
        $dups = grep { /msg="webhook changes nothing" result=duplicate call=(\S+)/ && $ids{$1} }
            split /\n/, $s->log_text;
        $dups >= $rows;
    }, timeout => 10, interval => 0.2, soft => 1);
    is($dups, $rows, 'duplicate: each second delivery was recognised as a duplicate');
}

is($s->stop_daemon, 0, 'clean stop');
done_testing;
