#!/usr/bin/perl
# callorchd's command line: -t exit codes and messages, -V, -h, bad options.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use CallorchTest;

my $bin = CallorchTest::builddir() . '/src/callorchd';
my $dir = tempdir(CLEANUP => 1);

sub run {
    my $out = `@_ 2>&1`;
    return ($? >> 8, $out);
}

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die;
    print $fh $text;
    close $fh;
    return "$dir/$name";
}

my ($rc, $out) = run($bin, '-t', '-c', CallorchTest::srcdir() . '/etc/callorch.ini');
is($rc, 0, 'shipped etc/callorch.ini passes -t');
like($out, qr/test is successful/, '-t says the test is successful');

my $ok = write_file('ok.ini', "[provider]\ncallback_secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
($rc, $out) = run($bin, '-t', '-c', $ok);
is($rc, 0, 'minimal config with only the required key passes -t');

my @bad = (
    [ "[http]\nworkers = 0\n", qr/:2: .*workers/, 'out of range' ],
    [ "[provider]\ncallback_secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n[dispatch]\ncall_timeout = 15 fortnights\n", qr/:4: .*call_timeout/, 'bad unit' ],
    [ "[nosuch]\nkey = 1\n", qr/:1: .*nosuch/, 'unknown section' ],
    [ "[http]\nnosuch = 1\n", qr/:2: .*nosuch/, 'unknown key' ],
    [ "[daemon]\nlog_level = loud\n", qr/:2: .*log_level/, 'bad enum' ],
    [ "[http]\nworkers = 2\n", qr/callback_secret.*required/, 'missing required key' ],
);
for my $b (@bad) {
    my $f = write_file('bad.ini', $b->[0]);
    ($rc, $out) = run($bin, '-t', '-c', $f);
    is($rc, 1, "-t exits 1: $b->[2]");
    like($out, $b->[1], "-t message names file, line and key: $b->[2]");
    diag($out =~ s/\n\z//r);
}

($rc, $out) = run($bin, '-t', '-c', "$dir/does-not-exist.ini");
is($rc, 1, '-t on a missing file exits 1');
like($out, qr/does-not-exist\.ini: .*No such file/i, 'missing file: clear message');

($rc, $out) = run($bin, '-V');
is($rc, 0, '-V exits 0');
like($out, qr/^callorchd \d+\.\d+\.\d+/, '-V prints the version');

($rc, $out) = run($bin, '-h');
is($rc, 0, '-h exits 0');
like($out, qr/Usage: callorchd/, '-h prints usage');

($rc, $out) = run($bin, '-x');
is($rc, 2, 'unknown option exits 2');
like($out, qr/Usage: callorchd/, 'unknown option prints usage');

($rc, $out) = run($bin, '-t', '-c', $ok, 'extra');
is($rc, 2, 'stray argument exits 2');

# The timings of src/util/tunables.h: only the test build reads
# CALLORCH_TEST_<NAME>; callorchd itself ignores them.
{
    my $hooks = CallorchTest::builddir() . '/t/callorchd-testhooks';
    local $ENV{CALLORCH_TEST_REPUBLISH_GRACE} = 'soon';
    ($rc, $out) = run($bin, '-t', '-c', $ok);
    is($rc, 0, 'callorchd ignores CALLORCH_TEST_REPUBLISH_GRACE');
    SKIP: {
        skip "$hooks not built (make check builds it)", 4 unless -x $hooks;
        ($rc, $out) = run($hooks, '-t', '-c', $ok);
        is($rc, 1, 'the test build refuses CALLORCH_TEST_REPUBLISH_GRACE=soon');
        like($out, qr/CALLORCH_TEST_REPUBLISH_GRACE=soon: not a positive number of seconds/, '... saying why');
        local $ENV{CALLORCH_TEST_REPUBLISH_GRACE} = '0.5';
        ($rc, $out) = run($hooks, '-t', '-c', $ok);
        is($rc, 0, 'the test build takes CALLORCH_TEST_REPUBLISH_GRACE=0.5');
        local $ENV{CALLORCH_TEST_LEASE_MARGIN} = '0';
        ($rc, $out) = run($hooks, '-t', '-c', $ok);
        is($rc, 1, 'the test build refuses CALLORCH_TEST_LEASE_MARGIN=0');
    }
}

done_testing;
