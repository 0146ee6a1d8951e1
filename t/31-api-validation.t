#!/usr/bin/perl
# Every validation rule of DESIGN.md section 4, each asserting the status
# code, the problem+json shape and the field blamed in errors[].field: the
# fields of a call, the body as a whole, content type (415), body size
# (413), header block size (431), ids (404), routes (404), methods (405 +
# Allow), chunked bodies (411) and the list query parameters.
#
# No Kafka broker is started, so that dispatch never moves a call the test
# looks at (the daemon runs as in a Kafka outage; creating calls still works).
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64url);
use Test::More;
use Time::HiRes qw(time);
use CallorchTest;

CallorchTest::require_stack();

my $MAX_META = 64;      # [http] max_metadata_bytes
my $MAX_BODY = 2048;    # [http] max_body

my $s = CallorchTest->new;
$s->start_postgres;
$s->start_redis;
$s->migrate;
$s->write_config('http.max_metadata_bytes' => $MAX_META, 'http.max_body' => '2KiB');
$s->start_daemon;

my $UNKNOWN = '00000000-0000-4000-8000-000000000000';

# ------------------------------------------------------------- helpers ---

my $JSON = JSON::PP->new->canonical;

# Check a problem answer: status, content type, type/title/status/detail,
# and (when FIELDS is given) exactly those fields in errors[], each with
# a message.

# POST BODY (a reference, or raw text) to /api/v1/calls expecting a 400
# that blames FIELDS.
sub create_400 {
    my ($body, $fields, $name) = @_;
    my ($st, $b, $h) = $s->api(POST => '/api/v1/calls', $body);
    CallorchTest::problem_ok($st, $b, $h, 400, $name, fields => $fields);
}

sub create_ok {
    my ($body, $name) = @_;
    my ($st, $b) = $s->api(POST => '/api/v1/calls', $body);
    is($st, 201, "$name: 201") or diag explain $b;
    return $b;
}

sub calls_count { return $s->psql('SELECT count(*) FROM calls') }

# ---- raw HTTP, for what HTTP::Tiny will not send


# One request as text; HEADERS is a list of [name, value] in order.
sub raw_text {
    my ($method, $path, $headers, $body) = @_;
    my $t = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    $t .= "$_->[0]: $_->[1]\r\n" for @{ $headers || [] };
    return "$t\r\n" . ($body // '');
}

# Read one response: { status, headers, body, json }, or status 0 and
# error 'eof' / 'timeout'.
# one response from a raw socket (the harness reads it)
sub raw_read { return CallorchTest::raw_read(@_) }

# Send a raw request on a new connection, return the answer.
sub raw {
    my $sock = $s->raw_connect;
    print {$sock} raw_text(@_);
    my $r = raw_read($sock);
    close $sock;
    return $r;
}

my $GOOD = { to => '+15551234567', scriptId => 'welcome' };

# ----------------------------------------------------------------- to ---

my $before = calls_count();
{
    my @bad = (
        [ 'missing +',             '15551234567' ],
        [ 'leading 0',             '+05551234567' ],
        [ '7 digits',              '+1234567' ],
        [ '16 digits',             '+1234567890123456' ],
        [ 'letters',               '+1555CALLME1' ],
        [ 'spaces',                '+1 555 123 4567' ],
        [ 'dashes',                '+1-555-123-4567' ],
        [ 'just +',                '+' ],
        [ 'empty',                 '' ],
        [ 'trailing newline',      "+15551234567\n" ],
        [ 'fullwidth digits',      "+\x{ff11}\x{ff15}\x{ff15}\x{ff15}1234567" ],
        [ 'double +',              '++15551234567' ],
        [ 'number type',           15551234567 ],
        [ 'null',                  undef ],
        [ 'array',                 ['+15551234567'] ],
        [ 'object',                { n => '+15551234567' } ],
        [ 'boolean',               JSON::PP::true ],
    );
    for my $case (@bad) {
        create_400({ to => $case->[1], scriptId => 'welcome' }, ['to'], "to: $case->[0]");
    }
    create_400({ scriptId => 'welcome' }, ['to'], 'to: missing');
    create_ok({ to => '+12345678', scriptId => 'w' }, 'to: 8 digits (the fewest)');
    create_ok({ to => '+123456789012345', scriptId => 'w' }, 'to: 15 digits (the most)');
}

# ----------------------------------------------------------- scriptId ---

{
    my @bad = (
        [ 'empty',          '' ],
        [ '129 characters', 'a' x 129 ],
        [ 'a space',        'wel come' ],
        [ 'a slash',        'a/b' ],
        [ 'non-ASCII',      "caf\x{e9}" ],
        [ 'number type',    42 ],
        [ 'null',           undef ],
        [ 'boolean',        JSON::PP::false ],
        [ 'array',          ['welcome'] ],
    );
    for my $case (@bad) {
        create_400({ to => '+15551234567', scriptId => $case->[1] }, ['scriptId'],
            "scriptId: $case->[0]");
    }
    create_400({ to => '+15551234567' }, ['scriptId'], 'scriptId: missing');
    create_ok({ to => '+15551234567', scriptId => 'a' x 128 }, 'scriptId: 128 characters');
    create_ok({ to => '+15551234567', scriptId => 'a' }, 'scriptId: 1 character');
}

# ----------------------------------------------------------- metadata ---

{
    for my $case ([ 'an array', [ 1, 2 ] ], [ 'a string', 'meta' ], [ 'a number', 5 ],
        [ 'a boolean', JSON::PP::true ]) {
        create_400({ %$GOOD, metadata => $case->[1] }, ['metadata'], "metadata: $case->[0]");
    }
    # {"k":"…"} is 8 bytes around the value, compact.
    my $at_limit = { k => 'x' x ($MAX_META - 8) };
    is(length $JSON->encode($at_limit), $MAX_META, "(a $MAX_META-byte object)");
    create_ok({ %$GOOD, metadata => $at_limit }, "metadata: exactly $MAX_META bytes");
    create_400({ %$GOOD, metadata => { k => 'x' x ($MAX_META - 7) } }, ['metadata'],
        'metadata: one byte over max_metadata_bytes');
    # The limit is on the compact form: whitespace in the request is free.
    my $pretty = JSON::PP->new->canonical->pretty->encode({ %$GOOD, metadata => $at_limit });
    create_ok($pretty, "metadata: $MAX_META bytes compact, more with whitespace");
    # Bytes, not characters: U+00E9 is two bytes in UTF-8.
    my $half = ($MAX_META - 8) / 2;
    create_ok({ %$GOOD, metadata => { k => "\x{e9}" x $half } },
        "metadata: $half two-byte characters = $MAX_META bytes");
    create_400({ %$GOOD, metadata => { k => ("\x{e9}" x $half) . 'x' } }, ['metadata'],
        "metadata: $half two-byte characters and one more byte");
    create_ok({ %$GOOD, metadata => {} }, 'metadata: {}');
}

# --------------------------------------------------- the body as such ---

{
    create_400({ %$GOOD, extra => 1 }, ['extra'], 'unknown field');
    create_400({ %$GOOD, TO => '+15551234567' }, ['TO'], 'field names are case-sensitive');
    create_400({ to => '12', scriptId => '', nope => 1 }, [qw(to scriptId nope)],
        'every bad field is reported, not just the first');
    create_400({}, [qw(to scriptId)], 'empty object: both required fields');
    for my $case (
        [ 'truncated JSON',         '{"to":' ],
        [ 'empty body',             '' ],
        [ 'not JSON',               'to=+15551234567&scriptId=w' ],
        [ 'trailing garbage',       '{"to":"+15551234567","scriptId":"w"} x' ],
        [ 'two objects',            '{"to":"+15551234567","scriptId":"w"}{}' ],
        [ 'a JSON array body',      '[{"to":"+15551234567","scriptId":"w"}]' ],
        [ 'an empty array',         '[]' ],
        [ 'a JSON string body',     '"hello"' ],
        [ 'a JSON number body',     '42' ],
        [ 'null',                   'null' ],
        [ 'duplicate keys',         '{"to":"+15551234567","to":"+15551234568","scriptId":"w"}' ],
        [ 'invalid UTF-8',          qq({"to":"+15551234567","scriptId":"w","metadata":{"k":"\xff\xfe"}}) ],
        # jansson refuses \u0000 in strings (no JSON_ALLOW_NUL): the body is bad
        [ 'an escaped NUL',         '{"to":"+15551234567","scriptId":"a\\u0000b"}' ],
        [ 'single quotes',          q({'to':'+15551234567','scriptId':'w'}) ],
    ) {
        create_400($case->[1], ['body'], "body: $case->[0]");
    }
}
is(calls_count(), $before + 8, 'only the valid requests created calls');

# ---------------------------------------------------------- PATCH body ---

{
    my $c = create_ok($GOOD, 'a call to patch');
    my $path = "/api/v1/calls/$c->{id}";
    my @cases = (
        [ {},                                        ['body'],     'empty object' ],
        [ { to => '12' },                            ['to'],       'bad to' ],
        [ { to => undef },                           ['to'],       'to null' ],
        [ { scriptId => '' },                        ['scriptId'], 'empty scriptId' ],
        [ { metadata => [] },                        ['metadata'], 'metadata an array' ],
        [ { metadata => { k => 'x' x $MAX_META } },  ['metadata'], 'metadata over the limit' ],
        [ { status => 'CANCELLED' },                 ['status'],   'status is not patchable' ],
        [ { id => $UNKNOWN },                        ['id'],       'id is not patchable' ],
        [ '[]',                                      ['body'],     'an array' ],
        [ '{"to":',                                  ['body'],     'malformed JSON' ],
    );
    for my $case (@cases) {
        my ($st, $b, $h) = $s->api(PATCH => $path, $case->[0]);
        CallorchTest::problem_ok($st, $b, $h, 400, "PATCH: $case->[2]", fields => $case->[1]);
    }
    my ($st, $g) = $s->api(GET => $path);
    is_deeply([ @$g{qw(to scriptId status)} ], [ @$c{qw(to scriptId status)} ],
        'the call is unchanged after the refused PATCHes');
}

# ------------------------------------------------------- content type ---

{
    my $body = $JSON->encode($GOOD);
    my $n = calls_count();
    for my $ct ('text/plain', 'application/x-www-form-urlencoded', 'application/jsonp',
        'application/json-patch+json', 'multipart/form-data; boundary=x', 'application/octet-stream') {
        my ($st, $b, $h) = $s->api(POST => '/api/v1/calls', $body, { 'Content-Type' => $ct });
        CallorchTest::problem_ok($st, $b, $h, 415, "Content-Type $ct");
    }
    my $r = raw(POST => '/api/v1/calls', [ [ 'Content-Length', length $body ] ], $body);
    CallorchTest::problem_ok($r->{status}, $r->{json}, $r->{headers}, 415, 'no Content-Type');
    my $c = create_ok($GOOD, 'a call');
    my ($st, $b, $h) = $s->api(PATCH => "/api/v1/calls/$c->{id}", '{"scriptId":"x"}',
        { 'Content-Type' => 'text/plain' });
    CallorchTest::problem_ok($st, $b, $h, 415, 'PATCH with Content-Type text/plain');
    is(calls_count(), $n + 1, 'no call created by a 415');
}

# ---------------------------------------------------------- body size ---

{
    # Exactly max_body: a valid body padded with blanks.
    my $core = $JSON->encode($GOOD);
    my $exact = substr($core, 0, -1) . (' ' x ($MAX_BODY - length $core)) . '}';
    is(length $exact, $MAX_BODY, "(a $MAX_BODY-byte body)");
    create_ok($exact, "body of exactly max_body ($MAX_BODY bytes)");
    my $over = substr($core, 0, -1) . (' ' x ($MAX_BODY + 1 - length $core)) . '}';
    my ($st, $b, $h) = $s->api(POST => '/api/v1/calls', $over);
    CallorchTest::problem_ok($st, $b, $h, 413, 'body one byte over max_body');
    ($st, $b, $h) = $s->api(POST => '/api/v1/calls', '{"to":"' . ('1' x 100_000) . '"}');
    CallorchTest::problem_ok($st, $b, $h, 413, 'a 100 kB body');

    # Refused on the Content-Length alone: the body is never sent.
    my $sock = $s->raw_connect;
    print {$sock} raw_text(POST => '/api/v1/calls',
        [ [ 'Content-Type', 'application/json' ], [ 'Content-Length', 10_000_000 ] ]);
    my $r = raw_read($sock, 10);
    CallorchTest::problem_ok($r->{status}, $r->{json}, $r->{headers}, 413,
        'Content-Length of 10 MB, body not sent');
    is(lc($r->{headers}{connection} // ''), 'close', '413: Connection: close');
    close $sock;

    my $c = create_ok($GOOD, 'a call');
    ($st, $b, $h) = $s->api(PATCH => "/api/v1/calls/$c->{id}", $over);
    CallorchTest::problem_ok($st, $b, $h, 413, 'PATCH body over max_body');
}

# ------------------------------------------------------- header block ---

{
    my $r = raw(GET => '/healthz', [ [ 'X-Pad', 'a' x 17_000 ] ]);
    CallorchTest::problem_ok($r->{status}, $r->{json}, $r->{headers}, 431, 'one 17 kB header');
    $r = raw(GET => '/healthz', [ map { [ "X-Pad-$_", 'b' x 100 ] } 1 .. 200 ]);
    CallorchTest::problem_ok($r->{status}, $r->{json}, $r->{headers}, 431, '200 headers of 100 bytes');
    $r = raw(GET => '/healthz?' . ('q' x 17_000));
    CallorchTest::problem_ok($r->{status}, $r->{json}, $r->{headers}, 431, 'a 17 kB request target');
    $r = raw(GET => '/healthz', [ [ 'X-Pad', 'a' x 15_000 ] ]);
    is($r->{status}, 200, 'a 15 kB header block is served');
}

# ---------------------------------------------------------- bad ids: 404 ---

{
    my $valid = create_ok($GOOD, 'a call')->{id};
    (my $nodash = $valid) =~ tr/-//d;
    my @bad = ('not-a-uuid', '12345', $nodash, "${valid}0", substr($valid, 0, 35),
        'g' . substr($valid, 1), "{$valid}", "$valid%20", '%00');
    for my $id (@bad) {
        my ($st, $b, $h) = $s->api(GET => "/api/v1/calls/$id");
        CallorchTest::problem_ok($st, $b, $h, 404, "GET call '$id'");
    }
    for my $id ('not-a-uuid', $UNKNOWN) {
        my ($st, $b, $h) = $s->api(PATCH => "/api/v1/calls/$id", { scriptId => 'x' });
        CallorchTest::problem_ok($st, $b, $h, 404, "PATCH call '$id'");
        ($st, $b, $h) = $s->api(POST => "/api/v1/calls/$id/cancel");
        CallorchTest::problem_ok($st, $b, $h, 404, "cancel call '$id'");
    }
    my ($st, $b, $h) = $s->api(GET => "/api/v1/calls/$UNKNOWN");
    CallorchTest::problem_ok($st, $b, $h, 404, 'GET a well-formed id of no call');
}

# ------------------------------------------------------ routes: 404 ---

for my $path ('/', '/api', '/api/v1', '/api/v1/', '/api/v1/nope', '/api/v2/calls',
    '/api/v1/calls/', "/api/v1/calls/$UNKNOWN/bogus", "/api/v1/calls/$UNKNOWN/cancel/x",
    "/api/v1/calls/$UNKNOWN/", '/healthz/x', '/API/V1/CALLS', '/metricsx') {
    my ($st, $b, $h) = $s->api(GET => $path);
    CallorchTest::problem_ok($st, $b, $h, 404, "route $path");
}

# ------------------------------------------------------ methods: 405 ---

{
    my %allow = (
        '/api/v1/calls'                   => [qw(GET HEAD POST)],
        "/api/v1/calls/$UNKNOWN"          => [qw(GET HEAD PATCH)],
        "/api/v1/calls/$UNKNOWN/cancel"   => [qw(POST)],
        '/api/v1/metrics'                 => [qw(GET HEAD)],
        '/healthz'                        => [qw(GET HEAD)],
        '/readyz'                         => [qw(GET HEAD)],
    );
    for my $path (sort keys %allow) {
        my %ok = map { $_ => 1 } @{ $allow{$path} };
        for my $method (grep { !$ok{$_} } qw(GET POST PUT PATCH DELETE)) {
            my ($st, $b, $h) = $s->api($method => $path, $method =~ /^P/ ? $GOOD : undef);
            CallorchTest::problem_ok($st, $b, $h, 405, "$method $path");
            is_deeply([ sort split /\s*,\s*/, $h->{allow} // '' ], [ sort @{ $allow{$path} } ],
                "$method $path: Allow lists @{ $allow{$path} }");
        }
    }
}

# ---------------------------------------------------- chunked body: 411 ---

{
    my $body = $JSON->encode($GOOD);
    my $chunked = sprintf("%x\r\n%s\r\n0\r\n\r\n", length $body, $body);
    my $r = raw(POST => '/api/v1/calls',
        [ [ 'Content-Type', 'application/json' ], [ 'Transfer-Encoding', 'chunked' ] ], $chunked);
    CallorchTest::problem_ok($r->{status}, $r->{json}, $r->{headers}, 411, 'chunked body');
}

# ------------------------------------------------------- list query ---

{
    my $b64 = sub { encode_base64url($_[0]) };
    my @cases = (
        [ 'status=BOGUS',                     ['status'] ],
        [ 'status=pending',                   ['status'] ],
        [ 'status=',                          ['status'] ],
        [ 'status=PENDING&status=FAILED',     ['status'] ],
        [ 'pageSize=0',                       ['pageSize'] ],
        [ 'pageSize=101',                     ['pageSize'] ],
        [ 'pageSize=-1',                      ['pageSize'] ],
        [ 'pageSize=ten',                     ['pageSize'] ],
        [ 'pageSize=1e2',                     ['pageSize'] ],
        [ 'pageSize=99999999999999999999',    ['pageSize'] ],
        [ 'page=0',                           ['page'] ],
        [ 'page=x',                           ['page'] ],
        [ 'page=-1',                          ['page'] ],
        [ 'page=1.5',                         ['page'] ],
        [ 'page=99999999999999999999',        ['page'] ],
        [ 'foo=1',                            ['foo'] ],
        [ 'limit=10',                         ['limit'] ],
        [ 'cursor=garbage',                   ['cursor'] ],
        [ 'cursor=' . $b64->("123:$UNKNOWN-x"), ['cursor'] ],
        [ 'cursor=' . $b64->("x:$UNKNOWN"),   ['cursor'] ],
        [ 'cursor=%zz',                       ['cursor'] ],
        [ 'page=1&cursor=' . $b64->("1700000000000000:$UNKNOWN"), ['page'] ],
        [ 'status=BOGUS&pageSize=0&page=x',   [qw(status pageSize page)] ],
    );
    for my $case (@cases) {
        my ($st, $b, $h) = $s->api(GET => "/api/v1/calls?$case->[0]");
        CallorchTest::problem_ok($st, $b, $h, 400, "list ?$case->[0]", fields => $case->[1]);
    }
    my ($st) = $s->api(GET => '/api/v1/calls?cursor=' . $b64->("1700000000000000:$UNKNOWN"));
    is($st, 200, 'a well-formed cursor is accepted');
    ($st) = $s->api(GET => '/api/v1/calls?status=FAILED&pageSize=100&page=3');
    is($st, 200, 'status, pageSize and page together are accepted');
}

is($s->stop_daemon, 0, 'callorchd stops cleanly');
# The API's own errors (a 500 logs "request failed"); the Kafka client in
# the http children complains about the missing broker, on purpose.
my @errors = grep { /level=error/ && /role=(?:http|master)\b/ && !/msg="librdkafka"/ }
    split /\n/, $s->log_text;
is(scalar @errors, 0, 'no errors logged by the http workers or the master') or diag join "\n", @errors;

done_testing;
