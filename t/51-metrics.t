#!/usr/bin/perl
# GET /metrics: Prometheus text that promtool accepts, with values that
# match what this test did, summed over all children.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempfile);
use CallorchTest;

CallorchTest::require_stack();
my $promtool = CallorchTest::_which('promtool');
plan skip_all => 'promtool not installed (Debian package prometheus)' unless $promtool;

my $s = CallorchTest->new;
$s->start_all;
$s->migrate;
$s->start_sim('--delay', '10ms-50ms', '--success-rate', '1', '--seed', '7');
$s->write_config('http.workers' => 2, 'dispatch.scheduler_interval' => '100ms');
$s->start_daemon;

my $n = 40;
for my $i (1 .. $n) {
    my ($st) = $s->api(POST => '/api/v1/calls', { to => sprintf('+1555300%04d', $i), scriptId => 'm' });
    die "create failed: $st" unless $st == 201;
}
my ($bad) = $s->api(POST => '/api/v1/calls', { to => 'nope', scriptId => 'm' });
is($bad, 400, 'one invalid request');
$s->wait_for(sub { $s->psql("SELECT count(*) FROM calls WHERE status = 'COMPLETED'") == $n },
    timeout => 60, what => 'all calls completed');

# two webhooks that must be refused, for the rejection counters
my $http = HTTP::Tiny->new;
my $hook = $s->base_url . '/api/v1/callbacks/call-status';
$http->post($hook, { headers => { 'Content-Type' => 'application/json' }, content => '{}' });
$http->post($hook, { headers => { 'Content-Type' => 'application/json', 'webhook-id' => 'x1',
    'webhook-timestamp' => time, 'webhook-signature' => 'v1,AAAA' }, content => '{}' });

my $r = $http->get($s->base_url . '/metrics');
is($r->{status}, 200, 'GET /metrics answers 200 without an API key');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'text exposition content type');
my $text = $r->{content};

my ($fh, $file) = tempfile(UNLINK => 1);
print $fh $text;
close $fh;
my $lint = `$promtool check metrics < $file 2>&1`;
is($? >> 8, 0, 'promtool check metrics accepts the exposition') or diag($lint);

sub metric {
    my ($name) = @_;
    my ($v) = $text =~ /^\Q$name\E (\S+)$/m;
    return $v;
}
my $sim = $s->sim_stats;
is(metric('callorch_calls_created_total'), $n, 'calls created counted across both http workers');
is(metric('callorch_dispatch_total{outcome="started"}'), $sim->{started},
    'dispatch started = provider starts seen by the simulator');
is(metric('callorch_webhooks_total{status="COMPLETED"}'), $n, 'completed webhooks counted');
is(metric('callorch_calls{status="COMPLETED"}'), $n, 'calls by status gauge');
is(metric('callorch_calls{status="PENDING"}'), 0, 'no call pending');
is(metric('callorch_slots_in_use'), 0, 'no slot in use');
is(metric('callorch_slots_max'), 30, 'max slots from the config');
is(metric('callorch_dispatch_paused'), 0, 'not paused');
is(metric('callorch_http_requests_total{route="calls_create",code="2xx"}'), $n,
    'HTTP requests by route and status: 2xx creates');
is(metric('callorch_http_requests_total{route="calls_create",code="4xx"}'), 1,
    'HTTP requests by route and status: the 400');
is(metric('callorch_webhook_rejections_total{reason="missing_header"}'), 1,
    'webhook rejected for a missing header counted');
is(metric('callorch_webhook_rejections_total{reason="malformed"}')
    + metric('callorch_webhook_rejections_total{reason="bad_signature"}'), 1,
    'webhook rejected for its signature counted');
cmp_ok(metric('callorch_http_request_duration_seconds_count'), '>=', $n + 1,
    'request duration histogram counts the requests');
is(metric('callorch_http_request_duration_seconds_bucket{le="+Inf"}'),
    metric('callorch_http_request_duration_seconds_count'), 'histogram +Inf bucket = count');
my %by_worker = $text =~ /^callorch_http_worker_requests_total\{worker="(\d+)"\} (\d+)$/mg;
my $answered = 0;
$answered += $_ for values %by_worker;
ok(!grep({ $_ > 1 } keys %by_worker), 'requests by worker: only slots 0 and 1 of 2 workers')
    or diag(explain(\%by_worker));
is($answered, metric('callorch_http_request_duration_seconds_count'),
    'requests by worker add up to all the requests answered');

# a killed child is counted as a restart
my ($kafka) = grep { $_->{title} =~ /kafka worker 0/ } $s->children_of($s->daemon_pid);
kill 'KILL', $kafka->{pid};
$s->wait_for(sub {
    my $t = $http->get($s->base_url . '/metrics')->{content};
    $t =~ /^callorch_child_restarts_total\{kind="kafka"\} 1$/m;
}, what => 'kafka restart counted');
pass('child restarts counted by kind');

is($s->stop_daemon, 0, 'clean stop');
done_testing;
