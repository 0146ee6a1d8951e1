#!/usr/bin/perl
# Untrusted text in the API's log lines is quoted (issue 9 item 4): a
# PostgreSQL error whose message echoes what a client sent is logged as one
# escaped value, so quotes in it cannot end the value and forge keys of the
# key=value line.  Made deterministic with a trigger that fails inserts
# whose metadata carries a "note", echoing the note in its message.
#
# No Kafka broker: nothing dispatches.
use strict;
use warnings;
use Test::More;
use CallorchTest;

CallorchTest::require_stack();

my $s = CallorchTest->new;
$s->start_postgres;
$s->start_redis;
$s->migrate;
$s->psql(<<'SQL');
CREATE FUNCTION t38_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'refused: %', NEW.metadata->>'note';
END $$;
CREATE TRIGGER t38_refuse BEFORE INSERT ON calls FOR EACH ROW
    WHEN (NEW.metadata ? 'note') EXECUTE FUNCTION t38_refuse();
SQL
$s->write_config('http.workers' => 1);
$s->start_daemon;

# pg_pool already turns double quotes and control bytes of PostgreSQL's
# text into harmless ones; backslashes it leaves, and one at the end of the
# value would escape the closing quote of an unescaped error="...".
my $note = qq{x" forged="1 back\\slash\ttab end\\};
my ($st) = $s->api(POST => '/api/v1/calls', { to => '+15553800001', scriptId => 'quote', metadata => { note => $note } });
is($st, 500, 'the refused insert answers 500');
($st) = $s->api(POST => '/api/v1/calls', { to => '+15553800002', scriptId => 'quote' });
is($st, 201, 'other calls are still created');

my @lines;
ok($s->wait_for(sub { @lines = grep { /msg="request failed"/ } split /\n/, $s->log_text; @lines },
    timeout => 10, soft => 1), 'the failure is logged');
is(scalar @lines, 1, 'once');
my $line = $lines[0] // '';
# key=value pairs where a value is a bare word or a quoted string with
# backslash escapes: the error must be one value, and no key may be forged
my %kv;
my $rest = $line;
while ($rest =~ s/^\s*([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S*)//) {
    $kv{$1} = $2;
}
like($rest, qr/^\s*$/, 'the line parses as key=value pairs') or diag $line;
ok(!exists $kv{forged}, 'no key forged by the client text') or diag $line;
like($kv{error} // '', qr/^"refused: x/, 'the error is one quoted value') or diag $line;
like($kv{error} // '', qr/back\\\\slash/, '... its backslashes escaped') or diag $line;
like($kv{error} // '', qr/end\\\\"$/, '... so the closing quote is one') or diag $line;

is($s->stop_daemon, 0, 'callorchd stops cleanly');
done_testing;
