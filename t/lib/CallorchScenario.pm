package CallorchScenario;
# Dispatch scenarios on one CallorchTest stack (t/43, t/44): restart daemon
# and simulator per scenario, post tagged calls, wait for them to settle and
# check the guarantees of DESIGN.md section 3 at the end:
#
#   every call of the scenario COMPLETED or FAILED (none lost), the
#   simulator saw at most the cap at once and at most one call per phone,
#   no attempt was started twice at the provider, every attempt row ended.
#
# Each scenario's calls carry their own scriptId prefix ("TAG-i"), so the
# checks of one scenario never look at another's calls.
use strict;
use warnings;

use Exporter qw(import);
use Test::More;
use Time::HiRes qw(time sleep);

use CallorchTest;

# A running stack (PostgreSQL migrated, Redis, Kafka) and the scenario
# object on it.  %O: phone_base (CallorchTest->new's: numbers count up from it),
# only_env (the variable that lists the scenarios to run, for want()),
# tunables (shortened timings for every daemon started, as
# CallorchTest::start_daemon takes them).
sub setup {
    my ($class, %o) = @_;
    CallorchTest::require_stack();
    my $s = CallorchTest->new(phone_base => $o{phone_base} // 4_300_000);
    $s->start_all;
    $s->migrate;
    return ($s, $class->new($s, %o));
}

sub new {
    my ($class, $s, %o) = @_;
    return bless {
        s          => $s,
        only_env   => $o{only_env},
        tunables   => $o{tunables},
        log_from   => 0,
        sim_from   => 0,
    }, $class;
}

sub stack { return $_[0]{s} }

# Whether scenario TAG runs: all do, unless the only_env variable lists
# some (comma-separated), for debugging one.
sub want {
    my ($self, $tag) = @_;
    my $only = defined $self->{only_env} ? $ENV{ $self->{only_env} } : undef;
    return !$only || grep { $_ eq $tag } split /,/, $only;
}

sub next_phone { return $_[0]{s}->next_phone }

sub _sim_log { return $_[0]{s}->tmpdir . '/sim.log' }

# The daemon log written since the current scenario started.
sub log_since_start { return substr($_[0]{s}->log_text, $_[0]{log_from}) }

# Restart daemon and simulator for a scenario (the simulator logs every
# initiation at debug level, so the references it started can be counted);
# returns the master's pid.  %OVR are config overrides on top of fast
# retries and a 200 ms scheduler tick.  The daemon is the test build with
# the scenario object's tunables, if it has any.
sub start {
    my ($self, $sim_args, %ovr) = @_;
    my $s = $self->{s};
    $s->stop_daemon if $s->daemon_pid;
    $s->stop_sim;
    $self->{sim_from} = -s $self->_sim_log || 0;
    $s->start_sim('--log-level', 'debug', '--success-rate', '1', @$sim_args);
    $s->write_config(
        'dispatch.max_attempts'       => 3,
        'dispatch.backoff_base'       => '200ms',
        'dispatch.backoff_max'        => '1s',
        'dispatch.scheduler_interval' => '200ms',
        %ovr);
    $self->{log_from} = length $s->log_text;
    return $s->start_daemon($self->{tunables} ? (tunables => $self->{tunables}) : ());
}

# POST one call; with IDEMPOTENCY_KEY the POST is retried (same key) while
# the answer is 503 or a connection error, for up to RETRY_FOR seconds
# (CallorchTest::api_retry_for): a client that does not know whether its
# call was stored asks again.  Returns (status, body).
sub post_call {
    my ($self, $call, %o) = @_;
    my $s = $self->{s};
    return $s->api(POST => '/api/v1/calls', $call) unless defined $o{idempotency_key};
    return $s->api_retry_for($o{retry_for} // 0, POST => '/api/v1/calls', $call,
        { 'Idempotency-Key' => $o{idempotency_key} });
}

# N calls for TAG (scriptId "TAG-i", i from FROM, default 0) over PHONES
# (the i-th modulo their number; default: new numbers).  %O: from;
# idempotency => 1 sends an Idempotency-Key per call and retries
# (post_call), retry_for => seconds (default 30).  Returns (accepted, ids).
sub post_calls {
    my ($self, $tag, $n, $phones, %o) = @_;
    my ($ok, @ids) = (0);
    my $from = $o{from} // 0;
    for my $i ($from .. $from + $n - 1) {
        my $to = $phones ? $phones->[ $i % @$phones ] : $self->next_phone;
        my ($st, $c) = $self->post_call({ to => $to, scriptId => "$tag-$i" },
            $o{idempotency} ? (idempotency_key => "$tag-$i-$$", retry_for => $o{retry_for} // 30) : ());
        if (($st == 201 || $st == 200) && ref $c && $c->{id}) {
            $ok++;
            push @ids, $c->{id};
        } else {
            diag("$tag: POST $i answered $st: " . (ref $c ? explain($c) : $c // ''));
        }
    }
    return ($ok, @ids);
}

sub tag_where { return "script_id LIKE '$_[1]-%'" }

sub count_where {
    my ($self, $tag, $cond) = @_;
    return $self->{s}->psql("SELECT count(*) FROM calls WHERE " . $self->tag_where($tag) . " AND ($cond)");
}

sub wait_settled {
    my ($self, $tag, $timeout) = @_;
    my $t = time;
    my $ok = $self->{s}->wait_for(
        sub { $self->count_where($tag, "status NOT IN ('COMPLETED', 'FAILED')") == 0 },
        timeout => $timeout, interval => 0.25, soft => 1);
    return ($ok, time - $t);
}

sub status_summary {
    my ($self, $tag) = @_;
    return join ' ', split /\n/, $self->{s}->psql("SELECT status || '=' || count(*) FROM calls WHERE "
        . $self->tag_where($tag) . " GROUP BY status ORDER BY status");
}

# The end-of-scenario checks: N calls of TAG stored and settled within
# TIMEOUT seconds, the cap and the phone lock held at the provider, no
# attempt started twice, every attempt ended.  Returns the simulator's stats.
sub end_checks {
    my ($self, $tag, $n, $cap, $timeout) = @_;
    my $s = $self->{s};
    my ($ok, $took) = $self->wait_settled($tag, $timeout);
    ok($ok, sprintf('%s: all %d calls COMPLETED or FAILED (%.1fs)', $tag, $n, $took))
        or diag($s->psql("SELECT id, status, attempts, last_error, published_at FROM calls WHERE "
            . $self->tag_where($tag) . " AND status NOT IN ('COMPLETED', 'FAILED') LIMIT 20"));
    is($self->count_where($tag, 'true'), $n, "$tag: $n calls stored");
    diag("$tag: " . $self->status_summary($tag));
    my $st = $s->sim_stats;
    diag("$tag: simulator started=$st->{started} maxInProgress=$st->{maxInProgress} "
        . "maxPerPhone=$st->{maxPerPhone} webhooksSent=$st->{webhooksSent} "
        . "webhookFailures=$st->{webhookFailures} duplicateStarts=$st->{duplicateStarts}");
    cmp_ok($st->{maxInProgress}, '<=', $cap, "$tag: never more than $cap calls at the provider");
    cmp_ok($st->{maxPerPhone}, '<=', 1, "$tag: never two calls at once for one number");
    is($st->{duplicateStarts}, 0, "$tag: no attempt started twice at the provider");
    is($s->psql("SELECT count(*) FROM call_attempts a JOIN calls c ON c.id = a.call_id WHERE "
            . $self->tag_where($tag) . " AND a.ended_at IS NULL"), 0, "$tag: every attempt ended");
    return $st;
}

# References "<call id>:<attempt>" the simulator accepted in this scenario,
# with how often; only those of TAG's calls when TAG is given.
sub sim_references {
    my ($self, $tag) = @_;
    my %refs;
    my $text = CallorchTest::slurp_from($self->_sim_log, $self->{sim_from});
    $refs{$1}++ while $text =~ /msg="call started" .*?\breference=(\S+)/g;
    if (defined $tag) {
        my %ids = map { $_ => 1 } split /\n/, $self->{s}->psql("SELECT id FROM calls WHERE " . $self->tag_where($tag));
        delete @refs{ grep { !$ids{ (split /:/)[0] } } keys %refs };
    }
    return \%refs;
}

# Attempts recorded for TAG: { "<id>:<n>" => outcome }.
sub attempts_of {
    my ($self, $tag) = @_;
    my %att;
    for my $row (split /\n/, $self->{s}->psql("SELECT a.call_id || ':' || a.attempt, coalesce(a.outcome, '-')"
            . " FROM call_attempts a JOIN calls c ON c.id = a.call_id WHERE " . $self->tag_where($tag))) {
        my ($ref, $outcome) = split /\|/, $row;
        $att{$ref} = $outcome;
    }
    return \%att;
}

# Exactly-once per attempt at the provider, for scenarios that kill
# children: every attempt the simulator accepted is recorded once, and every
# recorded attempt reached the provider, except those whose child died
# between the IN_PROGRESS commit and the request: those were reclaimed
# (outcome TIMEOUT) after call_timeout.  Returns how many were lost so.
sub attempt_checks {
    my ($self, $tag) = @_;
    my $s = $self->{s};
    my $refs = $self->sim_references($tag);
    my $att = $self->attempts_of($tag);
    my @twice = grep { $refs->{$_} > 1 } sort keys %$refs;
    is(scalar @twice, 0, "$tag: no reference started twice (simulator log)") or diag("@twice");
    my @unknown = grep { !exists $att->{$_} } sort keys %$refs;
    is(scalar @unknown, 0, "$tag: every attempt the provider started is recorded") or diag("@unknown");
    my @never = grep { !exists $refs->{$_} } sort keys %$att;
    my @never_bad = grep { $att->{$_} ne 'TIMEOUT' } @never;
    is(scalar @never_bad, 0, "$tag: every recorded attempt that never reached the provider was reclaimed")
        or diag(join ' ', map { "$_=$att->{$_}" } @never_bad);
    my $started = 0;
    $started += $_ for values %$refs;
    is($started, scalar(keys %$att) - @never,
        sprintf("$tag: provider starts (%d) = attempts recorded (%d) - attempts lost with a killed child (%d)",
            $started, scalar(keys %$att), scalar @never));
    is($s->psql("SELECT count(*) FROM calls c WHERE " . $self->tag_where($tag)
            . " AND attempts <> (SELECT count(*) FROM call_attempts a WHERE a.call_id = c.id)"), 0,
        "$tag: one attempt row per attempt");
    is($self->count_where($tag, 'attempts > max_attempts'), 0, "$tag: no call made more than max_attempts attempts");
    is($self->count_where($tag, "status = 'FAILED' AND attempts < max_attempts"), 0,
        "$tag: a call fails only after max_attempts attempts");
    return scalar @never;
}

# The master's children whose title matches RE (e.g. qr/kafka worker/).
sub children {
    my ($self, $master, $re) = @_;
    return grep { $_->{title} =~ $re } $self->{s}->children_of($master);
}

# The master survived, and no child died by a signal or exited non-zero
# since the scenario started.
sub no_crash_checks {
    my ($self, $tag, $master) = @_;
    ok(kill(0, $master), "$tag: the master (pid $master) is still running");
    my $log = $self->log_since_start;
    my @crashes = $log =~ /^(.*msg="child killed by signal".*)$/mg;
    is(scalar @crashes, 0, "$tag: no child was killed by a signal") or diag(join "\n", @crashes);
    my @bad_exits = grep { !/ status=0 / } $log =~ /^(.*msg="child exited".*)$/mg;
    is(scalar @bad_exits, 0, "$tag: no child exited with an error") or diag(join "\n", @bad_exits);
}

# No slot is held once everything settled (GET /api/v1/metrics inFlight).
sub no_slot_held {
    my ($self, $tag) = @_;
    my ($code, $m) = $self->{s}->api(GET => '/api/v1/metrics');
    is(ref $m && $m->{inFlight}, 0, "$tag: no slot held once everything settled");
}

1;
