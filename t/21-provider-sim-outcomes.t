#!/usr/bin/perl
# callorch-provider-sim's unknown-outcome and outcome knobs over real HTTP,
# without callorchd (DESIGN.md sections 5 and 9): Idempotency-Key replays,
# the status lookup, lost / slow / bad-callId answers, the startedWhileLive
# and startedAfterCompleted counters, outcomes forced per number (with
# OPT_OUT) by option and by /control/outcomes, outcome shares, the bounded
# reference table, and the command line's errors for every new knob.
#
# The webhook receiver is t/lib/CallorchReceiver.pm (t/20's: /hook → 200);
# the simulator is started and stopped by CallorchTest, as in t/20.
use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);

use CallorchReceiver;
use CallorchTest;

my $BIN = CallorchTest::builddir() . '/src/callorch-provider-sim';
plan(skip_all => "$BIN is not built") unless -x $BIN;

# No stack: a directory (removed at the end unless CALLORCH_TEST_LEAVE),
# the simulator (CallorchTest: $T->restart_sim(ARGS) with the stack's
# --secret first, a later one wins; the log accumulates in sim.log) and the
# receiver.
my $T      = CallorchTest->new;
my $DIR    = $T->tmpdir;
my $SECRET = CallorchTest::callback_secret();
my $JSON   = JSON::PP->new->utf8->canonical;
my $HTTP   = HTTP::Tiny->new(keep_alive => 0, timeout => 10);
my $API    = 'k1';
my $RCV    = CallorchReceiver->start("$DIR/hooks.jsonl");
my $RECV   = $RCV->url;

# --------------------------------------------------------------- the sim ---

my $N = 0;
sub new_call { return sprintf('%08x-2100-4000-8000-%012x', $$, ++$N) }

# POST /api/v1/calls.  Options: reference, to, key (bearer; default $API,
# undef for none), idem (Idempotency-Key), timeout (s).
sub initiate {
    my (%o) = @_;
    my $body = $JSON->encode({
        to => $o{to} // '+15551230000', scriptId => 'welcome', metadata => {},
        webhookUrl => "$RECV/hook", reference => $o{reference} // new_call() . ':1',
    });
    my %h = ('Content-Type' => 'application/json');
    my $key = exists $o{key} ? $o{key} : $API;
    $h{Authorization} = "Bearer $key" if defined $key;
    $h{'Idempotency-Key'} = $o{idem} if defined $o{idem};
    my $ua = HTTP::Tiny->new(keep_alive => 0, timeout => $o{timeout} // 10);
    my $t0 = time;
    my $r = $ua->request('POST', "${\ $T->sim_url }/api/v1/calls", { headers => \%h, content => $body });
    $r->{elapsed} = time - $t0;
    $r->{json} = eval { $JSON->decode($r->{content}) };
    return $r;
}

# METHOD PATH [BODY] against the sim with the bearer key (KEY: undef none).
sub req {
    my ($method, $path, $body, %o) = @_;
    my %h;
    my $key = exists $o{key} ? $o{key} : $API;
    $h{Authorization} = "Bearer $key" if defined $key;
    my %opt = (headers => \%h);
    if (defined $body) {
        $h{'Content-Type'} = 'application/json';
        $opt{content} = ref $body ? $JSON->encode($body) : $body;
    }
    my $r = $HTTP->request($method, "${\ $T->sim_url }$path", \%opt);
    $r->{json} = eval { $JSON->decode($r->{content}) };
    return $r;
}

sub lookup {
    my ($ref, %o) = @_;
    (my $q = $ref) =~ s/:/%3A/g;    # as a URL template filler may encode it
    return req('GET', "/api/v1/calls?reference=$q", undef, %o);
}

sub stats {
    my $r = $HTTP->get("${\ $T->sim_url }/stats");
    my $j = $r->{status} == 200 ? eval { $JSON->decode($r->{content}) } : undef;
    return $j if ref $j eq 'HASH';
    diag("GET /stats answered $r->{status}: $r->{content}");
    BAIL_OUT('callorch-provider-sim stopped answering /stats');
}

sub valid_call_id {
    my ($id) = @_;
    return defined $id && !ref $id && $id =~ /\A[\x21-\x7e]{1,256}\z/;
}

# A start's answer with a valid callId: a JSON string of 1..256 printable
# characters (read from the raw body: a JSON number is not one).
sub answer_has_call_id {
    my ($r) = @_;
    return $r->{content} =~ /"callId":"([^"\\\x00-\x20\x7f]{1,256})"/;
}

# ------------------------------------------------------------ the tests ---

subtest 'command line: the new knobs' => sub {
    my $run = sub { my $out = `$BIN @_ 2>&1`; return ($? >> 8, $out) };
    my ($rc, $out) = $run->('--help');
    is($rc, 0, '--help exits 0');
    like($out, qr/--$_\b/, "--help documents --$_")
        for qw(lose-answer slow-answer slow-answer-delay bad-call-id outcomes opt-out outcome max-records);
    like($out, qr{/control/outcomes}, '--help documents /control/outcomes');
    like($out, qr/status_url/, '--help says what status_url to configure');
    my @bad = (
        [ [ '--lose-answer', '1.5' ],       qr/--lose-answer "1\.5": a number from 0 to 1/ ],
        [ [ '--slow-answer', 'x' ],         qr/--slow-answer "x": a number from 0 to 1/ ],
        [ [ '--slow-answer-delay', '0' ],   qr/--slow-answer-delay "0": must be more than 0/ ],
        [ [ '--slow-answer-delay', '3q' ],  qr/--slow-answer-delay "3q": / ],
        [ [ '--bad-call-id', '-0.1' ],      qr/--bad-call-id "-0\.1": a number from 0 to 1/ ],
        [ [ '--opt-out', '2' ],             qr/--opt-out "2": a number from 0 to 1/ ],
        [ [ '--outcomes', 'BUSY:0.1' ],     qr/STATUS must be VOICEMAIL, REJECTED or INVALID_NUMBER/ ],
        [ [ '--outcomes', 'VOICEMAIL' ],    qr/"VOICEMAIL": STATUS:P is required/ ],
        [ [ '--outcomes', 'VOICEMAIL:x' ],  qr/VOICEMAIL: P must be a number from 0 to 1/ ],
        [ [ '--outcomes', 'REJECTED:0.1,REJECTED:0.2' ], qr/REJECTED is given twice/ ],
        [ [ '--outcomes', 'VOICEMAIL:0.5' ], qr/--success-rate 0\.9 plus the --outcomes shares is 1\.4, more than 1/ ],
        [ [ '--outcome', '+15550001111' ],  qr/NUMBER=STATUS\[,opt-out\] is required/ ],
        [ [ '--outcome', '5550001111=BUSY' ], qr/NUMBER must be an E\.164 phone number/ ],
        [ [ '--outcome', '+15550001111=MAYBE' ], qr/STATUS must be one of COMPLETED, .*INVALID_NUMBER/ ],
        [ [ '--outcome', '+15550001111=BUSY,later' ], qr/only ",opt-out" may follow STATUS/ ],
        [ [ '--max-records', '0' ],         qr/--max-records "0": must be at least 1/ ],
        [ [ '--max-records', 'many' ],      qr/--max-records "many": a non-negative integer/ ],
    );
    for my $b (@bad) {
        my ($args, $re) = @$b;
        ($rc, $out) = $run->('--secret', $SECRET, map { "'$_'" } @$args);
        is($rc, 2, "@$args: exit 2");
        like($out, $re, "@$args: says why");
    }
    # valid knobs: the run goes on to bind --listen, which fails (exit 1)
    ($rc, $out) = $run->('--secret', $SECRET, '--success-rate', '0.5', '--outcomes',
                         'VOICEMAIL:0.2,REJECTED:0.2,INVALID_NUMBER:0.1', '--outcome',
                         "'+15550001111=REJECTED,opt-out'", '--lose-answer', '0.1', '--slow-answer', '0.1',
                         '--slow-answer-delay', '20s', '--bad-call-id', '0.1', '--opt-out', '0.2',
                         '--max-records', '10', '--listen', '127.0.0.1:x');
    is($rc, 1, 'valid values of every new knob are accepted (then --listen fails)');
    like($out, qr/HOST:PORT is required/, '... at --listen');
};

$T->restart_sim('--delay', '1s', '--api-key', $API, '--success-rate', '1', '--seed', '21');

subtest 'Idempotency-Key replays' => sub {
    my $ref = new_call() . ':1';
    my $r1 = initiate(reference => $ref, idem => $ref);
    is($r1->{status}, 202, 'first start: 202');
    ok(valid_call_id($r1->{json}{callId}), '... with a callId');
    my $r2 = initiate(reference => $ref, idem => $ref);
    is($r2->{status}, 202, 'the same start again with the key: 202');
    is($r2->{json}{callId}, $r1->{json}{callId}, '... with the same callId');
    is($r2->{json}{status}, 'INITIATED', '... status INITIATED');
    my $s = stats();
    is($s->{started}, 1, 'started counts one call');
    is($s->{idempotentReplays}, 1, 'idempotentReplays 1');
    is($s->{duplicateStarts}, 0, 'not a duplicate start');
    is($s->{inProgress}, 1, 'one call in progress');
    is($s->{startedWhileLive}, 0, 'startedWhileLive 0');
    my $bad = initiate(reference => new_call() . ':1', idem => 'other-text');
    is($bad->{status}, 400, 'an Idempotency-Key that is not the reference: 400');
    like($bad->{content}, qr/Idempotency-Key: must be the same text as reference/, '... saying so');
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), 'the webhook arrives') or return;
    is(scalar($RCV->hooks_for($ref)), 1, 'one webhook only');
    my $r3 = initiate(reference => $ref, idem => $ref);
    is($r3->{json}{callId}, $r1->{json}{callId}, 'a replay after the call ended: the same callId');
    $s = stats();
    is($s->{started}, 1, '... still one call started');
    is($s->{idempotentReplays}, 2, '... idempotentReplays 2');
    is($s->{startedAfterCompleted}, 0, '... not a start after COMPLETED');
    sleep 0.5;
    is(scalar($RCV->hooks_for($ref)), 1, '... and no second webhook');
    my $r4 = initiate(reference => $ref);
    is($r4->{status}, 202, 'the same reference again without the key: a new call');
    isnt($r4->{json}{callId}, $r1->{json}{callId}, '... with a new callId');
    $s = stats();
    is($s->{duplicateStarts}, 1, '... counted in duplicateStarts');
    is($s->{startedAfterCompleted}, 1, '... and in startedAfterCompleted');
};

subtest 'status lookup' => sub {
    my $ref = new_call() . ':1';
    is(lookup($ref)->{status}, 404, 'unknown reference: 404');
    is(lookup($ref, key => undef)->{status}, 401, 'no bearer key: 401');
    is(lookup($ref, key => 'wrong')->{status}, 401, 'wrong bearer key: 401');
    is(req('GET', '/api/v1/calls?other=1')->{status}, 400, 'no reference parameter: 400');
    is(req('GET', '/api/v1/calls?reference=%zz')->{status}, 400, 'a bad escape: 400');
    my $g = req('GET', '/api/v1/calls');
    is($g->{status}, 405, 'GET without a query: 405 as before (no listing)');
    my $r = initiate(reference => $ref);
    my $l = lookup($ref);
    is($l->{status}, 200, 'after the start: 200');
    is_deeply([ sort keys %{ $l->{json} } ], [qw(callId reference status)], '... keys callId, reference, status');
    is($l->{json}{callId}, $r->{json}{callId}, '... the callId of the start');
    is($l->{json}{reference}, $ref, '... the reference');
    is($l->{json}{status}, 'INITIATED', '... INITIATED at first');
    ok(CallorchTest::wait_until(sub { lookup($ref)->{json}{status} eq 'IN_PROGRESS' }, 2), 'then IN_PROGRESS');
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), 'the webhook arrives');
    is(lookup($ref)->{json}{status}, 'COMPLETED', 'after the webhook: COMPLETED');
    is(req('GET', "/api/v1/calls?x=1&reference=$ref")->{json}{status}, 'COMPLETED',
       'a raw ":" and another parameter work too');
    ok(stats()->{statusLookups} >= 4, 'stats: statusLookups');
};

subtest '--lose-answer: the call runs, its answer never comes' => sub {
    $T->restart_sim('--delay', '1500ms', '--api-key', $API, '--success-rate', '1', '--lose-answer', '1');
    my $call = new_call();
    my $r = initiate(reference => "$call:1", timeout => 0.5);
    is($r->{status}, 599, 'the client gets no answer (times out)');
    like($r->{content}, qr/timed? ?out/i, '... a timeout');
    my $s = stats();
    is($s->{started}, 1, 'the call was started');
    is($s->{lostAnswers}, 1, 'stats: lostAnswers 1');
    is($s->{inProgress}, 1, 'the call is in progress');
    my $l = lookup("$call:1");
    is($l->{status}, 200, 'the lookup finds it');
    ok(valid_call_id($l->{json}{callId}), '... with its callId');
    my $r2 = initiate(reference => "$call:2", timeout => 0.5);
    is($r2->{status}, 599, 'attempt 2 of the same call while attempt 1 is live: no answer either');
    $s = stats();
    is($s->{startedWhileLive}, 1, 'stats: startedWhileLive 1');
    is($s->{maxInProgress}, 2, 'two in progress at once');
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for("$call:1") }, 5), "attempt 1's webhook still arrives") or return;
    my ($h) = $RCV->hooks_for("$call:1");
    is($h->{json}{status}, 'COMPLETED', '... COMPLETED');
    is($h->{json}{callId}, $l->{json}{callId}, '... with the callId the lookup gave');
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for("$call:2") }, 5), "attempt 2's webhook arrives");
    initiate(reference => "$call:3", timeout => 0.5);
    $s = stats();
    is($s->{startedAfterCompleted}, 1, 'a start after the COMPLETED webhook: startedAfterCompleted 1');
    is($s->{startedWhileLive}, 1, '... not while live');
    my $ok = initiate(reference => "$call:3", idem => "$call:3");
    is($ok->{status}, 202, 'a replay of a lost answer is answered at once');
    is($ok->{json}{callId}, lookup("$call:3")->{json}{callId}, '... with the callId of the call');
};

subtest '--slow-answer' => sub {
    $T->restart_sim('--delay', '200ms', '--success-rate', '1', '--slow-answer', '1',
              '--slow-answer-delay', '800ms');
    my $ref = new_call() . ':1';
    is(initiate(reference => $ref, timeout => 0.3, key => undef)->{status}, 599,
       'a client with a shorter timeout gives up');
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), '... but the call ran: webhook received');
    my $r = initiate(key => undef);
    is($r->{status}, 202, 'a patient client gets 202');
    ok($r->{elapsed} >= 0.7, sprintf('... after the delay (%.2fs)', $r->{elapsed}));
    ok(valid_call_id($r->{json}{callId}), '... with a callId');
    is(stats()->{slowAnswers}, 2, 'stats: slowAnswers 2');
};

subtest '--bad-call-id' => sub {
    $T->restart_sim('--delay', '100ms', '--success-rate', '1', '--bad-call-id', '1');
    my @refs = map { new_call() . ':1' } 1 .. 6;
    my @r = map { initiate(reference => $_, key => undef) } @refs;
    is(scalar(grep { $_->{status} == 202 } @r), 6, 'six starts answered 202');
    is(scalar(grep { answer_has_call_id($_) } @r), 0, '... none with a valid callId');
    is(scalar(grep { !defined $_->{json} } @r), 1, '... one not even JSON');
    ok((grep { ($_->{json}{callId} // '') =~ /\n/ } @r), '... one with a newline in it');
    is(stats()->{badCallIds}, 6, 'stats: badCallIds 6');
    ok(CallorchTest::wait_until(sub { (grep { $RCV->hooks_for($_) } @refs) == 6 }), 'the six calls send their webhooks');
    ok(valid_call_id($_->{json}{callId}), "webhook of $_->{json}{reference}: a valid callId")
        for map { $RCV->hooks_for($_) } @refs;
    my ($h) = $RCV->hooks_for($refs[0]);
    is(lookup($refs[0], key => undef)->{json}{callId}, $h->{json}{callId}, 'the lookup gives the real callId');
};

subtest 'outcomes forced per number (--outcome)' => sub {
    $T->restart_sim('--delay', '0-50ms', '--success-rate', '1', '--outcome', '+15550000001=VOICEMAIL',
              '--outcome', '+15550000002=COMPLETED,opt-out', '--outcome', '+15550000003=INVALID_NUMBER');
    my %ref = map { $_ => new_call() . ':1' } qw(+15550000001 +15550000002 +15550000003 +15550000004);
    initiate(to => $_, reference => $ref{$_}, key => undef) for sort keys %ref;
    ok(CallorchTest::wait_until(sub { (grep { $RCV->hooks_for($_) } values %ref) == 4 }), 'four webhooks') or return;
    my %h = map { $_ => ($RCV->hooks_for($ref{$_}))[0]{json} } keys %ref;
    is($h{'+15550000001'}{status}, 'VOICEMAIL', 'forced VOICEMAIL');
    ok(!exists $h{'+15550000001'}{disposition}, '... without a disposition');
    ok($h{'+15550000001'}{durationSec} >= 0, '... with a duration');
    is($h{'+15550000002'}{status}, 'COMPLETED', 'forced COMPLETED,opt-out: COMPLETED');
    is($h{'+15550000002'}{disposition}, 'OPT_OUT', '... with "disposition":"OPT_OUT"');
    is($h{'+15550000003'}{status}, 'INVALID_NUMBER', 'forced INVALID_NUMBER');
    is($h{'+15550000004'}{status}, 'COMPLETED', 'another number: the random draw');
    ok(!exists $h{'+15550000004'}{disposition}, '... without a disposition');
    my $l = lookup($ref{'+15550000002'});
    is($l->{json}{status}, 'COMPLETED', 'the lookup: COMPLETED');
    is($l->{json}{disposition}, 'OPT_OUT', '... with the disposition');
    my $s = stats();
    is($s->{byStatus}{VOICEMAIL}, 1, 'stats: byStatus VOICEMAIL');
    is($s->{byStatus}{INVALID_NUMBER}, 1, 'stats: byStatus INVALID_NUMBER');
    is($s->{byStatus}{COMPLETED}, 2, 'stats: byStatus COMPLETED');
    is($s->{optOuts}, 1, 'stats: optOuts 1');
    my $list = req('GET', '/control/outcomes');
    is_deeply($list->{json}{outcomes}{'+15550000002'},
              { number => '+15550000002', status => 'COMPLETED', disposition => 'OPT_OUT' },
              'GET /control/outcomes lists the forced numbers');
};

subtest '/control/outcomes' => sub {
    $T->restart_sim('--delay', '0-50ms', '--api-key', $API, '--success-rate', '1');
    my $num = '+15550000010';
    my $put = { status => 'REJECTED', disposition => 'OPT_OUT' };
    is(req('PUT', "/control/outcomes/$num", $put, key => undef)->{status}, 401, 'PUT without the bearer key: 401');
    is(req('GET', "/control/outcomes", undef, key => 'wrong')->{status}, 401, 'GET with a wrong key: 401');
    is(req('GET', "/control/outcomes/$num")->{status}, 404, 'GET a number without one: 404');
    my $r = req('PUT', "/control/outcomes/$num", $put);
    is($r->{status}, 201, 'PUT: 201 when new');
    is_deeply($r->{json}, { number => $num, status => 'REJECTED', disposition => 'OPT_OUT' }, '... echoes the entry');
    is(req('PUT', "/control/outcomes/%2B15550000010", $put)->{status}, 200, 'PUT again (+ as %2B): 200');
    is_deeply(req('GET', "/control/outcomes/$num")->{json},
              { number => $num, status => 'REJECTED', disposition => 'OPT_OUT' }, 'GET: the entry');
    my $ref = new_call() . ':1';
    initiate(to => $num, reference => $ref);
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), 'a call to the number') or return;
    my ($h) = $RCV->hooks_for($ref);
    is($h->{json}{status}, 'REJECTED', '... ends REJECTED');
    is($h->{json}{disposition}, 'OPT_OUT', '... with OPT_OUT');
    is(req('PUT', "/control/outcomes/$num", { status => 'BUSY', disposition => undef })->{json}{status}, 'BUSY',
       'PUT with "disposition":null');
    $ref = new_call() . ':1';
    initiate(to => $num, reference => $ref);
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), 'another call');
    ($h) = $RCV->hooks_for($ref);
    is($h->{json}{status}, 'BUSY', '... ends BUSY');
    ok(!exists $h->{json}{disposition}, '... without a disposition');
    is(req('DELETE', "/control/outcomes/$num")->{status}, 204, 'DELETE: 204');
    is(req('DELETE', "/control/outcomes/$num")->{status}, 404, 'DELETE again: 404');
    $ref = new_call() . ':1';
    initiate(to => $num, reference => $ref);
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), 'a call after DELETE');
    is(($RCV->hooks_for($ref))[0]{json}{status}, 'COMPLETED', '... the random draw again (COMPLETED)');
    my @bad = (
        [ "/control/outcomes/15550000010", $put, qr/number: an E\.164 phone number/ ],
        [ "/control/outcomes/$num", { status => 'MAYBE' }, qr/status: one of COMPLETED/ ],
        [ "/control/outcomes/$num", {}, qr/status: one of/ ],
        [ "/control/outcomes/$num", { status => 'BUSY', disposition => 'STOP' }, qr/disposition: \\"OPT_OUT\\" or null/ ],
        [ "/control/outcomes/$num", '{"status":', qr/malformed JSON/ ],
    );
    for my $b (@bad) {
        my $x = req('PUT', $b->[0], $b->[1]);
        is($x->{status}, 400, "bad PUT $b->[0]: 400");
        like($x->{content}, $b->[2], '... saying why');
    }
    is(req('POST', "/control/outcomes/$num", $put)->{status}, 405, 'POST: 405');
    is(req('GET', "/control/outcomes/$num/x")->{status}, 404, 'a longer path: 404');
};

subtest 'outcome shares (--outcomes, --opt-out)' => sub {
    $T->restart_sim('--delay', '0-20ms', '--success-rate', '0', '--outcomes', 'VOICEMAIL:0.5,REJECTED:0.5', '--seed', '5');
    my @refs = map { new_call() . ':1' } 1 .. 40;
    initiate(reference => $_, key => undef) for @refs;
    ok(CallorchTest::wait_until(sub { (grep { $RCV->hooks_for($_) } @refs) == 40 }), '40 webhooks') or return;
    my %seen = map { (($RCV->hooks_for($_))[0]{json}{status} => 1) } @refs;
    is_deeply([ sort keys %seen ], [qw(REJECTED VOICEMAIL)], 'success 0, VOICEMAIL:0.5,REJECTED:0.5: only those two');
    $T->restart_sim('--delay', '0-20ms', '--success-rate', '1', '--opt-out', '1');
    my $ref = new_call() . ':1';
    initiate(reference => $ref, key => undef);
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), 'webhook');
    is(($RCV->hooks_for($ref))[0]{json}{disposition}, 'OPT_OUT', '--opt-out 1: OPT_OUT');
};

subtest 'the reference table is bounded (--max-records)' => sub {
    $T->restart_sim('--delay', '0', '--success-rate', '1', '--max-records', '3');
    my @refs = map { new_call() . ':1' } 1 .. 5;
    for (@refs) {
        initiate(reference => $_, key => undef);
        my $ref = $_;
        CallorchTest::wait_until(sub { $RCV->hooks_for($ref) });
    }
    is(lookup($refs[0], key => undef)->{status}, 404, 'the oldest reference is forgotten');
    is(lookup($refs[4], key => undef)->{status}, 200, 'the newest is known');
    is(stats()->{recordsEvicted}, 2, 'stats: recordsEvicted 2');
};

subtest 'defaults: nothing new happens' => sub {
    $T->restart_sim('--delay', '0', '--seed', '9');
    my $ref = new_call() . ':1';
    my $r = initiate(reference => $ref, key => undef);
    is($r->{status}, 202, 'a start is answered 202');
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), 'webhook');
    is_deeply([ sort keys %{ ($RCV->hooks_for($ref))[0]{json} } ], [qw(callId completedAt durationSec reference status)],
              'the webhook has the keys of DESIGN section 5, no disposition');
    my $s = stats();
    is($s->{$_}, 0, "$_ 0") for qw(lostAnswers slowAnswers badCallIds idempotentReplays startedWhileLive
                                   startedAfterCompleted optOuts);
};

is($T->stop_sim('TERM'), 0, 'SIGTERM: exit 0');
unlike(CallorchTest::slurp("$DIR/sim.log"), qr/level=error|AddressSanitizer|runtime error/, 'no errors in the log');

done_testing;
