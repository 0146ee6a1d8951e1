#!/usr/bin/perl
# Idempotency-Key (DESIGN.md section 4): a replay answers 200 with the same
# call, another body under the same key 422, concurrent requests with one
# key create one call (also when requests for several keys race in two http
# children), and malformed keys are refused.  Then client authentication
# with two [http] api_keys: 401 (+ WWW-Authenticate) without the right
# Bearer key on every client endpoint, none needed for /healthz and /readyz.
#
# No Kafka broker is started, so that dispatch never moves a call the test
# looks at (the daemon runs as in a Kafka outage; creating calls still works).
use strict;
use warnings;
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use List::Util qw(shuffle);
use POSIX ();
use Test::More;
use Time::HiRes qw(time);
use CallorchTest;

CallorchTest::require_stack();

my @KEYS = ('key-one', 'key-two-0123456789abcdef');

my $s = CallorchTest->new;
$s->start_postgres;
$s->start_redis;
$s->migrate;
$s->write_config('http.api_keys' => join(',', @KEYS));
$s->start_daemon;
my $AUTH = "Bearer $KEYS[0]";

# ------------------------------------------------------------- helpers ---

my $JSON = JSON::PP->new->canonical;


sub post {
    my ($body, $key, %h) = @_;
    $h{'Idempotency-Key'} = $key if defined $key;
    return $s->api(POST => '/api/v1/calls', $body, \%h);
}

sub count { return $s->psql($_[0]) }

# ---- raw HTTP: header bytes HTTP::Tiny would not send, and races


sub raw_post_text {
    my ($body, @headers) = @_;
    my $t = "POST /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: $AUTH\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n";
    $t .= "$_\r\n" for @headers;
    return "$t\r\n$body";
}

# one response from a raw socket (the harness reads it)
sub raw_read { return CallorchTest::raw_read(@_) }

# Each request text on its own connection, all written before any answer
# is read.  Returns the answers in order.
sub raw_race {
    my (@texts) = @_;
    my @socks = map { $s->raw_connect } @texts;
    syswrite($socks[$_], $texts[$_]) for 0 .. $#texts;
    my @answers = map { raw_read($_) } @socks;
    close $_ for @socks;
    return @answers;
}

# N forked clients POST BODY with HEADERS at the same moment (each blocks
# on a pipe until the parent closes it).  Returns [status, decoded body].
my $race_no = 0;
sub forked_posts {
    my ($n, $body, $headers) = @_;
    my $dir = $s->tmpdir . '/race-' . ++$race_no;
    mkdir $dir or die "$dir: $!";
    my $url = $s->base_url . '/api/v1/calls';
    pipe(my $gate_r, my $gate_w) or die "pipe: $!";
    my @pids;
    for my $i (1 .. $n) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            close $gate_w;
            my $ok = eval {
                sysread($gate_r, my $x, 1);    # EOF when the gate opens
                my $r = HTTP::Tiny->new(keep_alive => 0, timeout => 30)->request(POST => $url,
                    { headers => { 'Content-Type' => 'application/json', %$headers },
                      content => $body });
                open my $fh, '>', "$dir/$i.tmp" or die;
                print {$fh} "$r->{status}\n$r->{content}";
                close $fh or die;
                rename "$dir/$i.tmp", "$dir/$i" or die;
                1;
            };
            POSIX::_exit($ok ? 0 : 1);    # never run the parent's END blocks
        }
        push @pids, $pid;
    }
    close $gate_r;
    close $gate_w;    # open the gate
    waitpid($_, 0) for @pids;
    my @res;
    for my $i (1 .. $n) {
        open my $fh, '<', "$dir/$i" or do { push @res, [ 0, "client $i wrote nothing" ]; next };
        local $/;
        my ($st, $content) = split /\n/, <$fh>, 2;
        push @res, [ $st, eval { decode_json($content) } // $content ];
    }
    return @res;
}

# ------------------------------------------------------------- replay ---

my $body = { to => '+15551230001', scriptId => 'welcome', metadata => { a => 1, b => [ 1, 2 ] } };
{
    my ($st, $first, $h) = post($body, 'idem-1');
    is($st, 201, 'first request with a key: 201');
    is($h->{location}, "/api/v1/calls/$first->{id}", '201: Location');

    ($st, my $again) = post($body, 'idem-1');
    is($st, 200, 'same key, same body: 200');
    is_deeply($again, $first, 'same key, same body: the same call, field for field');

    my $reordered = qq(  {\n  "metadata" : { "b" : [1,2], "a" : 1 },\n\t"scriptId":"welcome" ,)
        . qq( "to" : "+15551230001"\n}\n);
    ($st, $again) = post($reordered, 'idem-1');
    is($st, 200, 'same key, same body with keys reordered and whitespace: 200');
    is($again->{id}, $first->{id}, '... the same call');

    ($st, my $p, $h) = post({ %$body, scriptId => 'other' }, 'idem-1');
    CallorchTest::problem_ok($st, $p, $h, 422, 'same key, other scriptId');
    ($st, $p, $h) = post({ %$body, metadata => { a => 2, b => [ 1, 2 ] } }, 'idem-1');
    CallorchTest::problem_ok($st, $p, $h, 422, 'same key, other metadata');
    ($st, $p, $h) = post({ to => $body->{to}, scriptId => 'welcome' }, 'idem-1');
    CallorchTest::problem_ok($st, $p, $h, 422, 'same key, metadata left out');

    is(count("SELECT count(*) FROM calls WHERE to_number = '$body->{to}'"), 1,
        'one call stored for the key');
    is(count("SELECT count(*) FROM idempotency_keys WHERE key = 'idem-1'"), 1, 'one key row');

    ($st, my $other) = post($body, 'idem-2');
    is($st, 201, 'another key, same body: 201');
    isnt($other->{id}, $first->{id}, '... a new call');
    ($st, my $n1) = post($body);
    ($st, my $n2) = post($body);
    isnt($n1->{id}, $n2->{id}, 'no key: every request is a new call');

    # The key stays bound to its call after the call changed.
    $s->api(POST => "/api/v1/calls/$first->{id}/cancel");
    ($st, $again) = post($body, 'idem-1');
    is($st, 200, 'replay after the call was cancelled: 200');
    is($again->{id}, $first->{id}, '... the same call');
    is($again->{status}, 'CANCELLED', '... as it is now');

    # A refused request does not claim the key.
    ($st) = post({ to => 'bad', scriptId => 'welcome' }, 'idem-3');
    is($st, 400, 'invalid body with a new key: 400');
    ($st, my $c3) = post({ to => '+15551230003', scriptId => 'welcome' }, 'idem-3');
    is($st, 201, 'the key is still free afterwards: 201');
}

# --------------------------------------------------------- bad keys ---

{
    my $n = count('SELECT count(*) FROM calls');
    my $good = $JSON->encode({ to => '+15551230010', scriptId => 'keys' });
    my ($st, $b, $h) = post($good, 'k' x 255);
    is($st, 201, 'a 255-character key: 201');
    ($st, $b, $h) = post($good, 'a key/with:all=sorts;of "printable" chars~!');
    is($st, 201, 'a key with spaces and punctuation: 201');

    ($st, $b, $h) = post($good, 'k' x 256);
    CallorchTest::problem_ok($st, $b, $h, 400, 'a 256-character key');
    is_deeply([ map { $_->{field} } @{ $b->{errors} || [] } ], ['Idempotency-Key'],
        '... blames Idempotency-Key');
    for my $case ([ 'a control character', "ab\x01cd" ], [ 'a tab inside', "ab\tcd" ],
        [ 'DEL', "ab\x7fcd" ], [ 'UTF-8 bytes', "cl\xc3\xa9" ], [ 'an escape', "a\x1b[0m" ],
        [ 'empty', '' ]) {
        my $sock = $s->raw_connect;
        print {$sock} raw_post_text($good, "Idempotency-Key: $case->[1]");
        my $r = raw_read($sock);
        close $sock;
        CallorchTest::problem_ok($r->{status}, $r->{json}, $r->{headers}, 400, "a key with $case->[0]");
        # http-parser itself refuses most control characters in a header
        # value (a 400 of the HTTP layer, without errors[]); what reaches
        # the API is refused there, on the field.
        my @fields = map { $_->{field} } @{ $r->{json}{errors} || [] };
        ok(!@fields || "@fields" eq 'Idempotency-Key',
            "a key with $case->[0]: blames Idempotency-Key, if any field")
            or diag explain $r->{json};
    }
    is(count('SELECT count(*) FROM calls'), $n + 2, 'only the two valid keys created calls');
}

# --------------------------------------------------- concurrent: one key ---

for my $round (1 .. 3) {
    my $key = "concurrent-$round";
    my $calls = count('SELECT count(*) FROM calls');
    my $b = $JSON->encode({ to => sprintf('+1555124%04d', $round), scriptId => 'race' });
    my @res = forked_posts(20, $b, { 'Idempotency-Key' => $key, Authorization => $AUTH });
    my %st;
    $st{ $_->[0] }++ for @res;
    is(join(',', map { "$_=$st{$_}" } sort keys %st), '200=19,201=1',
        "round $round, 20 forked clients, one key: one 201, nineteen 200");
    my %ids = map { (ref $_->[1] ? $_->[1]{id} // '?' : '?') => 1 } @res;
    is(scalar keys %ids, 1, "round $round: every answer carries the same call") or diag explain \%ids;
    is(count('SELECT count(*) FROM calls'), $calls + 1, "round $round: exactly one call created");
    is(count("SELECT count(*) FROM idempotency_keys WHERE key = '$key'"), 1,
        "round $round: one key row");
}

{
    # The same through 20 connections written at once (they tend to land
    # in one batch of one child, which must hold back all but one).
    my $key = 'concurrent-raw';
    my $calls = count('SELECT count(*) FROM calls');
    my $text = raw_post_text($JSON->encode({ to => '+15551249999', scriptId => 'race' }),
        "Idempotency-Key: $key");
    my @res = raw_race(($text) x 20);
    my %st;
    $st{ $_->{status} }++ for @res;
    is(join(',', map { "$_=$st{$_}" } sort keys %st), '200=19,201=1',
        '20 connections at once, one key: one 201, nineteen 200');
    my %ids = map { ($_->{json}{id} // '?') => 1 } @res;
    is(scalar keys %ids, 1, 'every answer carries the same call');
    is(count('SELECT count(*) FROM calls'), $calls + 1, 'exactly one call created');
}

# ---------------------------------------- concurrent: several keys ---

{
    # Ten keys, four requests each, shuffled over 40 connections: the two
    # http children's batches hold the same keys in different orders, which
    # must neither deadlock (500) nor create a second call for a key.
    my (%st, $bad);
    my $calls = count('SELECT count(*) FROM calls');
    for my $round (1 .. 10) {
        my @reqs = shuffle map { my $k = $_; map { [ "multi-$round-$k", $k ] } 1 .. 4 } 0 .. 9;
        my @texts = map {
            raw_post_text($JSON->encode({ to => sprintf('+1555125%02d%02d', $round, $_->[1]),
                scriptId => 'multi' }), "Idempotency-Key: $_->[0]")
        } @reqs;
        my @res = raw_race(@texts);
        my %by_key;
        for my $i (0 .. $#res) {
            $st{ $res[$i]{status} }++;
            push @{ $by_key{ $reqs[$i][0] } }, $res[$i];
        }
        for my $key (sort keys %by_key) {
            my @r = @{ $by_key{$key} };
            my $created = grep { $_->{status} == 201 } @r;
            my %ids = map { ($_->{json}{id} // '?') => 1 } @r;
            next if $created == 1 && keys %ids == 1 && !(grep { $_->{status} !~ /^20[01]$/ } @r);
            $bad++;
            diag explain [ map { [ $_->{status}, $_->{json} ] } @r ] if $bad <= 2;
        }
    }
    is(join(',', map { "$_=$st{$_}" } sort keys %st), '200=300,201=100',
        '10 rounds of 10 keys x 4 racing requests: 100 created, 300 replayed, nothing else');
    ok(!$bad, 'per key: exactly one 201, every answer with the same call');
    is(count('SELECT count(*) FROM calls'), $calls + 100, '100 calls stored');
    is(count("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'multi-%'"), 100, '100 key rows');
}

# --------------------------------------------------------------- auth ---

{
    my (undef, $c) = post({ to => "+15551239000", scriptId => "auth" });
    my $id = $c->{id};
    my $n = count('SELECT count(*) FROM calls');
    my $json = { to => '+15551239001', scriptId => 'auth' };

    # Every client endpoint wants a key.
    my @endpoints = (
        [ POST  => '/api/v1/calls',            $json ],
        [ GET   => '/api/v1/calls' ],
        [ GET   => "/api/v1/calls/$id" ],
        [ PATCH => "/api/v1/calls/$id",        { scriptId => 'changed' } ],
        [ POST  => "/api/v1/calls/$id/cancel" ],
        [ GET   => '/api/v1/metrics' ],
    );
    for my $e (@endpoints) {
        my ($m, $path, $b) = @$e;
        my ($st, $p, $h) = $s->api($m, $path, $b, { Authorization => undef });
        CallorchTest::problem_ok($st, $p, $h, 401, "$m $path without Authorization");
        like($h->{'www-authenticate'} // '', qr/^Bearer\b/, "$m $path: WWW-Authenticate: Bearer");
        ($st, $p, $h) = $s->api($m, $path, $b, { Authorization => 'Bearer wrong-key' });
        CallorchTest::problem_ok($st, $p, $h, 401, "$m $path with a wrong key");
        like($h->{'www-authenticate'} // '', qr/^Bearer\b/, "$m $path, wrong key: WWW-Authenticate");
    }
    my ($st, $g) = $s->api(GET => "/api/v1/calls/$id");
    is_deeply([ $g->{status}, $g->{scriptId} ], [ 'PENDING', 'auth' ],
        'the refused PATCH and cancel changed nothing');
    is(count('SELECT count(*) FROM calls'), $n, 'the refused POSTs created nothing');

    my @refused = ('Bearer', 'Bearer ', 'Bearer  ', $KEYS[0], "Basic $KEYS[0]",
        'Basic a2V5LW9uZQ==', "Token $KEYS[0]", "Bearer $KEYS[0] $KEYS[1]",
        "Bearer $KEYS[0],$KEYS[1]", 'Bearer key-on', 'Bearer key-one2', 'Bearer KEY-ONE',
        "Bearer$KEYS[0]", "Bearer \"$KEYS[0]\"", "Bearer $KEYS[0]x");
    for my $a (@refused) {
        my ($st, $p, $h) = $s->api(GET => '/api/v1/metrics', undef, { Authorization => $a });
        is($st, 401, "Authorization: '$a' refused");
    }
    for my $i (0 .. $#KEYS) {
        for my $a ("Bearer $KEYS[$i]", "bearer $KEYS[$i]", "BEARER  $KEYS[$i] ") {
            my ($st) = $s->api(GET => '/api/v1/metrics', undef, { Authorization => $a });
            is($st, 200, "key " . ($i + 1) . ": Authorization: '$a' accepted");
        }
        my ($st, $made) = $s->api(POST => '/api/v1/calls',
            { to => sprintf('+155512390%02d', 10 + $i), scriptId => 'auth' },
            { Authorization => "Bearer $KEYS[$i]" });
        is($st, 201, 'key ' . ($i + 1) . ': create 201');
        ($st) = $s->api(GET => "/api/v1/calls/$made->{id}", undef,
            { Authorization => "Bearer $KEYS[$i]" });
        is($st, 200, 'key ' . ($i + 1) . ': get 200');
        ($st) = $s->api(PATCH => "/api/v1/calls/$made->{id}", { scriptId => 'k' },
            { Authorization => "Bearer $KEYS[$i]" });
        is($st, 200, 'key ' . ($i + 1) . ': patch 200');
        ($st) = $s->api(POST => "/api/v1/calls/$made->{id}/cancel", undef,
            { Authorization => "Bearer $KEYS[$i]" });
        is($st, 200, 'key ' . ($i + 1) . ': cancel 200');
        ($st) = $s->api(GET => '/api/v1/calls?pageSize=1', undef,
            { Authorization => "Bearer $KEYS[$i]" });
        is($st, 200, 'key ' . ($i + 1) . ': list 200');
    }

    # Authentication comes before anything the body could reveal.
    ($st, my $p, my $h) = $s->api(POST => '/api/v1/calls', 'not json',
        { Authorization => undef, 'Content-Type' => 'text/plain' });
    is($st, 401, 'no key, wrong content type and bad body: 401 first');
    ($st) = $s->api(POST => '/api/v1/calls', { to => 'x' }, { Authorization => undef });
    is($st, 401, 'no key and an invalid body: 401, not 400');

    for my $path ('/healthz', '/readyz') {
        ($st) = $s->api(GET => $path, undef, { Authorization => undef });
        is($st, 200, "$path without a key: 200");
        ($st) = $s->api(GET => $path, undef, { Authorization => 'Bearer wrong-key' });
        is($st, 200, "$path with a wrong key: 200 (not checked)");
    }
}

is($s->stop_daemon, 0, 'callorchd stops cleanly');
# The API's own errors (a 500 logs "request failed"); the Kafka client in
# the http children complains about the missing broker, on purpose.
my @errors = grep { /level=error/ && /role=(?:http|master)\b/ && !/msg="librdkafka"/ }
    split /\n/, $s->log_text;
is(scalar @errors, 0, 'no errors logged by the http workers or the master') or diag join "\n", @errors;

done_testing;
