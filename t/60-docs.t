#!/usr/bin/perl
# The man pages and the systemd unit against the code they describe:
# mandoc lint of every page (no warning at all); every key of src/util/config.c's
# table in callorch.ini(5) with its default, range and whether a reload
# applies it (the table's KF_RESTART), and in
# etc/callorch.ini with its default; every option (and command, and exit
# status) of callorchd, callorchctl and callorch-provider-sim, as their
# usage texts list them, in their pages; every page installed by
# Makefile.am; "systemd-analyze verify" of packaging/systemd/callorchd.service
# and the unit's contract (Type=notify, the -t check, reload, the user, the
# stop timeout above the default shutdown_timeout).  Needs no stack.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use CallorchTest;

my $src   = CallorchTest::srcdir();
my $build = CallorchTest::builddir();
my %page  = (
    callorchd => "$src/man/callorchd.8",
    ctl       => "$src/man/callorchctl.8",
    ini       => "$src/man/callorch.ini.5",
    sim       => "$src/man/callorch-provider-sim.1",
);

sub slurp { return CallorchTest::read_file(@_) }
sub which { return CallorchTest::which(@_) }
sub run   { return CallorchTest::run_command(@_) }

my %text = map { $_ => slurp($page{$_}) } keys %page;

# ------------------------------------------------------------ mandoc lint --
SKIP: {
    my $mandoc = which('mandoc');
    skip 'mandoc is not installed (apt-get install mandoc): no lint', scalar keys %page
        unless $mandoc;
    for my $k (sort keys %page) {
        my ($out, $rc) = run($mandoc, '-T', 'lint', '-W', 'warning', $page{$k});
        ok($rc == 0 && $out eq '', "mandoc -T lint -W warning $page{$k}: clean")
            or diag($out);
    }
}

# --------------------------------------------------- the key table of config.c --
# Each entry: section, name, default (undef: required), min, max, choices.
sub config_keys {
    my $c = slurp("$src/src/util/config.c");
    my %arrays;
    while ($c =~ /static const char \*const (\w+)\[\] = \{([^}]*)\}/g) {
        my ($name, $body) = ($1, $2);
        $arrays{$name} = [ $body =~ /"([^"]*)"/g ];
    }
    my ($table) = $c =~ /static const struct key keys\[\] = \{(.*?)\n\};/s
        or die 'cannot find "static const struct key keys[]" in src/util/config.c';
    my $s = qr/"([^"]*)"/;
    my @keys;
    my $macros = () = $table =~ /\b(?:STR|NUM|ENUM|LIST)\(/g;
    # CO_TZPREFIX_FILE: the installed data file, $(pkgdatadir)/tzprefix.tsv,
    # as the package installs it.
    while ($table =~ /\bSTR\(\s*$s,\s*$s,\s*("[^"]*"|NULL|CO_TZPREFIX_FILE)/g) {
        my ($sec, $name, $def) = ($1, $2, $3);
        push @keys, { section => $sec, name => $name,
                      default => $def eq 'NULL' ? undef
                               : $def eq 'CO_TZPREFIX_FILE' ? '/usr/share/callorch/tzprefix.tsv'
                               : substr($def, 1, -1) };
    }
    while ($table =~ /\bNUM\(\s*KT_\w+,\s*$s,\s*$s,\s*$s,\s*$s,\s*$s/g) {
        push @keys, { section => $1, name => $2, default => $3, min => $4, max => $5 };
    }
    while ($table =~ /\bENUM\(\s*$s,\s*$s,\s*$s,\s*\w+,\s*(\w+)\)/g) {
        push @keys, { section => $1, name => $2, default => $3,
                      choices => $arrays{$4} // die "no names array $4 in src/util/config.c" };
    }
    while ($table =~ /\bLIST\(\s*KT_\w+,\s*$s,\s*$s,\s*$s/g) {
        push @keys, { section => $1, name => $2, default => $3 };
    }
    is(scalar @keys, $macros, "every entry of src/util/config.c's key table was understood ($macros)")
        or diag('a new macro form in the key table? teach t/60-docs.t to read it');
    # The "needs a restart" column: KF_RESTART among the row's flags.
    for my $k (@keys) {
        my ($row) = $table =~ /\b(?:STR|NUM|ENUM|LIST)\(\s*(?:KT_\w+,\s*)?"\Q$k->{section}\E",\s*
                               "\Q$k->{name}\E",([^;]*?)\),\s*$/mx
            or die "cannot find the row of [$k->{section}] $k->{name}";
        $k->{restart} = $row =~ /\bKF_RESTART\b/ ? 1 : 0;
    }
    return @keys;
}

my @keys = config_keys();
cmp_ok(scalar @keys, '>=', 30, 'src/util/config.c has the keys of DESIGN.md section 6');

# ------------------------------------------------------------- callorch.ini(5) --
# The entries of one ".Sh <SECTION> SECTION": key => text of its ".It Cm key" item.
sub ini_entries {
    my ($section) = @_;
    my $uc = uc $section;
    my ($body) = $text{ini} =~ /^\.Sh \Q$uc\E SECTION\n(.*?)(?=^\.Sh |\z)/ms or return;
    my %e;
    for my $item (split /^(?=\.It Cm )/m, $body) {
        $e{$1} = $item if $item =~ /^\.It Cm (\w+)(?:\s|$)/;
    }
    return \%e;
}

# ".Ql VALUE" on a line of its own, maybe with punctuation after it.
sub has_ql {
    my ($entry, $value) = @_;
    return $entry =~ /^\.Ql \Q$value\E(?:\\&)?(?: [.,;:)]+)?$/m;
}

my %documented;    # section => { key => text of its entry } of the page
for my $section (do { my %seen; grep { !$seen{$_}++ } map { $_->{section} } @keys }) {
    my $entries = ini_entries($section);
    ok($entries, "callorch.ini(5) has a \"\U$section\E SECTION\"");
    $documented{$section} = $entries // {};
}
for my $k (@keys) {
    my $id = "[$k->{section}] $k->{name}";
    my $e = $documented{$k->{section}}{$k->{name}};
    ok(defined $e, "callorch.ini(5) documents $id") or next;
    if (!defined $k->{default}) {
        like($e, qr/^Required\.$/m, "callorch.ini(5): $id is required");
    } elsif ($k->{default} eq '') {
        like($e, qr/^Default: empty\b/m, "callorch.ini(5): $id defaults to empty");
    } else {
        ok(has_ql($e, $k->{default}), "callorch.ini(5): $id default '$k->{default}'")
            or diag($e);
    }
    if ($k->{restart}) {
        like($e, qr/^Needs a restart\b/m, "callorch.ini(5): $id needs a restart");
    } else {
        like($e, qr/^A reload applies\b/m, "callorch.ini(5): a reload applies $id");
    }
    if (defined $k->{min}) {
        ok(has_ql($e, $k->{min}) && has_ql($e, $k->{max}),
           "callorch.ini(5): $id range $k->{min} to $k->{max}") or diag($e);
    }
    if ($k->{choices}) {
        my ($head) = $e =~ /^(\.It Cm .*)$/m;
        my @missing = grep { $head !~ /(?:Cm|\|) \Q$_\E(?: |$)/ } @{ $k->{choices} };
        ok(!@missing, "callorch.ini(5): $id lists @{ $k->{choices} }") or diag($head);
    }
}
my %in_table = map { ("$_->{section}.$_->{name}" => 1) } @keys;
my @stale = grep { !$in_table{$_} }
    map { my $s = $_; map { "$s.$_" } keys %{ $documented{$s} } } keys %documented;
ok(!@stale, 'callorch.ini(5) documents no key that src/util/config.c lacks') or diag("@stale");

# ------------------------------------------------------------ etc/callorch.ini --
{
    my (%ini, $section);
    for (split /\n/, slurp("$src/etc/callorch.ini")) {
        next if /^\s*(?:[;#]|$)/;
        if (/^\s*\[(\w+)\]/) { $section = $1; next }
        next unless /^\s*([\w.]+)\s*=(.*)$/;
        my ($k, $v) = ($1, $2);
        $v =~ s/(?:^|\s);.*//;    # an inline comment: " ;"
        $v =~ s/^\s+|\s+$//g;
        $ini{"$section.$k"} = $v;
    }
    for my $k (@keys) {
        my $id = "$k->{section}.$k->{name}";
        ok(exists $ini{$id}, "etc/callorch.ini shows [$k->{section}] $k->{name}") or next;
        next if !defined $k->{default} || $ini{$id} =~ /PLACEHOLDER/;
        is($ini{$id}, $k->{default}, "etc/callorch.ini: [$k->{section}] $k->{name} is the default");
    }
    my @extra = grep { !$in_table{$_} } sort keys %ini;
    ok(!@extra, 'etc/callorch.ini sets no key that src/util/config.c lacks') or diag("@extra");
}

# ------------------------------------------------- options of the programs --
# Option names ("-c", "--config") of a usage text: the lines that start
# with an option, indented.
sub help_options {
    my ($help) = @_;
    my @opts;
    for (split /\n/, $help) {
        next unless /^\s+(-\w|--[\w-]+)((?:, ?--?[\w-]+)*)/;
        my ($first, $more) = ($1, $2);
        push @opts, $first, ($more =~ /(--?[\w-]+)/g);
    }
    return @opts;
}

# Is OPT (-x or --name) an item of TEXT's lists (".It Fl x", ".It ... Fl -name")?
sub has_option {
    my ($text, $opt) = @_;
    (my $name = $opt) =~ s/^-//;
    return $text =~ /^\.It\b.*\bFl \Q$name\E(?:\s|$)/m;
}

sub check_options {
    my ($prog, $key, @args) = @_;
    my $bin = -x "$build/src/$prog" ? "$build/src/$prog" : undef;
    SKIP: {
        skip "$build/src/$prog is not built", 1 unless $bin;
        my ($help, $rc) = run($bin, @args);
        is($rc, 0, "$prog @args exits 0");
        my @opts = help_options($help);
        cmp_ok(scalar @opts, '>=', 4, "$prog @args lists its options (@opts)");
        my @missing = grep { !has_option($text{$key}, $_) } @opts;
        ok(!@missing, "$page{$key} documents every option of $prog @args")
            or diag("missing: @missing");
        return $help;
    }
    return '';
}

check_options('callorchd', 'callorchd', '-h');
check_options('callorch-provider-sim', 'sim', '--help');
my $ctl_help = check_options('callorchctl', 'ctl', '--help');
SKIP: {
    skip 'no callorchctl --help', 2 if $ctl_help eq '';
    my ($commands) = $ctl_help =~ /^Commands:\n((?:  .*\n)+)/m;
    my @cmds = ($commands // '') =~ /^  (\S+)/mg;
    my @missing = grep { $text{ctl} !~ /^\.It Ic \Q$_\E$/m } @cmds;
    ok(@cmds && !@missing, "callorchctl(8) documents every command (@cmds)")
        or diag("missing: @missing");
    my ($exits) = $ctl_help =~ /^Exit status:\n((?:  .*\n)+)/m;
    my @codes = ($exits // '') =~ /^\s+(\d+)\s/mg;
    my ($section) = $text{ctl} =~ /^\.Sh EXIT STATUS\n(.*?)(?=^\.Sh |\z)/ms;
    @missing = grep { ($section // '') !~ /^\.It \Q$_\E$/m } @codes;
    ok(!@missing, "callorchctl(8) EXIT STATUS has every status of --help (@codes)")
        or diag("missing: @missing");
}

# Every page is installed.
{
    my $am = slurp("$src/Makefile.am");
    my ($mans) = $am =~ /^dist_man_MANS\s*=\s*((?:.*\\\n)*.*)$/m;
    $mans //= '';
    for my $p (sort values %page) {
        (my $rel = $p) =~ s{^\Q$src\E/}{};
        like($mans, qr/(?:^|\s)\Q$rel\E(?:\s|$)/, "Makefile.am dist_man_MANS installs $rel");
    }
}

# ---------------------------------------------------------- the systemd unit --
my $unit_path = "$src/packaging/systemd/callorchd.service";
my $unit = slurp($unit_path);
my %unit;
for (split /\n/, $unit) {
    push @{ $unit{$1} }, $2 if /^(\w+)=(.*)$/;
}
sub unit1 { my $v = $unit{ $_[0] }; return $v ? $v->[-1] : '' }

is(unit1('Type'), 'notify', 'unit: Type=notify');
is(unit1('ExecStartPre'), '/usr/sbin/callorchd -t -c /etc/callorch/callorch.ini',
   'unit: ExecStartPre checks the configuration');
is(unit1('ExecStart'), '/usr/sbin/callorchd -f -c /etc/callorch/callorch.ini',
   'unit: ExecStart runs in the foreground');
is(unit1('ExecReload'), '/bin/kill -HUP $MAINPID', 'unit: reload is SIGHUP');
is(unit1('User'), 'callorch', 'unit: User=callorch');
is(unit1('RuntimeDirectory'), 'callorch', 'unit: RuntimeDirectory=callorch (pid file, socket)');
{
    my ($timeout) = grep { $_->{name} eq 'shutdown_timeout' } @keys;
    sub seconds {
        my ($v) = @_;
        my %mult = (ms => 0.001, s => 1, '' => 1, m => 60, min => 60, h => 3600);
        return $v =~ /^([\d.]+)\s*(ms|s|min|m|h|)$/ ? $1 * $mult{$2} : -1;
    }
    cmp_ok(seconds(unit1('TimeoutStopSec')), '>', seconds($timeout->{default}),
           "unit: TimeoutStopSec above the default shutdown_timeout ($timeout->{default})");
}
is(unit1('CapabilityBoundingSet'), '', 'unit: no capabilities');

SKIP: {
    my $analyze = which('systemd-analyze');
    skip 'systemd-analyze is missing (apt-get install systemd): no unit verification', 1
        unless $analyze;
    skip "$build/src/callorchd is not built", 1 unless -x "$build/src/callorchd";
    # verify wants the ExecStart= binaries: point the unit at the build's.
    my $dir = tempdir(CLEANUP => 1);
    (my $copy = $unit) =~ s{/usr/sbin/callorchd}{$build/src/callorchd}g;
    open my $fh, '>', "$dir/callorchd.service" or die;
    print $fh $copy;
    close $fh;
    my ($out, $rc) = run($analyze, 'verify', '--man=no', "$dir/callorchd.service");
    ok($rc == 0 && $out eq '', 'systemd-analyze verify packaging/systemd/callorchd.service: clean')
        or diag($out);
}

done_testing();
