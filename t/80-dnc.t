#!/usr/bin/perl
# The do-not-call list of DESIGN.md section 9: PUT, GET, DELETE
# /api/v1/dnc/{e164}, the keyset-paged list, the CSV import (valid,
# existing, invalid and quoted lines, a header, blank lines, 100 000 lines
# in one request within 5 s), every error (400 naming the field, 401, 404,
# 405 + Allow, 413, 415), and the 422 naming "to" that a create or a PATCH
# of a call to a listed number gets — for that request only in a batch,
# with idempotent replays unchanged — until the number is removed.
#
# No Kafka broker is started: nothing dispatches the calls made here.
use strict;
use warnings;
use utf8;
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use Test::More;
use Time::HiRes qw(time);
use CallorchTest;

CallorchTest::require_stack();

my $KEY = 'dnc-test-key-0123456789';
my $s = CallorchTest->new;
$s->start_postgres;
$s->start_redis;
$s->migrate;
$s->write_config('http.api_keys' => $KEY, 'http.max_body' => '8MiB');
$s->start_daemon;

my $TS_RE = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

sub problem_ok { CallorchTest::problem_ok(@_) }

sub csv {
    my ($text, %h) = @_;
    return $s->api(POST => '/api/v1/dnc/import', $text,
        { 'Content-Type' => 'text/csv', %h });
}

sub message_of {
    my ($b, $field) = @_;
    my ($e) = grep { $_->{field} eq $field } @{ $b->{errors} || [] };
    return $e ? $e->{message} : '';
}

# ------------------------------------------------------------- PUT / GET ---

my $A = '+15550001001';
my ($st, $b, $h) = $s->api(PUT => "/api/v1/dnc/$A", { reason => 'asked by phone' });
is($st, 201, 'PUT a new number: 201') or diag explain $b;
is_deeply([ sort keys %$b ], [qw(createdAt number reason source)], 'the entry has the documented keys');
is($b->{number}, $A, 'number');
is($b->{reason}, 'asked by phone', 'reason');
is($b->{source}, 'api', 'source api');
like($b->{createdAt}, $TS_RE, 'createdAt RFC 3339 UTC');
my $created = $b->{createdAt};

($st, $b) = $s->api(PUT => "/api/v1/dnc/$A", { reason => 'another reason' });
is($st, 200, 'PUT again: 200 (already listed)');
is($b->{reason}, 'asked by phone', 'the stored entry is unchanged');
is($b->{createdAt}, $created, 'same createdAt');

($st, $b) = $s->api(GET => "/api/v1/dnc/$A");
is($st, 200, 'GET: 200');
is_deeply($b, { number => $A, reason => 'asked by phone', source => 'api', createdAt => $created },
    'GET returns the entry');

($st, $b) = $s->api(GET => '/api/v1/dnc/%2B15550001001');
is($st, 200, "GET with '+' sent as %2B: 200");
is($b->{number}, $A, '... the same entry');

# no body at all, and a null reason
($st, $b) = $s->api(PUT => '/api/v1/dnc/+15550001002');
is($st, 201, 'PUT without a body: 201');
is($b->{reason}, undef, 'reason null');
($st, $b) = $s->api(PUT => '/api/v1/dnc/+15550001003', { reason => undef });
is($st, 201, 'PUT {"reason":null}: 201');
($st, $b) = $s->api(PUT => '/api/v1/dnc/+15550001004', {});
is($st, 201, 'PUT {}: 201');
my $long = 'é' x 500;
($st, $b) = $s->api(PUT => '/api/v1/dnc/+15550001005', { reason => $long });
is($st, 201, 'PUT with a 500-character reason: 201');
is($b->{reason}, $long, '... stored whole (characters, not bytes)');

($st, $b, $h) = $s->api(GET => '/api/v1/dnc/+15559999999');
problem_ok($st, $b, $h, 404, 'GET an unlisted number');
like($b->{detail}, qr/\+15559999999 is not on the do-not-call list/, '404 detail names the number');

# ------------------------------------------------------------- PUT errors ---

for my $bad ('15550001001', '+05550001001', '+1555', '+1555000100112345', '+1555abc0001',
             'import2', '%2B1') {
    ($st, $b, $h) = $s->api(GET => "/api/v1/dnc/$bad");
    problem_ok($st, $b, $h, 400, "GET /api/v1/dnc/$bad", fields => ['number']);
    like(message_of($b, 'number'), qr/E\.164/, '... the message says E.164');
}
($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/555', {});
problem_ok($st, $b, $h, 400, 'PUT a non-E.164 number', fields => ['number']);
($st, $b, $h) = $s->api(DELETE => '/api/v1/dnc/555');
problem_ok($st, $b, $h, 400, 'DELETE a non-E.164 number', fields => ['number']);

($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/+15550002001', { reason => 'x', color => 'red' });
problem_ok($st, $b, $h, 400, 'PUT with an unknown field', fields => ['color']);
is(message_of($b, 'color'), 'unknown field', '... "unknown field"');
($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/+15550002001', { reason => 42 });
problem_ok($st, $b, $h, 400, 'PUT reason a number', fields => ['reason']);
is(message_of($b, 'reason'), 'must be a string or null', '... its message');
($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/+15550002001', { reason => [] });
problem_ok($st, $b, $h, 400, 'PUT reason an array', fields => ['reason']);
($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/+15550002001', { reason => 'x' x 501 });
problem_ok($st, $b, $h, 400, 'PUT reason of 501 characters', fields => ['reason']);
is(message_of($b, 'reason'), 'must be at most 500 characters', '... its message');
($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/+15550002001', '{"reason":');
problem_ok($st, $b, $h, 400, 'PUT malformed JSON', fields => ['body']);
($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/+15550002001', '["reason"]');
problem_ok($st, $b, $h, 400, 'PUT a JSON array', fields => ['body']);
($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/+15550002001', '{"reason":"a","reason":"b"}');
problem_ok($st, $b, $h, 400, 'PUT a duplicate member', fields => ['body']);
($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/+15550002001', 'reason=x',
    { 'Content-Type' => 'application/x-www-form-urlencoded' });
problem_ok($st, $b, $h, 415, 'PUT a non-JSON body');
like($b->{detail}, qr{application/json}, '... detail names application/json');
($st, $b) = $s->api(GET => '/api/v1/dnc/+15550002001');
is($st, 404, 'none of the refused PUTs listed the number');

# -------------------------------------------------- auth, methods, routes ---

($st, $b, $h) = $s->api(GET => "/api/v1/dnc/$A", undef, { Authorization => undef });
problem_ok($st, $b, $h, 401, 'GET without a key');
($st, $b, $h) = $s->api(PUT => '/api/v1/dnc/+15550002002', {}, { Authorization => 'Bearer wrong' });
problem_ok($st, $b, $h, 401, 'PUT with a wrong key');
($st, $b, $h) = $s->api(GET => '/api/v1/dnc', undef, { Authorization => undef });
problem_ok($st, $b, $h, 401, 'list without a key');
($st, $b, $h) = csv("+15550002003\n", Authorization => undef);
problem_ok($st, $b, $h, 401, 'import without a key');
($st, $b) = $s->api(GET => '/api/v1/dnc/+15550002003');
is($st, 404, '... which listed nothing');

for my $c ([ POST => "/api/v1/dnc/$A", 'GET, HEAD, PUT, DELETE' ],
           [ PATCH => "/api/v1/dnc/$A", 'GET, HEAD, PUT, DELETE' ],
           [ DELETE => '/api/v1/dnc', 'GET, HEAD' ],
           [ POST => '/api/v1/dnc', 'GET, HEAD' ],
           [ GET => '/api/v1/dnc/import', 'POST' ],
           [ PUT => '/api/v1/dnc/import', 'POST' ]) {
    my ($m, $p, $allow) = @$c;
    ($st, $b, $h) = $s->api($m => $p, $m eq 'GET' || $m eq 'DELETE' ? undef : '{}');
    problem_ok($st, $b, $h, 405, "$m $p");
    is($h->{allow}, $allow, "... Allow: $allow");
}
($st, $b, $h) = $s->api(GET => "/api/v1/dnc/$A/more");
problem_ok($st, $b, $h, 404, 'a deeper path');
($st, $b, $h) = $s->api(GET => '/api/v1/dnc/');
problem_ok($st, $b, $h, 404, 'an empty number segment');

# ------------------------------------------------------------------ DELETE ---

($st, $b, $h) = $s->api(DELETE => '/api/v1/dnc/+15550001002');
is($st, 204, 'DELETE a listed number: 204');
is($b // '', '', '... no body');
($st, $b, $h) = $s->api(DELETE => '/api/v1/dnc/+15550001002');
problem_ok($st, $b, $h, 404, 'DELETE it again');
($st, $b) = $s->api(GET => '/api/v1/dnc/+15550001002');
is($st, 404, 'GET after DELETE: 404');

# ------------------------------------------------------------------- list ---

$s->psql('DELETE FROM dnc');
my @numbers = map { sprintf '+1555100%04d', $_ } 1 .. 25;
for my $n (reverse @numbers) {
    ($st) = $s->api(PUT => "/api/v1/dnc/$n", { reason => "r$n" });
    is($st, 201, "PUT $n") if $n eq $numbers[0];
}
my (@seen, $cursor, $pages);
do {
    my $q = '?pageSize=10' . (defined $cursor ? "&cursor=$cursor" : '');
    ($st, $b) = $s->api(GET => "/api/v1/dnc$q");
    is($st, 200, "list page $q: 200") or last;
    is_deeply([ sort keys %$b ], [qw(data nextCursor)], '... {data, nextCursor}');
    push @seen, map { $_->{number} } @{ $b->{data} };
    $cursor = $b->{nextCursor};
    $pages++;
} while (defined $cursor && $pages < 10);
is($pages, 3, 'three pages of 10, 10, 5');
is_deeply(\@seen, \@numbers, 'every number once, by number ascending');
is_deeply([ sort keys %{ (do { ($st, $b) = $s->api(GET => '/api/v1/dnc?pageSize=1'); $b })->{data}[0] } ],
    [qw(createdAt number reason source)], 'list entries are whole entries');
unlike($b->{nextCursor}, qr/[^0-9]/, 'the cursor needs no escaping');

($st, $b) = $s->api(GET => '/api/v1/dnc');
is(scalar @{ $b->{data} }, 20, 'default page size 20');
($st, $b) = $s->api(GET => '/api/v1/dnc?pageSize=25');
is(scalar @{ $b->{data} }, 25, 'a page holding exactly every entry');
is($b->{nextCursor}, undef, '... has no next cursor');

for my $c ([ 'pageSize=0', 'pageSize' ], [ 'pageSize=101', 'pageSize' ], [ 'pageSize=x', 'pageSize' ],
           [ 'cursor=abc', 'cursor' ], [ 'cursor=0123', 'cursor' ], [ 'cursor=%2B15551000001', 'cursor' ],
           [ 'page=2', 'page' ], [ 'pageSize=5&pageSize=6', 'pageSize' ], [ 'cursor=', 'cursor' ],
           [ 'pageSize=', 'pageSize' ]) {
    ($st, $b, $h) = $s->api(GET => "/api/v1/dnc?$c->[0]");
    problem_ok($st, $b, $h, 400, "list ?$c->[0]", fields => [ $c->[1] ]);
}
my %lmsg = ('pageSize=0' => [ pageSize => qr/^must be an integer from 1 to 100$/ ],
    'cursor=abc' => [ cursor => qr/^is not a cursor of this list/ ],
    'page=2' => [ page => qr/^unknown query parameter$/ ],
    'pageSize=5&pageSize=6' => [ pageSize => qr/^repeated parameter$/ ],
    'cursor=' => [ cursor => qr/^must not be empty$/ ]);
for my $q (sort keys %lmsg) {
    ($st, $b) = $s->api(GET => "/api/v1/dnc?$q");
    like(message_of($b, $lmsg{$q}[0]), $lmsg{$q}[1], "?$q: message");
}

# ----------------------------------------------------------------- import ---

$s->psql('DELETE FROM dnc');
$s->api(PUT => '/api/v1/dnc/+15552000002', { reason => 'listed before' });
my $file = join '', map { "$_\n" }
    'number,reason',             # 1 header
    '+15552000001,moved away',   # 2 added
    '+15552000002,again',        # 3 existing (listed before)
    '',                          # 4 blank
    '  +15552000003  ',          # 5 added, no reason, trimmed
    'not-a-number,x',            # 6 invalid
    '+15552000004,said "stop"',  # 7 quoted: refused
    '"+15552000005",x',          # 8 quoted: refused
    '+15552000006,a, b, c',      # 9 added, reason with commas
    '+15552000001,dup in file',  # 10 existing (earlier line)
    '   ',                       # 11 blank
    '+15552000007,' . ('y' x 501), # 12 reason too long
    ',reason only',              # 13 invalid number
    "+15552000008,bad \x01 control"; # 14 control character
($st, $b, $h) = csv($file . "+15552000009,crlf\r\n+15552000010");
is($st, 200, 'import: 200') or diag explain $b;
is_deeply([ sort keys %$b ], [qw(added existing invalid)], '{added, existing, invalid}');
is($b->{added}, 5, 'added: lines 2, 5, 9, 15 (CRLF) and 16 (no final newline)');
is($b->{existing}, 2, 'existing: listed before, and a number twice in the file');
is_deeply([ map { $_->{line} } @{ $b->{invalid} } ], [ 6, 7, 8, 12, 13, 14 ], 'invalid lines');
my %msg = map { $_->{line} => $_->{message} } @{ $b->{invalid} };
like($msg{6}, qr/number must be an E\.164 number/, 'line 6: E.164');
like($msg{7}, qr/quoted fields are not supported/, 'line 7: quoted fields refused');
like($msg{8}, qr/quoted fields are not supported/, 'line 8: quoted fields refused');
like($msg{12}, qr/longer than 500 characters/, 'line 12: reason too long');
like($msg{13}, qr/E\.164/, 'line 13: no number');
like($msg{14}, qr/control characters/, 'line 14: control character');
($st, $b) = $s->api(GET => '/api/v1/dnc/+15552000006');
is_deeply([ @$b{qw(reason source)} ], [ 'a, b, c', 'import' ], 'reason with commas, source import');
($st, $b) = $s->api(GET => '/api/v1/dnc/+15552000003');
is($b->{reason}, undef, 'no reason: null');
($st, $b) = $s->api(GET => '/api/v1/dnc/+15552000002');
is($b->{reason}, 'listed before', 'an existing entry is not changed by an import');
($st, $b) = $s->api(GET => '/api/v1/dnc/+15552000009');
is($b->{reason}, 'crlf', 'CRLF line ends');

($st, $b) = csv(join '', map { "bad$_\n" } 1 .. 1500);
is(scalar @{ $b->{invalid} }, 1000, 'at most 1000 invalid lines are listed');
is($b->{invalidNotListed}, 500, '... "invalidNotListed" counts the rest');
is($b->{invalid}[-1]{line}, 1000, '... the first 1000');
($st, $b) = csv('');
is_deeply($b, { added => 0, existing => 0, invalid => [] }, 'an empty file');
($st, $b) = csv("number\n+15552000011\n", 'Content-Type' => 'text/csv; charset=utf-8');
is_deeply($b, { added => 1, existing => 0, invalid => [] }, 'header "number", charset parameter');

($st, $b) = csv("\xef\xbb\xbfnumber,reason\n+15552000013,back\\slash {brace} \xc3\xa9\n");
is_deeply($b, { added => 1, existing => 0, invalid => [] }, 'a byte order mark before the header');
($st, $b) = $s->api(GET => '/api/v1/dnc/+15552000013');
is($b->{reason}, "back\\slash {brace} \x{e9}", 'backslash, braces and UTF-8 in a reason kept');
($st, $b, $h) = csv("+15552000012\n", 'Content-Type' => 'application/json');
problem_ok($st, $b, $h, 415, 'import as application/json');
like($b->{detail}, qr{text/csv}, '... detail names text/csv');
($st, $b, $h) = csv("+15552000012\n", 'Content-Type' => 'text/plain');
problem_ok($st, $b, $h, 415, 'import as text/plain');
{
    # refused on the Content-Length alone: the body is never sent
    my $sock = $s->raw_connect;
    print {$sock} "POST /api/v1/dnc/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $KEY\r\n"
        . "Content-Type: text/csv\r\nContent-Length: " . (8 * 1024 * 1024 + 1) . "\r\n\r\n";
    my $r = CallorchTest::raw_read($sock, 10);
    problem_ok($r->{status}, $r->{json}, $r->{headers}, 413, 'import over [http] max_body (8 MiB)');
    close $sock;
}
($st, $b) = $s->api(GET => '/api/v1/dnc/+15552000012');
is($st, 404, 'refused imports listed nothing');

# 100 000 lines in one request
my $big = join '', map { sprintf "+1777%07d,bulk %d\n", $_, $_ } 1 .. 100_000;
my $t0 = time;
($st, $b) = csv($big);
my $took = time - $t0;
is($st, 200, 'import of 100 000 lines: 200');
is($b->{added}, 100_000, '... all added');
ok($took <= 5, sprintf('... in %.2f s (<= 5 s)', $took));
diag(sprintf 'import of 100 000 lines (%d bytes): %.2f s', length $big, $took);
$t0 = time;
($st, $b) = csv($big);
diag(sprintf 'the same 100 000 lines again (all existing): %.2f s', time - $t0);
is_deeply([ @$b{qw(added existing)} ], [ 0, 100_000 ], 'again: all existing');
is($s->psql("SELECT count(*) FROM dnc WHERE source = 'import' AND number LIKE '+1777%'"), 100_000,
    '100 000 rows stored');

# -------------------------------------------------- calls to listed numbers ---

my $L = '+15553000001';
$s->api(PUT => "/api/v1/dnc/$L", { reason => 'no calls' });
my $calls_before = $s->psql('SELECT count(*) FROM calls');
($st, $b, $h) = $s->api(POST => '/api/v1/calls', { to => $L, scriptId => 's1' });
problem_ok($st, $b, $h, 422, 'create a call to a listed number', fields => ['to']);
is($b->{errors}[0]{field}, 'to', 'errors[0].field = "to"');
like($b->{errors}[0]{message}, qr/do-not-call list/, '... the message says why');
($st, $b, $h) = $s->api(POST => '/api/v1/calls', { to => $L, scriptId => 's1' },
    { 'Idempotency-Key' => 'dnc-k1' });
problem_ok($st, $b, $h, 422, '... with an Idempotency-Key', fields => ['to']);
is($s->psql('SELECT count(*) FROM calls'), $calls_before, 'no call stored');
is($s->psql("SELECT count(*) FROM idempotency_keys WHERE key = 'dnc-k1'"), 0, 'no key stored');

my $U = '+15553000002';
($st, $b) = $s->api(POST => '/api/v1/calls', { to => $U, scriptId => 's1' },
    { 'Idempotency-Key' => 'dnc-k2' });
is($st, 201, 'a call to an unlisted number: 201');
my $call = $b;

# a batch: concurrent creates, half of them to the listed number
{
    my @pids;
    my $dir = $s->tmpdir;
    for my $i (1 .. 16) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            $s->{http} = HTTP::Tiny->new(timeout => 30);
            my ($cst) = $s->api(POST => '/api/v1/calls',
                { to => $i % 2 ? $L : sprintf('+155530010%02d', $i), scriptId => 's1' });
            open my $fh, '>', "$dir/batch.$i" or die; print $fh $cst; close $fh;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    waitpid $_, 0 for @pids;
    my %by = map { my $i = $_; ($i => CallorchTest::slurp("$dir/batch.$i")) } 1 .. 16;
    is_deeply([ map { $by{$_} } grep { $_ % 2 } 1 .. 16 ], [ (422) x 8 ], 'in a batch: the listed ones 422');
    is_deeply([ map { $by{$_} } grep { !($_ % 2) } 1 .. 16 ], [ (201) x 8 ], '... the others 201');
}

# one statement holding both: the function answers 'D' for the listed one only
is($s->psql(qq{SELECT string_agg(r_ord || r_outcome, ',' ORDER BY r_ord) FROM intake_calls('[
    {"ord":0,"id":"00000000-0000-4000-8000-0000000000a0","to_number":"$L","script_id":"s","req_hash":"00"},
    {"ord":1,"id":"00000000-0000-4000-8000-0000000000a1","to_number":"+15553001999","script_id":"s","req_hash":"00"},
    {"ord":2,"id":"00000000-0000-4000-8000-0000000000a2","to_number":"$L","script_id":"s","req_hash":"00","idem_key":"dnc-k3"}]', 3)}),
    '0D,1C,2D', 'intake_calls(): one batch, the listed requests D, the other C');
is($s->psql("SELECT count(*) FROM calls WHERE id::text LIKE '00000000-0000-4000-8000-0000000000a%'"), 1,
    '... only the unlisted one stored');

# PATCH `to` onto a listed number
($st, $b, $h) = $s->api(PATCH => "/api/v1/calls/$call->{id}", { to => $L });
problem_ok($st, $b, $h, 422, 'PATCH to a listed number', fields => ['to']);
($st, $b) = $s->api(GET => "/api/v1/calls/$call->{id}");
is($b->{to}, $U, '... the call is unchanged');
($st, $b) = $s->api(PATCH => "/api/v1/calls/$call->{id}", { scriptId => 's2' });
is($st, 200, 'PATCH of other fields still works');
($st, $b) = $s->api(PATCH => "/api/v1/calls/$call->{id}", { to => '+15553000003' });
is($st, 200, 'PATCH to an unlisted number: 200');

# the number of an existing call is listed later: an idempotent replay stays a replay
my $body = { to => $U, scriptId => 's1' };
$s->api(PUT => "/api/v1/dnc/$U");
($st, $b) = $s->api(POST => '/api/v1/calls', $body, { 'Idempotency-Key' => 'dnc-k2' });
is($st, 200, 'same key and body after the number was listed: 200 (the replay)');
is($b->{id}, $call->{id}, '... the same call');
($st, $b, $h) = $s->api(POST => '/api/v1/calls', { to => $U, scriptId => 'other' },
    { 'Idempotency-Key' => 'dnc-k2' });
problem_ok($st, $b, $h, 422, 'same key, other body', fields => ['Idempotency-Key']);

# removing the number lets calls be created again
($st) = $s->api(DELETE => "/api/v1/dnc/$L");
is($st, 204, 'DELETE the listed number');
($st, $b) = $s->api(POST => '/api/v1/calls', { to => $L, scriptId => 's1' },
    { 'Idempotency-Key' => 'dnc-k1' });
is($st, 201, 'create to it after removal: 201');
is($b->{to}, $L, '... to that number');
($st, $b) = $s->api(PATCH => "/api/v1/calls/$call->{id}", { to => $L });
is($st, 200, 'PATCH to it after removal: 200');

done_testing;
