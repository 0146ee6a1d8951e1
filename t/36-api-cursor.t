#!/usr/bin/perl
# GET /api/v1/calls?cursor= with a forged cursor (DESIGN.md section 4; issue
# 9 item 4): a cursor that does not decode to a valid position is a 400
# problem naming the field "cursor", never a 500 and never an error in the
# log.  Regression: a well-formed cursor carrying a time near INT64_MAX
# reached PostgreSQL, whose timestamp arithmetic failed ("out of range"):
# 500 and a level=error line.  Real cursors still page, up to the last
# microsecond a cursor may carry (year 9999).
#
# No Kafka broker: nothing dispatches the calls the test lists.
use strict;
use warnings;
use JSON::PP;
use MIME::Base64 qw(encode_base64url);
use Test::More;
use CallorchTest;

CallorchTest::require_stack();

my $s = CallorchTest->new;
$s->start_postgres;
$s->start_redis;
$s->migrate;
$s->write_config;
$s->start_daemon;

my $ID = '00000000-0000-4000-8000-000000000000';
my $b64 = sub { my $t = encode_base64url($_[0]); $t =~ s/=+$//; $t };

for my $i (1 .. 3) {
    my ($st) = $s->api(POST => '/api/v1/calls', { to => "+1555360000$i", scriptId => 'cursor' });
    is($st, 201, "call $i created");
}

# A 400 problem whose errors[] blame exactly "cursor".
sub cursor_400 {
    my ($cursor, $name) = @_;
    my ($st, $b, $h) = $s->api(GET => "/api/v1/calls?pageSize=2&cursor=$cursor");
    subtest "$name: 400 naming cursor" => sub {
        is($st, 400, 'status 400') or diag explain $b;
        like($h->{'content-type'} // '', qr{^application/problem\+json\b}, 'problem+json');
        is(ref $b, 'HASH', 'a JSON object') or return;
        is($b->{status}, 400, 'status member');
        is_deeply([ map { $_->{field} } @{ $b->{errors} || [] } ], ['cursor'], 'errors[].field is cursor');
    };
}

cursor_400($b64->("9223372036854775807:$ID"), 'INT64_MAX microseconds');
cursor_400($b64->("9223372036854775000:$ID"), 'a time just below INT64_MAX');
cursor_400($b64->("9999999999999999999:$ID"), 'a time above INT64_MAX');
cursor_400($b64->("253402300800000000:$ID"), 'the first microsecond of year 10000');
cursor_400($b64->("300000000000000000:$ID"), 'a time past what PostgreSQL can represent');
cursor_400($b64->("-1:$ID"), 'a negative time');
cursor_400($b64->("-9223372036854775808:$ID"), 'INT64_MIN');
cursor_400($b64->("1700000000000000:not-a-uuid"), 'a bad id');
cursor_400('%00%01garbage', 'garbage bytes');
cursor_400('!!!!', 'not base64');
cursor_400(encode_base64url("1700000000000000:$ID") . '==', 'padded base64');
cursor_400('A', 'one base64 character');

# Valid positions still page.
my ($st, $b) = $s->api(GET => "/api/v1/calls?pageSize=2&cursor=" . $b64->("253402300799999999:$ID"));
is($st, 200, 'the last microsecond of year 9999 is a valid cursor') or diag explain $b;
is(scalar @{ $b->{data} || [] }, 2, '... and pages from the newest call');
($st, $b) = $s->api(GET => '/api/v1/calls?pageSize=2');
is($st, 200, 'first page');
ok(defined $b->{nextCursor}, '... with a nextCursor');
($st, my $next) = $s->api(GET => "/api/v1/calls?pageSize=2&cursor=$b->{nextCursor}");
is($st, 200, 'the nextCursor the daemon gave is accepted');
is(scalar @{ $next->{data} || [] }, 1, '... and holds the last call');

is($s->stop_daemon, 0, 'callorchd stops cleanly');
my @errors = grep { /level=error/ && /role=(?:http|master)\b/ && !/msg="librdkafka"/ }
    split /\n/, $s->log_text;
is(scalar @errors, 0, 'no errors logged by the http workers or the master') or diag join "\n", @errors;

done_testing;
