#!/usr/bin/perl
# The Debian package (DESIGN.md section 7).  Always: the cheap checks of
# packaging/ against the tree (versions, what "make dist" and the .deb
# carry).  With CALLORCH_TEST_PACKAGE=1, as root: tools/package builds the
# .deb from a clean copy of the tree (this compiles everything again: about
# three minutes on two CPUs), lintian finds no error, dpkg -i installs it,
# the installed programs run from their installed paths, the conffile is
# root:callorch 0640 with its placeholder secrets replaced, the user exists,
# the migrations and man pages are in place, "systemd-analyze verify" of the
# installed unit is clean; then dpkg --purge leaves the machine as it was
# (the callorch user too, when this test created it).
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use CallorchTest;

my $src = CallorchTest::srcdir();

sub slurp { return CallorchTest::read_file(@_) }
sub which { return CallorchTest::which(@_) }
sub run   { return CallorchTest::run_command(@_) }

# ------------------------------------------------------------- always --
my ($ac_version) = slurp("$src/configure.ac") =~ /^AC_INIT\(\[[^]]*\],\s*\[([^]]*)\]/m;
my ($deb_version) = slurp("$src/packaging/debian/changelog") =~ /^callorch \(([^)]+)\)/;
is($deb_version =~ s/-[^-]+$//r, $ac_version,
   "packaging/debian/changelog ($deb_version) is at configure.ac's version ($ac_version)");

ok(-x "$src/packaging/debian/rules", 'packaging/debian/rules is executable');
ok(-x "$src/tools/package", 'tools/package is executable');

{
    # every file of packaging/ and tools/package go into "make dist"
    my $am = slurp("$src/Makefile.am");
    my @files = ('tools/package');
    my @dirs = ('packaging');
    while (my $d = shift @dirs) {
        opendir my $dh, "$src/$d" or die "$src/$d: $!";
        for my $e (sort grep { !/^\./ } readdir $dh) {
            -d "$src/$d/$e" ? push @dirs, "$d/$e" : push @files, "$d/$e";
        }
    }
    my @missing = grep { $am !~ /(?:^|\s)\Q$_\E(?:\s|$)/m } @files;
    ok(!@missing, 'Makefile.am EXTRA_DIST carries every file of packaging/ (' . scalar(@files) . ')')
        or diag("missing: @missing");

    # every man page of dist_man_MANS goes into the .deb
    my ($mans) = $am =~ /^dist_man_MANS\s*=\s*((?:.*\\\n)*.*)$/m;
    my $install = slurp("$src/packaging/debian/callorch.install");
    my @pages = ($mans // '') =~ m{man/(\S+?\.\d)(?=\s|$)}g;
    ok(@pages >= 4, "Makefile.am dist_man_MANS lists the man pages (@pages)");
    for my $m (@pages) {
        my ($sec) = $m =~ /\.(\d)$/;
        like($install, qr{^usr/share/man/man$sec/\Q$m\E$}m, "callorch.install ships $m");
    }
}

# --------------------------------------------------- CALLORCH_TEST_PACKAGE --
my $why;
if (!$ENV{CALLORCH_TEST_PACKAGE}) {
    $why = 'set CALLORCH_TEST_PACKAGE=1 to build, lint, install and purge the .deb '
         . '(root; about 3 minutes: it compiles everything again)';
} elsif ($> != 0) {
    $why = 'building and installing the .deb needs root (dpkg -i, apt-get)';
} elsif (!which('dpkg') || !which('apt-get')) {
    $why = 'not a Debian system (no dpkg or apt-get)';
} elsif ((run('dpkg-query', '-W', '-f=${Status}', 'callorch'))[0] =~ /install ok installed/) {
    $why = 'callorch is installed on this machine: not replacing it';
}
if ($why) {
    SKIP: { skip $why, 1 }
    done_testing();
    exit 0;
}

my $out = tempdir('callorch-deb.XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CALLORCH_TEST_LEAVE});
my $user_existed = (run('getent', 'passwd', 'callorch'))[1] == 0;
my $group_existed = (run('getent', 'group', 'callorch'))[1] == 0;
my $installed = 0;

# Leave the machine clean, even when a check dies half-way.
sub purge {
    return unless $installed;
    $installed = 0;
    my ($o, $rc) = run('dpkg', '--purge', 'callorch');
    is($rc, 0, 'dpkg --purge callorch') or diag($o);
    if (!$user_existed && (run('getent', 'passwd', 'callorch'))[1] == 0) {
        ($o, $rc) = run('deluser', '--system', '--quiet', 'callorch');
        is($rc, 0, 'removed the callorch user this test created') or diag($o);
    }
    if (!$group_existed && (run('getent', 'group', 'callorch'))[1] == 0) {
        ($o, $rc) = run('delgroup', '--system', '--quiet', 'callorch');
        is($rc, 0, 'removed the callorch group this test created') or diag($o);
    }
}
END { purge() if $installed }

# ---------------------------------------------------------------- build --
my %env = %ENV;
delete @ENV{qw(MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES)};    # from "make check"
my $t0 = time;
my ($log, $rc) = run("$src/tools/package", '--no-lintian', $out);
%ENV = %env;
is($rc, 0, 'tools/package builds the package') or do { diag($log); BAIL_OUT('no package') };
diag(sprintf 'package built in %.0f s', time - $t0);

my $arch = (run('dpkg', '--print-architecture'))[0] =~ s/\s+//gr;
my $deb = "$out/callorch_${deb_version}_$arch.deb";
my $changes = "$out/callorch_${deb_version}_$arch.changes";
ok(-f $deb, "built $deb") or BAIL_OUT('no .deb');

# -------------------------------------------------------------- lintian --
SKIP: {
    skip 'lintian is not installed', 2 unless which('lintian');
    my ($lint, $lrc) = run('lintian', $changes);
    $lint =~ s/^running with root privileges is not recommended!\n//m;
    is($lrc, 0, 'lintian exits 0');
    unlike($lint, qr/^E: /m, 'lintian: no errors');
    diag("lintian:\n$lint") if $lint ne '';
}

# --------------------------------------------------------------- install --
my ($o, $irc) = run('dpkg', '-i', $deb);
$installed = 1;
is($irc, 0, 'dpkg -i installs it (no systemd running is fine)') or diag($o);

my $conf = '/etc/callorch/callorch.ini';

($o, $rc) = run('/usr/sbin/callorchd', '-t', '-c', $conf);
is($rc, 0, "/usr/sbin/callorchd -t -c $conf") or diag($o);
like($o, qr/test is successful/, 'the installed configuration is valid');

($o, $rc) = run('runuser', '-u', 'callorch', '--', '/usr/sbin/callorchd', '-t', '-c', $conf);
is($rc, 0, 'the check passes as user callorch too (ExecStartPre= runs as User=)') or diag($o);

($o, $rc) = run('/usr/sbin/callorchd', '-h');
like($o, qr{default /etc/callorch/callorch\.ini\)}, 'callorchd defaults to /etc/callorch/callorch.ini');

($o, $rc) = run('/usr/sbin/callorchctl', '--help');
is($rc, 0, '/usr/sbin/callorchctl --help');
like($o, qr{/usr/share/callorch/sql}, 'callorchctl finds the migrations in /usr/share/callorch/sql');

($o, $rc) = run('/usr/sbin/callorchctl', 'check-config');
is($rc, 0, 'callorchctl check-config reads the installed default file') or diag($o);

($o, $rc) = run('/usr/bin/callorch-provider-sim', '--version');
is($rc, 0, '/usr/bin/callorch-provider-sim --version');

# the configuration
my @st = stat $conf;
ok(@st, "$conf exists") or BAIL_OUT('no configuration');
is(sprintf('%04o', $st[2] & 07777), '0640', "$conf has mode 0640");
is($st[4], 0, "$conf is owned by root");
is(scalar getgrgid($st[5]), 'callorch', "$conf belongs to group callorch");
($o, $rc) = run('dpkg-query', '-W', '-f=${Conffiles}', 'callorch');
like($o, qr{^\s*\Q$conf\E\s}m, "$conf is a conffile");
($o, $rc) = run('dpkg-statoverride', '--list', $conf);
like($o, qr/^root callorch 0?640 \Q$conf\E$/m, 'a statoverride keeps owner and mode across upgrades');
my $ini = slurp($conf);
unlike($ini, qr/PLACEHOLDER-CHANGE-ME|whsec_PLACEHOLDER/, 'the placeholder secrets were replaced');
like($ini, qr/^api_keys = [0-9a-f]{64}$/m, '[http] api_keys is a random 32-byte hex key');
like($ini, qr{^callback_secret = whsec_[A-Za-z0-9+/]{43}=$}m,
     '[provider] callback_secret is a random 32-byte whsec_ secret');

# the user
my @pw = getpwnam('callorch');
ok(@pw, 'user callorch exists');
cmp_ok($pw[2], '<', 1000, 'callorch is a system user') if @pw;
is($pw[8], '/usr/sbin/nologin', 'callorch has no login shell') if @pw;

# migrations, man pages, unit
my @want = map { s{.*/}{}r } glob("$src/sql/*.sql");
my @have = map { s{.*/}{}r } glob('/usr/share/callorch/sql/*.sql');
is("@have", "@want", 'the migrations are in /usr/share/callorch/sql');
for my $m (qw(man1/callorch-provider-sim.1 man5/callorch.ini.5 man8/callorchctl.8 man8/callorchd.8)) {
    ok(-f "/usr/share/man/$m.gz", "/usr/share/man/$m.gz is installed");
}
my $unit = '/lib/systemd/system/callorchd.service';
ok(-f $unit, "$unit is installed");
SKIP: {
    skip 'systemd-analyze is missing (apt-get install systemd)', 1 unless which('systemd-analyze');
    # with man(1) present, Documentation= is checked against the installed pages
    my @man = which('man') ? () : ('--man=no');
    ($o, $rc) = run('systemd-analyze', 'verify', @man, $unit);
    ok($rc == 0 && $o eq '', "systemd-analyze verify $unit: clean") or diag($o);
}
ok(!-e '/etc/systemd/system/multi-user.target.wants/callorchd.service',
   'the unit is installed disabled');

# ----------------------------------------------------------------- purge --
purge();
($o, $rc) = run('dpkg-query', '-W', '-f=${Status}', 'callorch');
unlike($o, qr/installed/, 'callorch is gone after the purge');
ok(!-e $conf && !-e '/usr/sbin/callorchd' && !-e $unit, 'its files are gone');
($o, $rc) = run('dpkg-statoverride', '--list', $conf);
isnt($rc, 0, 'the statoverride is gone');

done_testing();
