#!/usr/bin/perl
# The publish order of DESIGN.md section 10: "Higher priority calls that are
# due start first; equal priority: oldest first."  With the global cap at 1
# a backlog of due calls of priorities 1, 5 and 9, created in mixed order
# (inserted with SQL, published_at NULL: the scheduler publishes them one
# free slot at a time), starts priority first, then oldest first; a
# priority 9 call that is not due yet waits its turn in time.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use CallorchTest;

CallorchTest::require_stack();
my $s = CallorchTest->new(phone_base => 9_400_000);
$s->start_all;
$s->migrate;
$s->start_sim('--delay', '200ms', '--success-rate', '1', '--seed', '94');
$s->write_config(
    'dispatch.max_concurrent_calls' => 1,
    'dispatch.scheduler_interval'   => '100ms',
);
$s->start_daemon;

# Priorities in creation order (oldest first): mixed.
my @prio = (5, 1, 9, 5, 9, 1, 1, 9, 5, 9, 1, 5);
my $n = @prio;
my @rows;
for my $i (0 .. $#prio) {
    push @rows, sprintf "('%s', 'prio-%02d', 1, %d, now() - interval '%d s')", $s->next_phone, $i,
        $prio[$i], 100 - $i;
}
# a priority 9 call due in 4 s: after the backlog has started on its way
push @rows, sprintf "('%s', 'prio-late', 1, 9, now() - interval '200 s')", $s->next_phone;
$s->psql('INSERT INTO calls (to_number, script_id, max_attempts, priority, created_at) VALUES '
    . join(', ', @rows));
$s->psql("UPDATE calls SET next_attempt_at = now() + interval '4 s' WHERE script_id = 'prio-late'");

ok($s->wait_for(sub { $s->psql("SELECT count(*) FROM calls WHERE status = 'COMPLETED'") == $n + 1 },
        timeout => 60, interval => 0.3, soft => 1), 'every call completed')
    or diag($s->psql('SELECT status, count(*) FROM calls GROUP BY 1'));

my @order = grep { $_ ne '' } split /\n/, $s->psql('SELECT c.script_id FROM call_attempts a'
    . ' JOIN calls c ON c.id = a.call_id ORDER BY a.started_at');
my @backlog = grep { $_ ne 'prio-late' } @order;
my @want = map { sprintf 'prio-%02d', $_ }
    sort { $prio[$b] <=> $prio[$a] || $a <=> $b } 0 .. $#prio;
is_deeply(\@backlog, \@want, 'the backlog started priority first (9, 5, 1), then oldest first')
    or diag explain { got => \@backlog, prio => { map { sprintf('prio-%02d', $_) => $prio[$_] } 0 .. $#prio } };
my ($late) = grep { $order[$_] eq 'prio-late' } 0 .. $#order;
cmp_ok($late // 0, '>', 0, "the priority 9 call not yet due did not jump the queue (started #"
    . (($late // -1) + 1) . ')');
is($s->sim_stats->{maxInProgress}, 1, 'one call at a time (cap 1)');

$s->stop_daemon;
done_testing();
