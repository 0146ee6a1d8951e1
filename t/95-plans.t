#!/usr/bin/perl
# The statements that change one call by its id find it by the primary key,
# whatever the statistics say: never by reading a partial index of the
# PENDING or IN_PROGRESS calls whole and filtering on the id.
#
# The trap (sql/021_published_index.sql, sql/022_by_id_updates.sql): those
# statements also say "status = 'PENDING'" (or 'IN_PROGRESS'), which makes
# every index WHERE status = 'PENDING' a candidate.  Statistics taken when few calls were PENDING make reading such
# an index whole look as cheap as the primary key, and PL/pgSQL keeps that as
# the connection's generic plan, which then walks the whole backlog for each
# start.  This test builds those statistics, forces generic plans, and reads
# the plans that auto_explain reports for the dispatcher's updates of one
# call: start_attempt(), suppress_if_listed(), hold_call(), the expiry at
# load and the park, record_attempt_call_id(), and settle_attempt() through
# apply_webhook().
use strict;
use warnings;
use Test::More;
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new;
$s->start_postgres;
$s->migrate;

# 3 000 calls that are not PENDING when the statistics are taken, then a
# backlog of 3 000 PENDING calls that they do not know about.
$s->psql(q{INSERT INTO calls (to_number, script_id, max_attempts)
           SELECT '+1555' || lpad(i::text, 7, '0'), 's', 3 FROM generate_series(1, 3000) i});
$s->psql(q{UPDATE calls SET status = 'CANCELLED', ended_at = now()});
$s->psql('VACUUM ANALYZE calls');
$s->psql(q{INSERT INTO calls (to_number, script_id, max_attempts)
           SELECT '+1556' || lpad(i::text, 7, '0'), 's', 3 FROM generate_series(1, 3000) i});
$s->psql(q{INSERT INTO dnc (number, source) VALUES ('+15560000009', 'api')});
is($s->psql(q{SELECT count(*) FROM calls WHERE status = 'PENDING'}), 3000, 'a backlog of 3000');

my @ids = split /\n/, $s->psql(q{SELECT id || ' ' || to_number FROM calls
                                  WHERE status = 'PENDING' ORDER BY to_number LIMIT 16});
# park and expire are the statements PARK_SQL and EXPIRE_SQL of
# src/store/attempts.c, word for word.
my @run;
for my $n (0 .. $#ids) {
    my ($id, $to) = split / /, $ids[$n];
    push @run, "EXECUTE park('$id');",
        $n < 12 ? "SELECT * FROM start_attempt('$id', 1, '$to', 'owner-$id');"
      : $n < 14 ? "SELECT hold_call('$id', 1, now() + interval '1 hour', 'window');"
      :           "EXECUTE expire('$id', 1);";
}
# Then the provider's side for the first eight: its call id, and the webhook
# that settles the attempt (a busy line for two of them: a retry).
for my $n (0 .. 7) {
    my ($id) = split / /, $ids[$n];
    push @run, "SELECT record_attempt_call_id('$id', 1, 'ext-$id', true);",
        "SELECT result FROM apply_webhook('wh-$id', '$id', 1, 'ext-$id', '"
        . ($n < 6 ? 'COMPLETED' : 'BUSY') . "', 1000, 60000);";
}
my $out = $s->psql(join "\n",
    q{LOAD 'auto_explain';},
    q{SET auto_explain.log_min_duration = 0;},
    q{SET auto_explain.log_nested_statements = on;},
    q{SET auto_explain.log_level = notice;},
    q{SET plan_cache_mode = force_generic_plan;},
    q{PREPARE park(uuid) AS UPDATE calls SET published_at = NULL}
        . q{ WHERE id = $1 AND status IS NOT DISTINCT FROM 'PENDING';},
    q{PREPARE expire(uuid, int) AS UPDATE calls SET status = 'EXPIRED', ended_at = now(),}
        . q{ next_attempt_at = NULL, published_at = NULL, hold_reason = NULL,}
        . q{ last_error = 'expired before it could be completed'}
        . q{ WHERE id = $1 AND status IS NOT DISTINCT FROM 'PENDING' AND attempts = $2::int - 1}
        . q{ AND expires_at <= now() RETURNING true;},
    @run);
# psql prints the NOTICEs too: one plan per statement run.
my @updates = grep { /^\s*(?:->\s+)?Update on calls\b/m } split /(?=^NOTICE:)/m, $out;
# 16 parks; 12 starts: 12 suppress updates, 11 start updates (one number is
# listed); 2 holds; 2 expiries; 8 provider call ids; 8 settles
is(scalar @updates, 16 + 12 + 11 + 2 + 2 + 8 + 8, 'auto_explain reported each update of calls')
    or diag $out;
my @other = grep { !/Index Scan using calls_pkey on calls(?: c)?\s+\([^\n]*\n\s+Index Cond: \(id = \$1\)/ } @updates;
is(scalar @other, 0, 'each finds its call by the primary key')
    or diag "e.g.:\n$other[0]";
is($s->psql(q{SELECT status || ' ' || count(*) FROM calls WHERE to_number LIKE '+1556%'
              GROUP BY status ORDER BY status}),
    "COMPLETED 6\nIN_PROGRESS 3\nPENDING 2990\nSUPPRESSED 1",
    'the statements did their work: 11 started, the listed one suppressed, 6 completed, 2 to retry');

done_testing;
