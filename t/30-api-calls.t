#!/usr/bin/perl
# The call API's success paths, field by field against DESIGN.md section 4:
# create, get, patch, cancel, list (offset and keyset paging), the JSON
# metrics, /healthz and /readyz; 409 for every non-PENDING status; and
# PATCH racing cancel (and cancel racing cancel) on one call.
#
# Calls are put into IN_PROGRESS, COMPLETED and FAILED with SQL: dispatch is
# not under test here, and must not move a call behind the test's back.  So
# no Kafka broker is started: the daemon runs as in a Kafka outage (DESIGN.md
# section 3, step 1: creating calls still succeeds), nothing is consumed,
# and every call stays where the test put it.
use strict;
use warnings;
use B ();
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time);
use Time::Local qw(timegm);
use CallorchTest;

CallorchTest::require_stack();

my $MAX_ATTEMPTS   = 4;    # not the default 3, so the value is seen to come from the config
my $MAX_CONCURRENT = 7;

my $s = CallorchTest->new;
$s->start_postgres;
$s->start_redis;
$s->migrate;
$s->write_config('dispatch.max_attempts' => $MAX_ATTEMPTS,
    'dispatch.max_concurrent_calls' => $MAX_CONCURRENT);
$s->start_daemon;

my $UUID_RE = qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
my $TS_RE   = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
my @CALL_KEYS = qw(id to scriptId metadata status attempts maxAttempts lastError externalCallId
    nextAttemptAt createdAt updatedAt startedAt endedAt
    timezone timezones callingWindow notBefore expiresAt holdReason campaignId priority);

# ------------------------------------------------------------- helpers ---

# The JSON type of a freshly decoded value (before anything stringified it).
sub json_type {
    my ($v) = @_;
    return 'null' unless defined $v;
    if (ref $v) {
        return ref $v eq 'HASH' ? 'object' : ref $v eq 'ARRAY' ? 'array' : 'boolean';
    }
    my $f = B::svref_2object(\$v)->FLAGS;
    return ($f & (B::SVp_IOK | B::SVp_NOK)) && !($f & B::SVp_POK) ? 'number' : 'string';
}

# RFC 3339 UTC with milliseconds to epoch seconds.
sub ts_epoch {
    my ($ts) = @_;
    my ($y, $mo, $d, $h, $mi, $sec, $ms) = $ts =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z$/
        or return undef;
    return timegm($sec, $mi, $h, $d, $mo - 1, $y) + $ms / 1000;
}

# Check the shape of a call resource: exactly the documented keys (plus
# attemptLog with DETAIL), each of the documented JSON type.  Types first:
# comparing values stringifies them.
sub call_shape_ok {
    my ($c, $name, %o) = @_;
    subtest "$name: call resource shape" => sub {
        is(ref $c, 'HASH', 'a JSON object') or return;
        my @want = sort(@CALL_KEYS, $o{detail} ? 'attemptLog' : ());
        is_deeply([ sort keys %$c ], \@want, 'exactly the documented keys');
        my %types = (id => 'string', to => 'string', scriptId => 'string', metadata => 'object',
            status => 'string', attempts => 'number', maxAttempts => 'number',
            createdAt => 'string', updatedAt => 'string', timezones => 'array',
            priority => 'number',
            $o{detail} ? (attemptLog => 'array') : ());
        for my $k (sort keys %types) {
            is(json_type($c->{$k}), $types{$k}, "$k is a JSON $types{$k}");
        }
        for my $k (qw(lastError externalCallId nextAttemptAt startedAt endedAt
            timezone notBefore expiresAt holdReason campaignId)) {
            like(json_type($c->{$k}), qr/^(?:null|string)$/, "$k is null or a string");
        }
        like(json_type($c->{callingWindow}), qr/^(?:null|object)$/, 'callingWindow is null or an object');
        like($c->{id}, $UUID_RE, 'id is a lowercase UUID');
        like($c->{$_}, $TS_RE, "$_ is RFC 3339 UTC with milliseconds") for qw(createdAt updatedAt);
        for my $k (qw(nextAttemptAt startedAt endedAt)) {
            like($c->{$k}, $TS_RE, "$k, when set, has the same format") if defined $c->{$k};
        }
        like($c->{status}, qr/^(?:PENDING|IN_PROGRESS|COMPLETED|FAILED|CANCELLED|SUPPRESSED|EXPIRED)$/,
            'status is one of the seven');
    };
}

# Check a problem+json answer.


sub create {
    my (%body) = @_;
    $body{to} //= $s->next_phone;
    $body{scriptId} //= 'welcome-flow';
    my ($st, $c, $h) = $s->api(POST => '/api/v1/calls', \%body);
    is($st, 201, "create $body{to}: 201") or diag explain $c;
    return wantarray ? ($c, $h) : $c;
}

# ---- raw HTTP, for requests that must reach the server at the same time


sub raw_text {
    my ($method, $path, $body) = @_;
    my $t = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    $body = JSON::PP->new->canonical->encode($body) if ref $body;
    $body //= '';
    $t .= "Content-Type: application/json\r\n" if length $body;
    return $t . 'Content-Length: ' . length($body) . "\r\n\r\n" . $body;
}

# Read one response from SOCK: { status, headers, body, json }, or
# { status => 0, error => 'eof' | 'timeout' }.
# one response from a raw socket (the harness reads it)
sub raw_read { return CallorchTest::raw_read(@_) }

# Send each [method, path, body] on its own connection, all written before
# any answer is read, so they reach the server together.  Returns the
# answers in the same order.
sub race {
    my (@reqs) = @_;
    my @socks = map { $s->raw_connect } @reqs;
    syswrite($socks[$_], raw_text(@{ $reqs[$_] })) for 0 .. $#reqs;
    my @answers = map { raw_read($_) } @socks;
    close $_ for @socks;
    return @answers;
}

# ------------------------------------------------------------- create ---

my $t_before = time;
my %meta = (campaign => 'fall', nested => { list => [ 1, 'two', undef ], flag => JSON::PP::true },
    unicode => "caf\x{e9} \x{2603}", n => 42);
my ($call, $h) = create(to => '+15551234567', scriptId => 'welcome-flow', metadata => \%meta);
call_shape_ok($call, 'create');
is($h->{location}, "/api/v1/calls/$call->{id}", 'Location names the new call');
like($h->{'content-type'}, qr{^application/json\b}, 'content type application/json');
is($call->{to}, '+15551234567', 'to echoed');
is($call->{scriptId}, 'welcome-flow', 'scriptId echoed');
is_deeply($call->{metadata}, \%meta, 'metadata echoed (nested, unicode, null, boolean)');
is($call->{status}, 'PENDING', 'status PENDING');
is($call->{attempts}, 0, 'attempts 0');
is($call->{maxAttempts}, $MAX_ATTEMPTS, 'maxAttempts = [dispatch] max_attempts');
is($call->{$_}, undef, "$_ null") for qw(lastError externalCallId nextAttemptAt startedAt endedAt);
is($call->{$_}, undef, "$_ null (section 9, none given)")
    for qw(timezone callingWindow notBefore expiresAt holdReason);
is_deeply($call->{timezones}, [], 'timezones [] (+1555 has no zone data)');
is($call->{campaignId}, undef, 'campaignId null (section 10: not a campaign\'s call)');
is($call->{priority}, 5, 'priority 5 by default');
is($call->{updatedAt}, $call->{createdAt}, 'updatedAt = createdAt on creation');
my $created = ts_epoch($call->{createdAt});
ok($created >= $t_before - 120 && $created <= time + 120, 'createdAt is now (UTC)')
    or diag "createdAt $call->{createdAt}, now " . scalar gmtime;
is($s->psql("SELECT count(*) FROM calls WHERE id = '$call->{id}' AND status = 'PENDING'"), 1,
    'the row is in PostgreSQL');

{
    my $c = create(scriptId => 'no-metadata');
    call_shape_ok($c, 'create without metadata');
    is_deeply($c->{metadata}, {}, 'no metadata: {}');
    $c = create(scriptId => 'null-metadata', metadata => undef);
    is_deeply($c->{metadata}, {}, 'metadata null on create: {}');
    $c = create(to => '+12345678', scriptId => 'A-Za-z0-9._:-');
    is($c->{to}, '+12345678', 'shortest E.164 number (8 digits) accepted');
    is($c->{scriptId}, 'A-Za-z0-9._:-', 'every scriptId character class accepted');
    $c = create(to => '+123456789012345', scriptId => 'x' x 128);
    is($c->{to}, '+123456789012345', 'longest E.164 number (15 digits) accepted');
    is(length $c->{scriptId}, 128, '128-character scriptId accepted');
    my ($st, $c2) = $s->api(POST => '/api/v1/calls', '{"to":"+15550000001","scriptId":"ct"}',
        { 'Content-Type' => 'Application/JSON; charset=utf-8' });
    is($st, 201, 'Content-Type with parameters and any case accepted');
    isnt($c2->{id}, $c->{id}, 'each create gets a new id');
}

# ---------------------------------------------------------------- get ---

{
    my ($st, $got, $gh) = $s->api(GET => "/api/v1/calls/$call->{id}");
    is($st, 200, 'GET one: 200');
    like($gh->{'content-type'}, qr{^application/json\b}, 'GET one: application/json');
    call_shape_ok($got, 'GET one', detail => 1);
    is_deeply($got->{attemptLog}, [], 'attemptLog: []');
    my %without = %$got;
    delete $without{attemptLog};
    is_deeply(\%without, $call, 'GET one returns what create returned');
    ($st, my $upper) = $s->api(GET => '/api/v1/calls/' . uc $call->{id});
    is($st, 200, 'GET with the id in upper case: 200');
    is($upper->{id}, $call->{id}, '... the same call, id in canonical lower case');
    ($st, undef, $gh) = $s->api(HEAD => "/api/v1/calls/$call->{id}");
    is($st, 200, 'HEAD one: 200');
}

# -------------------------------------------------------------- patch ---

{
    my $c = create(scriptId => 'before', metadata => { a => 1, keep => 'me' });
    my $id = $c->{id};
    my $new_to = $s->next_phone;

    my ($st, $p) = $s->api(PATCH => "/api/v1/calls/$id", { to => $new_to });
    is($st, 200, 'PATCH to: 200');
    call_shape_ok($p, 'PATCH to');
    is($p->{to}, $new_to, 'PATCH to: changed');
    is($p->{scriptId}, 'before', 'PATCH to: scriptId unchanged');
    is_deeply($p->{metadata}, { a => 1, keep => 'me' }, 'PATCH to: metadata unchanged');
    is($p->{status}, 'PENDING', 'PATCH to: still PENDING');
    is($p->{$_}, $c->{$_}, "PATCH to: $_ unchanged") for qw(id createdAt attempts maxAttempts);
    ok($p->{updatedAt} ge $c->{updatedAt}, 'PATCH to: updatedAt not before the previous one');
    is($s->psql("SELECT updated_at > created_at FROM calls WHERE id = '$id'"), 't',
        'PATCH to: updated_at moved (microseconds, in PostgreSQL)');

    ($st, my $p2) = $s->api(PATCH => "/api/v1/calls/$id", { scriptId => 'after.v2' });
    is($st, 200, 'PATCH scriptId: 200');
    is($p2->{scriptId}, 'after.v2', 'PATCH scriptId: changed');
    is($p2->{to}, $new_to, 'PATCH scriptId: to unchanged');
    is_deeply($p2->{metadata}, { a => 1, keep => 'me' }, 'PATCH scriptId: metadata unchanged');

    ($st, my $p3) = $s->api(PATCH => "/api/v1/calls/$id", { metadata => { b => [ 2 ] } });
    is($st, 200, 'PATCH metadata: 200');
    # The object is replaced as a whole (not merged key by key).
    is_deeply($p3->{metadata}, { b => [ 2 ] }, 'PATCH metadata: replaced');
    is($p3->{to}, $new_to, 'PATCH metadata: to unchanged');
    is($p3->{scriptId}, 'after.v2', 'PATCH metadata: scriptId unchanged');

    ($st, my $p4) = $s->api(PATCH => "/api/v1/calls/$id", { metadata => undef });
    is($st, 200, 'PATCH metadata null: 200');
    is_deeply($p4->{metadata}, {}, 'PATCH metadata null: cleared to {}');
    is($s->psql("SELECT metadata::text FROM calls WHERE id = '$id'"), '{}', '... {} in PostgreSQL');

    my $to3 = $s->next_phone;
    ($st, my $p5) = $s->api(PATCH => "/api/v1/calls/$id",
        { to => $to3, scriptId => 'all-three', metadata => { all => 'three' } });
    is($st, 200, 'PATCH all three fields: 200');
    is($p5->{to}, $to3, 'PATCH all three: to');
    is($p5->{scriptId}, 'all-three', 'PATCH all three: scriptId');
    is_deeply($p5->{metadata}, { all => 'three' }, 'PATCH all three: metadata');

    ($st, my $g) = $s->api(GET => "/api/v1/calls/$id");
    delete $g->{attemptLog};
    is_deeply($g, $p5, 'GET after PATCH returns what PATCH returned');
}

# ------------------------------------------------------------- cancel ---

{
    my $c = create(scriptId => 'to-cancel', metadata => { x => 1 });
    my ($st, $k) = $s->api(POST => "/api/v1/calls/$c->{id}/cancel");
    is($st, 200, 'cancel: 200');
    call_shape_ok($k, 'cancel');
    is($k->{status}, 'CANCELLED', 'cancel: CANCELLED');
    like($k->{endedAt} // '', $TS_RE, 'cancel: endedAt set');
    ok(ts_epoch($k->{endedAt}) >= ts_epoch($c->{createdAt}), 'cancel: endedAt not before createdAt');
    is($k->{nextAttemptAt}, undef, 'cancel: nextAttemptAt null');
    is($k->{$_}, $c->{$_}, "cancel: $_ unchanged") for qw(id to scriptId attempts maxAttempts createdAt);
    is_deeply($k->{metadata}, { x => 1 }, 'cancel: metadata unchanged');
    ($st, my $g) = $s->api(GET => "/api/v1/calls/$c->{id}");
    is($g->{status}, 'CANCELLED', 'GET after cancel: CANCELLED');
    is($g->{endedAt}, $k->{endedAt}, 'GET after cancel: same endedAt');
}

# ------------------------------------- 409 on every non-PENDING status ---

{
    my %sql = (
        IN_PROGRESS => "status = 'IN_PROGRESS', attempts = 1, started_at = now()",
        COMPLETED   => "status = 'COMPLETED', attempts = 1, started_at = now(), ended_at = now(),"
            . " external_call_id = 'ext-' || id",
        FAILED      => "status = 'FAILED', attempts = max_attempts, started_at = now(),"
            . " ended_at = now(), last_error = 'provider said no'",
    );
    for my $status (qw(IN_PROGRESS COMPLETED FAILED CANCELLED)) {
        my $c = create(scriptId => lc $status, metadata => { s => $status });
        my $id = $c->{id};
        if ($sql{$status}) {
            $s->psql("UPDATE calls SET $sql{$status} WHERE id = '$id'");
        } else {
            my ($st) = $s->api(POST => "/api/v1/calls/$id/cancel");
            is($st, 200, 'cancelled through the API');
        }
        my ($st, $b, $hh) = $s->api(PATCH => "/api/v1/calls/$id", { scriptId => 'changed' });
        CallorchTest::problem_ok($st, $b, $hh, 409, "PATCH a $status call");
        like($b->{detail} // '', qr/\b$status\b/, "PATCH a $status call: the detail names the status");
        ($st, $b, $hh) = $s->api(POST => "/api/v1/calls/$id/cancel");
        CallorchTest::problem_ok($st, $b, $hh, 409, "cancel a $status call");
        like($b->{detail} // '', qr/\b$status\b/, "cancel a $status call: the detail names the status");
        ($st, my $g) = $s->api(GET => "/api/v1/calls/$id");
        is($g->{status}, $status, "the $status call kept its status");
        is($g->{scriptId}, lc $status, "the $status call kept its fields");
    }
}

# ------------------------------------------------------------- races ---

{
    my ($patch_won, $rounds) = (0, 20);
    for my $i (1 .. $rounds) {
        my $c = create(scriptId => "race-$i");
        my $to = $s->next_phone;
        my ($pa, $ca) = race([ PATCH => "/api/v1/calls/$c->{id}", { to => $to, scriptId => 'patched' } ],
            [ POST => "/api/v1/calls/$c->{id}/cancel" ]);
        my ($st, $final) = $s->api(GET => "/api/v1/calls/$c->{id}");
        my $ok = $ca->{status} == 200 && $final->{status} eq 'CANCELLED'
            && $ca->{json}{status} eq 'CANCELLED';
        if ($pa->{status} == 200) {
            # PATCH went first: the cancel that followed saw (and kept) its change.
            $patch_won++;
            $ok &&= $pa->{json}{status} eq 'PENDING' && $pa->{json}{to} eq $to
                && $final->{to} eq $to && $final->{scriptId} eq 'patched'
                && $ca->{json}{to} eq $to;
        } else {
            # cancel went first: PATCH refused, the call keeps its fields.
            $ok &&= $pa->{status} == 409 && ($pa->{json}{status} // 0) == 409
                && $final->{to} eq $c->{to} && $final->{scriptId} eq "race-$i"
                && $ca->{json}{to} eq $c->{to};
        }
        ok($ok, "round $i: PATCH $pa->{status}, cancel $ca->{status}; final state agrees")
            or diag explain { patch => $pa, cancel => $ca, final => $final };
    }
    note("PATCH went first in $patch_won of $rounds rounds");

    # Two cancels: exactly one wins.
    for my $i (1 .. $rounds) {
        my $c = create(scriptId => "double-cancel-$i");
        my @a = race(map { [ POST => "/api/v1/calls/$c->{id}/cancel" ] } 1 .. 2);
        my @st = sort map { $_->{status} } @a;
        is("@st", '200 409', "round $i: two concurrent cancels: one 200, one 409");
        my ($winner) = grep { $_->{status} == 200 } @a;
        my ($st, $final) = $s->api(GET => "/api/v1/calls/$c->{id}");
        is($final->{endedAt}, $winner && $winner->{json}{endedAt},
            "round $i: the call ended when the winner says");
    }
}

# --------------------------------------------------------------- list ---

$s->psql('TRUNCATE calls CASCADE');
my @ids;    # oldest first
push @ids, create(scriptId => "list-$_")->{id} for 1 .. 45;
my @newest = reverse @ids;

# Fetch one list page; returns the decoded body (and checks the envelope).
sub list_page {
    my ($query, $name) = @_;
    my ($st, $b, $hh) = $s->api(GET => "/api/v1/calls$query");
    is($st, 200, "$name: 200") or diag explain $b;
    return {} unless $st == 200 && ref $b eq 'HASH';
    my @missing = grep { !exists $b->{$_} } qw(data page pageSize total nextCursor);
    ok(!@missing, "$name: data, page, pageSize, total, nextCursor present") or diag "missing @missing";
    is(json_type($b->{data}), 'array', "$name: data is an array");
    is(json_type($b->{total}), 'number', "$name: total is a number");
    is(json_type($b->{pageSize}), 'number', "$name: pageSize is a number");
    like(json_type($b->{nextCursor}), qr/^(?:null|string)$/, "$name: nextCursor is null or a string");
    return $b;
}

sub ids_of { return [ map { $_->{id} } @{ $_[0]{data} || [] } ] }

{
    my $b = list_page('', 'list, no parameters');
    is($b->{pageSize}, 20, 'default pageSize 20');
    is($b->{page}, 1, 'default page 1');
    is($b->{total}, 45, 'total counts every call');
    is_deeply(ids_of($b), [ @newest[ 0 .. 19 ] ], 'newest first');
    call_shape_ok($b->{data}[0], 'list item');
    ok(defined $b->{nextCursor}, 'a full page has a nextCursor');

    my @paged;
    for my $page (1 .. 3) {
        my $p = list_page("?page=$page", "page $page");
        is($p->{page}, $page, "page $page: page echoed");
        is($p->{total}, 45, "page $page: total 45");
        push @paged, @{ ids_of($p) };
    }
    is_deeply(\@paged, \@newest, 'pages 1..3 of 20 hold all 45, newest first, once each');
    my $p4 = list_page('?page=4', 'page 4');
    is_deeply($p4->{data}, [], 'page 4 is empty');
    is($p4->{total}, 45, 'page 4: total still 45');
    is($p4->{nextCursor}, undef, 'page 4: no nextCursor');

    my $p = list_page('?pageSize=7&page=2', 'pageSize 7, page 2');
    is($p->{pageSize}, 7, 'pageSize echoed');
    is_deeply(ids_of($p), [ @newest[ 7 .. 13 ] ], 'pageSize 7, page 2: items 8..14');
    $p = list_page('?pageSize=100', 'pageSize 100');
    is(scalar @{ $p->{data} }, 45, 'pageSize 100 returns all 45');
    is($p->{nextCursor}, undef, 'a short page has no nextCursor');
    $p = list_page('?pageSize=15&page=3', 'the last page, exactly full');
    is(scalar @{ $p->{data} }, 15, 'the last page is full (45 = 3 x 15)');
    is($p->{nextCursor}, undef, 'an exactly full last page has no nextCursor');
    my ($got, $pages) = walk('?pageSize=15', 'keyset walk, pages of 15');
    is($pages, 3, 'keyset walk in pages of 15: 3 pages, no empty fourth');
}

# Walk QUERY with cursors; returns the ids in order and the page count.
sub walk {
    my ($query, $name, $between) = @_;
    my (@got, $cursor);
    my $pages = 0;
    while (1) {
        my $q = $query . (defined $cursor ? "&cursor=$cursor" : '');
        my $b = list_page($q, "$name, page " . ($pages + 1));
        last unless $b->{data};
        $pages++;
        push @got, @{ ids_of($b) };
        $cursor = $b->{nextCursor};
        last unless defined $cursor;
        $between->() if $between;
        if ($pages > 50) {
            fail("$name: walk does not end");
            last;
        }
    }
    return (\@got, $pages);
}

{
    my ($got, $pages) = walk('?pageSize=10', 'keyset');
    is_deeply($got, \@newest, 'keyset walk of pageSize 10: all 45, newest first, no gap, no duplicate');
    is($pages, 5, 'keyset walk: 5 pages');

    ($got, $pages) = walk('?pageSize=15', 'keyset pageSize 15');
    is_deeply($got, \@newest, 'keyset walk, pageSize dividing the total: all 45 once');
    ok($pages <= 4, 'keyset walk, pageSize 15: at most one empty page at the end');

    # New calls while walking are newer than the cursor: they neither shift
    # nor repeat what the walk sees.
    my $added = 0;
    ($got) = walk('?pageSize=10', 'keyset with inserts',
        sub { create(scriptId => 'added-while-walking') if $added++ < 3 });
    is_deeply($got, \@newest, 'keyset walk with concurrent inserts: the same 45, in order');

    # Statuses for the filter: 5 CANCELLED, 3 COMPLETED, 2 FAILED, 1 IN_PROGRESS.
    my @cancelled = @ids[ 0, 7, 14, 21, 28 ];
    $s->api(POST => "/api/v1/calls/$_/cancel") for @cancelled;
    $s->psql("UPDATE calls SET status = 'COMPLETED', attempts = 1, started_at = now(), "
        . "ended_at = now() WHERE id IN ('" . join("','", @ids[ 1, 2, 3 ]) . "')");
    $s->psql("UPDATE calls SET status = 'FAILED', attempts = max_attempts, ended_at = now() "
        . "WHERE id IN ('$ids[4]', '$ids[5]')");
    $s->psql("UPDATE calls SET status = 'IN_PROGRESS', attempts = 1, started_at = now() "
        . "WHERE id = '$ids[6]'");

    my $b = list_page('?status=CANCELLED', 'status=CANCELLED');
    is($b->{total}, 5, 'status=CANCELLED: total 5');
    is_deeply(ids_of($b), [ reverse @cancelled ], 'status=CANCELLED: exactly those, newest first');
    ok(!(grep { $_->{status} ne 'CANCELLED' } @{ $b->{data} }), 'status=CANCELLED: nothing else');

    my %gone = map { $_ => 1 } @ids[ 0 .. 7, 14, 21, 28 ];
    my @pending = grep { !$gone{$_} } @newest;
    is(scalar @pending, 34, 'PENDING: 34 of the 45 left');
    ($got, $pages) = walk('?status=PENDING&pageSize=6', 'status=PENDING keyset');
    my %added = map { $_ => 1 } split /\n/, $s->psql(
        "SELECT id FROM calls WHERE script_id = 'added-while-walking'");
    is_deeply([ grep { !$added{$_} } @$got ], \@pending,
        'status=PENDING keyset walk: every PENDING call once, newest first');
    is(scalar(grep { $added{$_} } @$got), 3, '... and the 3 added ones');
    is(scalar(grep { $added{$_} } @$got[ 0 .. 2 ]), 3, '... which come first (newest)');
    $b = list_page('?status=EXPIRED', 'status=EXPIRED');
    is($b->{total}, 0, 'status=EXPIRED: accepted, total 0');
    is_deeply($b->{data}, [], 'status=EXPIRED: no call');
    $b = list_page('?status=IN_PROGRESS', 'status=IN_PROGRESS');
    is_deeply(ids_of($b), [ $ids[6] ], 'status=IN_PROGRESS: the one');
    $b = list_page('?status=COMPLETED&pageSize=2', 'status=COMPLETED pageSize 2');
    is($b->{total}, 3, 'status=COMPLETED: total 3 with a smaller page');
    is_deeply(ids_of($b), [ @ids[ 3, 2 ] ], 'status=COMPLETED, pageSize 2: the newest two');

    # ---------------------------------------------------------- metrics
    my ($st, $m, $mh) = $s->api(GET => '/api/v1/metrics');
    is($st, 200, 'metrics: 200');
    like($mh->{'content-type'}, qr{^application/json\b}, 'metrics: application/json');
    is_deeply([ sort keys %$m ],
        [ sort qw(PENDING IN_PROGRESS COMPLETED FAILED CANCELLED SUPPRESSED EXPIRED inFlight maxConcurrent) ],
        'metrics: exactly the documented keys');
    is(json_type($m->{$_}), 'number', "metrics: $_ is a number") for sort keys %$m;
    is_deeply({ map { $_ => $m->{$_} } qw(PENDING IN_PROGRESS COMPLETED FAILED CANCELLED SUPPRESSED EXPIRED) },
        { PENDING => 37, IN_PROGRESS => 1, COMPLETED => 3, FAILED => 2, CANCELLED => 5, SUPPRESSED => 0,
          EXPIRED => 0 },
        'metrics: counts by status');
    my %db = map { split /\|/ } split /\n/, $s->psql('SELECT status, count(*) FROM calls GROUP BY 1');
    is($m->{$_}, $db{$_} // 0, "metrics: $_ agrees with PostgreSQL")
        for qw(PENDING IN_PROGRESS COMPLETED FAILED CANCELLED SUPPRESSED EXPIRED);
    # Slots held in Redis: none is taken without dispatch (the scheduler's
    # rebuild from PostgreSQL may count an IN_PROGRESS row made above).
    ok($m->{inFlight} >= 0 && $m->{inFlight} <= $MAX_CONCURRENT, "metrics: inFlight $m->{inFlight}");
    is($m->{maxConcurrent}, $MAX_CONCURRENT, 'metrics: maxConcurrent = [dispatch] max_concurrent_calls');
}

{
    # pageSize 100 is the most: with more calls than that, one page is 100.
    $s->psql(q{INSERT INTO calls (to_number, script_id, max_attempts, created_at, updated_at)
        SELECT '+1666' || lpad(g::text, 7, '0'), 'bulk', 3, now() - interval '1 day' - g * interval '1 s',
               now() - interval '1 day'
        FROM generate_series(1, 60) g});
    my $b = list_page('?pageSize=100', 'pageSize 100 of 108');
    is(scalar @{ $b->{data} }, 100, 'pageSize 100: 100 items');
    is($b->{total}, 108, 'total 108');
    ok(defined $b->{nextCursor}, 'more to come: nextCursor');
    my $next = list_page("?pageSize=100&cursor=$b->{nextCursor}", 'the page after');
    is(scalar @{ $next->{data} }, 8, 'the rest: 8');
    is($next->{data}[-1]{scriptId}, 'bulk', 'oldest last');
    $b = list_page('', 'no pageSize with 108');
    is(scalar @{ $b->{data} }, 20, 'default page: 20 items');
}

# ------------------------------------------------------ health, ready ---

{
    my ($st, $b, $hh) = $s->api(GET => '/healthz', undef, { Authorization => undef });
    is($st, 200, '/healthz: 200');
    is($b->{status}, 'ok', '/healthz: status ok');
    ($st, $b) = $s->api(GET => '/readyz', undef, { Authorization => undef });
    is($st, 200, '/readyz: 200');
    is($b->{postgres}, 'up', '/readyz: postgres up');
}

is($s->stop_daemon, 0, 'callorchd stops cleanly');
# The API's own errors (a 500 logs "request failed"); the Kafka client in
# the http children complains about the missing broker, on purpose.
my @errors = grep { /level=error/ && /role=(?:http|master)\b/ && !/msg="librdkafka"/ }
    split /\n/, $s->log_text;
is(scalar @errors, 0, 'no errors logged by the http workers or the master') or diag join "\n", @errors;

# Bookkeeping (publishing, parking, the lease token) is not a change a client
# sees: updatedAt stays; a visible change moves it.
{
    my $id = $newest[0];
    my $before = $s->psql("SELECT updated_at FROM calls WHERE id = '$id'");
    $s->psql("UPDATE calls SET published_at = now(), slot_owner = 'x' WHERE id = '$id'");
    is($s->psql("SELECT updated_at FROM calls WHERE id = '$id'"), $before,
        'bookkeeping updates leave updatedAt alone');
    $s->psql("UPDATE calls SET script_id = 'changed' WHERE id = '$id'");
    isnt($s->psql("SELECT updated_at FROM calls WHERE id = '$id'"), $before,
        'a visible change moves updatedAt');
}

done_testing;
