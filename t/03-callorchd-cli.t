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

# The shipped file holds public placeholder secrets: refused, naming the
# key, file and line (DESIGN.md section 6).  With both set it passes.
my $shipped = do {
    open my $fh, '<', CallorchTest::srcdir() . '/etc/callorch.ini' or die;
    local $/;
    <$fh>;
};
# the build's prefix data: the shipped path exists only once installed
my $tzp = "[compliance]\ntimezone_prefixes = " . CallorchTest::builddir() . "/data/tzprefix.tsv\n";
$shipped =~ s{^timezone_prefixes = .*$}{"timezone_prefixes = " . CallorchTest::builddir() . "/data/tzprefix.tsv"}me
    or die 'the shipped etc/callorch.ini sets no [compliance] timezone_prefixes';
my $copy = write_file('shipped.ini', $shipped);
my ($rc, $out) = run($bin, '-t', '-c', $copy);
is($rc, 1, '-t refuses a copy of the shipped etc/callorch.ini');
like($out, qr/^callorchd: \Q$copy\E:\d+: \[http\] api_keys: still the shipped placeholder/m,
     '-t names file, line and [http] api_keys');
unlike($out, qr/test is successful/, '-t does not say the test is successful');
diag($out =~ s/\n\z//r);

(my $half = $shipped) =~ s/^api_keys = .*$/api_keys = 0123456789abcdef0123456789abcdef/m;
$copy = write_file('shipped.ini', $half);
my $cs_line = 1 + (() = substr($half, 0, 1 + index($half, "\ncallback_secret =")) =~ /\n/g);
($rc, $out) = run($bin, '-t', '-c', $copy);
is($rc, 1, '-t refuses the shipped callback_secret once api_keys is set');
like($out, qr/^callorchd: \Q$copy\E:$cs_line: \[provider\] callback_secret: still the shipped placeholder; set your own secret$/m,
     "-t names file, line $cs_line and [provider] callback_secret");

(my $set = $half) =~ s/^callback_secret = .*$/callback_secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/m;
$copy = write_file('shipped.ini', $set);
($rc, $out) = run($bin, '-t', '-c', $copy);
is($rc, 0, 'the shipped file with both secrets set passes -t') or diag($out);
like($out, qr/test is successful/, '-t says the test is successful');

# a start (not only -t) refuses the placeholders too, before anything else
$copy = write_file('shipped.ini', $half);
($rc, $out) = run($bin, '-f', '-c', $copy);
isnt($rc, 0, 'callorchd -f refuses to start with the shipped callback_secret');
like($out, qr/\[provider\] callback_secret: still the shipped placeholder/, '  naming the key');

my $ok = write_file('ok.ini', "[provider]\ncallback_secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n$tzp");
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
