#!/usr/bin/perl
# tools/demo.pl, as `tools/dev demo` runs it once the build is done: it
# starts the stack, the simulator and callorchd, posts sample calls, shows
# them settle, prints the commands to try and keeps serving; Ctrl-C (SIGINT)
# stops all of it and removes its temporary directory.  DEMO_CALLS=12 keeps
# it short.
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use IO::Select;
use JSON::PP qw(decode_json);
use Time::HiRes qw(time sleep);
use CallorchTest;

my $CALLS = 12;
my $src   = CallorchTest::srcdir();
my $build = CallorchTest::builddir();

$ENV{DEMO_CALLS} = $CALLS;
delete $ENV{CALLORCH_TEST_LEAVE};
my $pid = open(my $out, '-|') // die "fork: $!";
if ($pid == 0) {
    open STDERR, '>&', \*STDOUT or die "stderr: $!";
    exec $^X, "-I$src/t/lib", "$src/tools/demo.pl", $build or die "exec: $!";
}

# Read the demo's output until PATTERN shows (undef: until it closes its
# output, i.e. exits) or SECONDS pass.
my $text = '';
sub read_until {
    my ($pattern, $seconds) = @_;
    my $sel = IO::Select->new($out);
    my $deadline = time + $seconds;
    while ((!defined $pattern || $text !~ $pattern) && time < $deadline) {
        next unless $sel->can_read(0.5);
        last unless sysread($out, $text, 65536, length $text);
    }
    return defined $pattern && $text =~ $pattern;
}

ok(read_until(qr/Ctrl-C stops everything\./, 240), 'the demo settles and keeps serving')
    or diag($text);
my ($dir)  = $text =~ /temporary directory (\S+)\)/;
my ($base) = $text =~ /HTTP API\s+(http\S+)/;
ok(defined $dir && -d $dir, 'it names its temporary directory');
like($text, qr/posting $CALLS sample calls \(a third of them to numbers used twice\)/,
     "it posts $CALLS calls, some to repeated numbers");

# the last progress line: only the held call left, every sample call
# COMPLETED or FAILED, the listed number's call SUPPRESSED
my @lines = grep { /PENDING\s+\d.*SUPPRESSED/ } split /[\r\n]+/, $text;
my ($pend, $inp, $done, $failed, $supp) = ($lines[-1] // '')
    =~ /PENDING\s+(\d+)\s+IN_PROGRESS\s+(\d+)\s+COMPLETED\s+(\d+)\s+FAILED\s+(\d+)\s+SUPPRESSED\s+(\d+)/;
ok(@lines > 1, 'it shows the progress as it goes (' . scalar(@lines) . ' lines)');
is($pend, 1, 'the last progress line: only the held call is PENDING');
is($inp, 0, 'the last progress line: nothing IN_PROGRESS');
is(($done // 0) + ($failed // 0), $CALLS, "the last progress line: all $CALLS sample calls ended");
is($supp, 1, 'the last progress line: one call SUPPRESSED');
like($text, qr/a call outside its calling hours \(\d\d:00-\d\d:00 UTC\) is held: holdReason window, nextAttemptAt \d{4}-/,
     'it shows a call held outside its calling hours');
like($text, qr/the held call is still PENDING \(holdReason window\); the listed number's call ended SUPPRESSED/,
     'the held call stays held and the listed number\'s call ends SUPPRESSED');

my ($max, $per_phone) = $text =~ /at most (\d+) calls at once and (\d+) at once for one number/;
ok(defined $max && $max >= 1 && $max <= 5, 'the provider saw at most the cap of 5 at once ('
    . ($max // '?') . ')');
is($per_phone, 1, 'and one call at a time per number');
like($text, qr/campaign demo-renewals \([0-9a-f-]{36}\): 12 calls, maxConcurrent 2, callsPerSecond 2/,
     'it runs a small campaign');
like($text, qr/campaign\s+FINISHED\s+PENDING\s+0\s+IN_PROGRESS 0\s+COMPLETED\s+(\d+)\s+FAILED\s+(\d+)/,
     'it shows the campaign\'s progress until FINISHED');
my ($events) = $text =~ /client events received, signed: (.*)/;
like($events // '', qr/campaign\.finished 1\b/, 'the receiver got campaign.finished') or diag($events);
like($events // '', qr/call\.completed \d+/, '... and the calls\' events');
like($text, qr{curl -s \Q$base\E/api/v1/metrics}, 'it prints the curl commands to try')
    if defined $base;

# still serving: the API answers and agrees with what was shown
my $r = HTTP::Tiny->new(timeout => 5)->get("$base/api/v1/metrics");
is($r->{status}, 200, 'the API still answers after the calls settled');
my $m = eval { decode_json($r->{content}) } || {};
is(($m->{COMPLETED} // 0) + ($m->{FAILED} // 0), $CALLS + 12, '... and counts the same calls (and the campaign\'s 12)');
is($m->{SUPPRESSED}, 1, '... and the suppressed one');

# Ctrl-C: everything stops, the directory goes
my ($master) = defined $dir && -f "$dir/callorchd.pid"
    ? CallorchTest::read_file("$dir/callorchd.pid") =~ /(\d+)/ : ();
kill 'INT', $pid;
read_until(undef, 60);
my $st = CallorchTest::wait_pid($pid, 10);
ok(defined $st, 'SIGINT stops the demo');
is($st, 0, 'it exits 0');
like($text, qr/stopping callorchd and the stack/, 'it says it is stopping everything');
ok(!defined $dir || !-d $dir, 'its temporary directory is removed');
ok(!kill(0, $master), "callorchd (pid $master) is gone") if defined $master;
close $out;

done_testing;
