#!/usr/bin/perl
# callorch-provider-sim over real HTTP, without callorchd: initiations,
# signed webhooks to a receiver (t/lib/CallorchReceiver.pm: it records each
# request as one JSON line; /hook → 200, /fail/N → 503 for the first N
# requests to that path, then 200, /status/CODE → always CODE), the fault
# knobs, /stats and the command line.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(decode_base64 encode_base64);
use Test::More;
use Time::HiRes qw(time sleep);

use CallorchReceiver;
use CallorchTest;

my $BIN = CallorchTest::builddir() . '/src/callorch-provider-sim';
plan(skip_all => "$BIN is not built") unless -x $BIN;

# No stack: a directory (removed at the end unless CALLORCH_TEST_LEAVE),
# the receiver, and the simulator, started and stopped by CallorchTest
# ($T->restart_sim(ARGS): the stack's --secret first, a later one wins, on
# the same port each time).
my $T      = CallorchTest->new;
my $DIR    = $T->tmpdir;
my $SECRET = CallorchTest::callback_secret();
my $KEY    = CallorchTest::callback_key();
my $JSON   = JSON::PP->new->utf8->canonical;
my $HTTP   = HTTP::Tiny->new(keep_alive => 0, timeout => 10);
my $RCV    = CallorchReceiver->start("$DIR/hooks.jsonl");
my $RECV   = $RCV->url;

# --------------------------------------------------------------- the sim ---

my $N = 0;
sub new_ref { return sprintf('%08x-0000-4000-8000-%012x:1', $$, ++$N) }

# POST /api/v1/calls; returns the HTTP::Tiny response with {json}.
sub initiate {
    my (%o) = @_;
    my $body = exists $o{raw} ? $o{raw} : $JSON->encode({
        to => $o{to} // '+15551230000', scriptId => 'welcome', metadata => { k => 'v' },
        webhookUrl => $RECV . ($o{path} // '/hook'), reference => $o{reference} // new_ref(),
    });
    my %h = ('Content-Type' => 'application/json');
    $h{Authorization} = "Bearer $o{key}" if defined $o{key};
    my $ua = $o{ua} // $HTTP;
    my $r = $ua->request('POST', "${\ $T->sim_url }/api/v1/calls", { headers => \%h, content => $body });
    $r->{json} = eval { $JSON->decode($r->{content}) };
    return $r;
}

# GET /stats, retried for a few seconds; a simulator that stays silent ends
# the script with its log shown (a dead sim makes every later check moot).
sub stats {
    my $r;
    for (1 .. 5) {
        $r = $HTTP->get("${\ $T->sim_url }/stats");
        my $j = $r->{status} == 200 ? eval { $JSON->decode($r->{content}) } : undef;
        return $j if ref $j eq 'HASH';
        sleep 1;
    }
    diag("GET /stats answered $r->{status}: $r->{content}");
    diag("simulator log:\n" . CallorchTest::slurp("$DIR/sim.log"));
    BAIL_OUT('callorch-provider-sim stopped answering /stats');
}

sub signature_ok {
    my ($h) = @_;
    my $hd = $h->{headers};
    my $want = 'v1,' . encode_base64(hmac_sha256("$hd->{'webhook-id'}.$hd->{'webhook-timestamp'}.$h->{body}", $KEY), '');
    return grep { $_ eq $want } split / /, $hd->{'webhook-signature'} // '';
}

# ------------------------------------------------------------ the tests ---

subtest 'command line' => sub {
    my $run = sub { my $out = `$BIN @_ 2>&1`; return ($? >> 8, $out) };
    my ($rc, $out) = $run->('--help');
    is($rc, 0, '--help exits 0');
    like($out, qr/--$_\b/, "--help documents --$_")
        for qw(listen secret api-key callback-auth delay success-rate fail-5xx fail-429 hang
               duplicate early drop seed webhook-retries webhook-timeout);
    ($rc, $out) = $run->('--version');
    like($out, qr/^callorch-provider-sim \d+\.\d+/, '--version');
    ($rc, $out) = $run->();
    is($rc, 2, 'no --secret: exit 2');
    like($out, qr/--secret is required/, '... and says so');
    for my $bad (['--success-rate', '2'], ['--hang', 'x'], ['--delay', '5s-1s'], ['--delay', '1fortnight'],
                 ['--callback-auth', 'none'], ['--seed', '-1'], ['--nosuch']) {
        ($rc, $out) = $run->('--secret', $SECRET, @$bad);
        is($rc, 2, "@$bad: exit 2");
    }
    ($rc, $out) = $run->('--secret', 'whsec_!!', '--listen', '127.0.0.1:' . CallorchTest::free_port());
    is($rc, 1, 'bad whsec secret: exit 1');
    my $busy = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, Proto => 'tcp');
    ($rc, $out) = $run->('--secret', $SECRET, '--listen', '127.0.0.1:' . $busy->sockport);
    is($rc, 1, 'address in use: exit 1');
    like($out, qr/Address already in use/, '... and says so');
};

$T->restart_sim('--delay', '0-50ms', '--api-key', 'k1', '--success-rate', '1', '--seed', '7');

subtest 'endpoints, auth and validation' => sub {
    is($HTTP->get("${\ $T->sim_url }/healthz")->{status}, 200, 'GET /healthz: 200');
    is($HTTP->get("${\ $T->sim_url }/nosuch")->{status}, 404, 'unknown path: 404');
    my $r = $HTTP->get("${\ $T->sim_url }/api/v1/calls");
    is($r->{status}, 405, 'GET /api/v1/calls: 405');
    is($r->{headers}{allow}, 'POST', '... with Allow: POST');
    is(initiate()->{status}, 401, 'no Authorization: 401');
    is(initiate(key => 'wrong')->{status}, 401, 'wrong key: 401');
    is(initiate(key => 'k1', raw => '{"to":')->{status}, 400, 'malformed JSON: 400');
    is(initiate(key => 'k1', raw => '[1]')->{status}, 400, 'not an object: 400');
    my %good = (to => '+15551230000', scriptId => 's', webhookUrl => "$RECV/hook", reference => new_ref());
    for my $case ([to => '12345'], [scriptId => ''], [webhookUrl => 'ftp://x/'], [reference => undef],
                  [metadata => 'str']) {
        my %b = (%good, $case->[0] => $case->[1]);
        delete $b{ $case->[0] } unless defined $case->[1];
        is(initiate(key => 'k1', raw => $JSON->encode(\%b))->{status}, 400, "bad $case->[0]: 400");
    }
    my $s = stats();
    is($s->{unauthorized}, 2, 'stats: unauthorized');
    is($s->{badRequests}, 7, 'stats: badRequests');
    is($s->{started}, 0, 'stats: nothing started');
};

subtest 'a call and its signed webhook' => sub {
    my $ref = new_ref();
    my $r = initiate(key => 'k1', reference => $ref, to => '+15557654321');
    is($r->{status}, 202, 'initiation: 202');
    like($r->{json}{callId} // '', qr/^sim-\S+$/, 'callId');
    is($r->{json}{status}, 'INITIATED', 'status INITIATED');
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), 'webhook received') or return;
    my ($h) = $RCV->hooks_for($ref);
    my $hd = $h->{headers};
    is($h->{path}, '/hook', 'POSTed to webhookUrl');
    like($hd->{'content-type'}, qr{^application/json}, 'Content-Type');
    like($hd->{'webhook-id'} // '', qr/^\S+$/, 'webhook-id');
    ok(abs(($hd->{'webhook-timestamp'} // 0) - time) < 10, 'webhook-timestamp is now');
    ok(signature_ok($h), 'webhook-signature verifies (HMAC-SHA256 with the whsec_ key)');
    is_deeply([ sort keys %{ $h->{json} } ], [qw(callId completedAt durationSec reference status)],
        'body fields');
    is($h->{json}{callId}, $r->{json}{callId}, 'callId matches the 202');
    is($h->{json}{status}, 'COMPLETED', 'status (success rate 1)');
    like($h->{json}{durationSec}, qr/^\d+$/, 'durationSec is an integer');
    like($h->{json}{completedAt}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'completedAt RFC 3339 UTC');
    ok(CallorchTest::wait_until(sub { stats()->{inProgress} == 0 }), 'inProgress back to 0');
    my $s = stats();
    is($s->{started}, 1, 'stats: started');
    is($s->{webhooksSent}, 1, 'stats: webhooksSent');
    is($s->{byStatus}{COMPLETED}, 1, 'stats: byStatus');
    is($s->{maxInProgress}, 1, 'stats: maxInProgress');
    is($s->{duplicateStarts}, 0, 'stats: no duplicate start');

    is(initiate(key => 'k1', reference => $ref)->{status}, 202, 'same reference again: 202');
    is(stats()->{duplicateStarts}, 1, 'stats: duplicateStarts counts it');
    is(initiate(key => 'k1', reference => 'not-a-reference')->{status}, 202, 'malformed reference: accepted');
    is(stats()->{badReferences}, 1, 'stats: badReferences counts it');
    CallorchTest::wait_until(sub { stats()->{inProgress} == 0 });
};

subtest 'webhook retries and failures' => sub {
    my $ref = new_ref();
    is(initiate(key => 'k1', reference => $ref, path => '/fail/2')->{status}, 202, 'initiation');
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) >= 3 }), 'two 503s, then delivered');
    my @h = $RCV->hooks_for($ref);
    is(scalar(@h), 3, 'three attempts, no more');
    is(scalar(keys %{{ map { $_->{headers}{'webhook-id'} => 1 } @h }}), 1, 'one webhook-id for all attempts');
    ok(!grep({ !signature_ok($_) } @h), 'every attempt is signed');
    my $ref2 = new_ref();
    initiate(key => 'k1', reference => $ref2, path => '/status/404');
    ok(CallorchTest::wait_until(sub { stats()->{webhookFailures} == 1 }), 'a 404 is a failure');
    sleep 0.5;
    is(scalar($RCV->hooks_for($ref2)), 1, '... not retried');
    my $s = stats();
    is($s->{webhookRetries}, 2, 'stats: webhookRetries');
};

subtest 'overlapping calls, per phone, reset' => sub {
    $T->restart_sim('--delay', '400ms', '--seed', '1');
    is(stats()->{maxInProgress}, 0, 'fresh stats');
    my @refs;
    for my $to (('+15550000001') x 3, ('+15550000002') x 2) {
        push @refs, new_ref();
        is(initiate(reference => $refs[-1], to => $to)->{status}, 202, "started a call to $to");
    }
    my $s = stats();
    is($s->{inProgress}, 5, 'inProgress while they run');
    ok(CallorchTest::wait_until(sub { stats()->{inProgress} == 0 }, 5), 'all ended');
    $s = stats();
    is($s->{maxInProgress}, 5, 'maxInProgress');
    is($s->{maxPerPhone}, 3, 'maxPerPhone');
    ok(CallorchTest::wait_until(sub { stats()->{webhooksSent} == 5 }), 'five webhooks');

    my $r = $HTTP->post("${\ $T->sim_url }/stats/reset");
    is($r->{status}, 200, 'POST /stats/reset: 200');
    $s = stats();
    is($s->{$_}, 0, "reset: $_ is 0") for qw(started maxInProgress maxPerPhone webhooksSent);

    for (1 .. 2) {    # one after the other, to the same phone
        my $ref = new_ref();
        initiate(reference => $ref, to => '+15550000001');
        CallorchTest::wait_until(sub { $RCV->hooks_for($ref) });
    }
    $s = stats();
    is($s->{maxPerPhone}, 1, 'sequential calls: maxPerPhone 1');
    is($s->{maxInProgress}, 1, 'sequential calls: maxInProgress 1');
    is(initiate(reference => $refs[0])->{status}, 202, 'a reference from before the reset');
    is(stats()->{duplicateStarts}, 1, '... is still a duplicate start');
};

subtest 'outcomes spread and --seed' => sub {
    my $run = sub {
        $T->restart_sim('--delay', '0', '--success-rate', '0', '--seed', '42');
        my @st;
        for (1 .. 12) {
            my $ref = new_ref();
            initiate(reference => $ref);
            CallorchTest::wait_until(sub { $RCV->hooks_for($ref) });
            push @st, ($RCV->hooks_for($ref))[0]{json}{status};
        }
        return @st;
    };
    my @a = $run->();
    my %seen = map { $_ => 1 } @a;
    is_deeply([ sort keys %seen ], [qw(BUSY FAILED NO_ANSWER)], 'success rate 0: FAILED, BUSY and NO_ANSWER');
    my @b = $run->();
    is_deeply(\@b, \@a, 'same seed, same outcomes');
};

subtest '--fail-5xx and --fail-429' => sub {
    $T->restart_sim('--delay', '0', '--fail-5xx', '1');
    my $ref = new_ref();
    is(initiate(reference => $ref)->{status}, 503, '--fail-5xx 1: 503') for 1 .. 2;
    is(stats()->{rejected}{'5xx'}, 2, 'stats: rejected.5xx');
    is(stats()->{started}, 0, 'nothing started');
    $T->restart_sim('--delay', '0', '--fail-429', '1');
    my $r = initiate();
    is($r->{status}, 429, '--fail-429 1: 429');
    is($r->{headers}{'retry-after'}, '1', '... with Retry-After: 1');
    is(stats()->{rejected}{429}, 1, 'stats: rejected.429');
    sleep 0.2;
    is(scalar($RCV->hooks_for($ref)), 0, 'no webhook for refused initiations');
};

subtest '--hang' => sub {
    $T->restart_sim('--delay', '0', '--hang', '1');
    my $t0 = time;
    my $r = initiate(ua => HTTP::Tiny->new(timeout => 1));
    is($r->{status}, 599, 'no answer (client timeout)');
    ok(time - $t0 >= 0.9, '... the connection stayed open');
    is(stats()->{rejected}{hang}, 1, 'stats: rejected.hang');
    is(stats()->{inProgress}, 0, 'not in progress');
    is($T->stop_sim, 0, 'SIGTERM with a hanging request held: exit 0');
};

subtest '--early' => sub {
    $T->restart_sim('--delay', '10s', '--early', '1');
    my $ref = new_ref();
    my $r = initiate(reference => $ref);
    my @h = $RCV->hooks_for($ref);    # read at once, before anything else can arrive
    is($r->{status}, 202, 'initiation answered 202');
    is(scalar(@h), 1, 'the webhook was delivered before the 202');
    is($h[0]{json}{callId}, $r->{json}{callId}, '... for this call');
    is(stats()->{early}, 1, 'stats: early');
};

subtest '--duplicate' => sub {
    $T->restart_sim('--delay', '0-20ms', '--duplicate', '1');
    my $ref = new_ref();
    initiate(reference => $ref);
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) == 2 }), 'two webhooks');
    sleep 0.2;
    my @h = $RCV->hooks_for($ref);
    is(scalar(@h), 2, 'exactly two');
    is($h[1]{body}, $h[0]{body}, 'same body');
    is($h[1]{headers}{$_}, $h[0]{headers}{$_}, "same $_") for qw(webhook-id webhook-timestamp webhook-signature);
    my $s = stats();
    is($s->{webhooksSent}, 2, 'stats: webhooksSent counts both');
    is($s->{duplicated}, 1, 'stats: duplicated');
    is($s->{byStatus}{COMPLETED} + $s->{byStatus}{FAILED} + $s->{byStatus}{BUSY} + $s->{byStatus}{NO_ANSWER}, 1,
        'stats: byStatus counts the call once');
};

subtest '--drop' => sub {
    $T->restart_sim('--delay', '0-20ms', '--drop', '1');
    my $ref = new_ref();
    is(initiate(reference => $ref)->{status}, 202, 'initiation answered 202');
    ok(CallorchTest::wait_until(sub { stats()->{dropped} == 1 }), 'stats: dropped');
    sleep 0.3;
    is(scalar($RCV->hooks_for($ref)), 0, 'no webhook');
    is(stats()->{inProgress}, 0, 'the call is no longer in progress');
    is(stats()->{webhooksSent}, 0, 'stats: webhooksSent 0');
};

subtest '--callback-auth api-key' => sub {
    $T->restart_sim('--delay', '0', '--callback-auth', 'api-key', '--secret', 'tok-1, tok-2');
    my $ref = new_ref();
    initiate(reference => $ref);
    ok(CallorchTest::wait_until(sub { $RCV->hooks_for($ref) }), 'webhook received') or return;
    my ($h) = $RCV->hooks_for($ref);
    is($h->{headers}{'x-api-key'}, 'tok-1', 'X-Api-Key: the first token');
    ok(!exists $h->{headers}{'webhook-signature'}, 'no signature');
};

# POST each of BODIES to /api/v1/calls over one connection, pipelined in
# batches (HTTP::Tiny writes header and body separately, and Nagle plus
# delayed ACKs would cost 40 ms a request); returns the statuses.
sub initiate_pipelined {
    my (@bodies) = @_;
    my $port = $T->provider_port;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
        or die "connect: $!";
    my (@status, $buf);
    $buf = '';
    while (my @batch = splice @bodies, 0, 50) {
        syswrite($s, join '', map {
            "POST /api/v1/calls HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            . 'Content-Length: ' . length($_) . "\r\n\r\n$_" } @batch);
        for (@batch) {
            while ($buf !~ /\A(HTTP\/1\.1 (\d+)[^\r]*\r\n.*?\r\n\r\n)/s
                   || length($buf) < length($1) + ($1 =~ /Content-Length: (\d+)/i ? $1 : 0)) {
                sysread($s, $buf, 65536, length $buf) or die "read: $!";
            }
            $buf =~ /\A(HTTP\/1\.1 (\d+)[^\r]*\r\n.*?\r\n\r\n)/s;
            my ($head, $code) = ($1, $2);
            my $len = $head =~ /Content-Length: (\d+)/i ? $1 : 0;
            substr($buf, 0, length($head) + $len) = '';
            push @status, $code;
        }
    }
    return @status;
}

subtest 'many calls at once' => sub {
    $T->restart_sim('--delay', '300-600ms', '--seed', '3');
    my $n = 1000;
    my @bodies = map {
        $JSON->encode({ to => sprintf('+1555%07d', $_ % 50), scriptId => 's', webhookUrl => "$RECV/hook",
                        reference => new_ref() })
    } 1 .. $n;
    my @st = initiate_pipelined(@bodies);
    is(scalar(grep { $_ == 202 } @st), $n, "$n initiations accepted (pipelined on one connection)");
    my $s = stats();
    ok($s->{maxInProgress} > $n / 2, "many in progress at once ($s->{maxInProgress})");
    is($s->{maxPerPhone}, $n / 50, 'all at once: maxPerPhone is the calls per phone')
        if $s->{maxInProgress} == $n;    # else the first ended before the last started
    ok(CallorchTest::wait_until(sub { stats()->{webhooksSent} == $n }, 20), 'all webhooks delivered');
    $s = stats();
    is($s->{inProgress}, 0, 'none in progress');
    is($s->{webhookFailures}, 0, 'no failures');
    is($s->{duplicateStarts}, 0, 'no duplicate starts');
    is($T->stop_sim('INT'), 0, 'SIGINT: exit 0');
};

$T->restart_sim('--delay', '0');
is($T->stop_sim('TERM'), 0, 'SIGTERM: exit 0');
unlike(CallorchTest::slurp("$DIR/sim.log"), qr/level=error|AddressSanitizer|runtime error/, 'no errors in the log');

done_testing;
