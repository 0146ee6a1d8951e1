#!/usr/bin/perl
# The HTTP/1.1 layer as a client sees it (DESIGN.md section 4): keep-alive,
# pipelining (answers in request order), Connection: close, slow clients cut
# off by [http] idle_timeout, and [http] max_connections per worker — over
# raw sockets, byte for byte.
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use List::Util qw(max shuffle);
use Test::More;
use Time::HiRes qw(time sleep);
use CallorchTest;

CallorchTest::require_stack();

my $s = CallorchTest->new(phone_base => 2_000_000);
$s->start_all;
$s->migrate;
# One worker, so that every connection lands in the same process.
$s->write_config('http.workers' => 1, 'http.idle_timeout' => '1s');
$s->start_daemon;

my $JSON = JSON::PP->new->canonical;
my $CUTOFF = 15;    # s: "closed before this" for the 1 s timeouts, generous on a loaded machine

# ------------------------------------------------------------- helpers ---


# One request as text.  HEADERS: [name, value] pairs; a JSON body gets
# Content-Type and Content-Length.
sub req {
    my ($method, $path, $body, @headers) = @_;
    my $version = 'HTTP/1.1';
    my $t = '';
    for my $h (@headers) {
        if ($h->[0] eq 'VERSION') {
            $version = $h->[1];
            next;
        }
        $t .= "$h->[0]: $h->[1]\r\n";
    }
    if (defined $body) {
        $body = $JSON->encode($body) if ref $body;
        $t .= "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n";
    }
    return "$method $path $version\r\nHost: 127.0.0.1\r\n$t\r\n" . ($body // '');
}

# one response from a raw socket (the harness reads it)
sub raw_read { return CallorchTest::raw_read(@_) }

# Whether the server closes SOCK within TIMEOUT seconds: returns 'eof'
# (or 'reset'), or 'timeout'.  Anything sent before is collected in
# ${*$sock}{co_rbuf}.
sub wait_closed {
    my ($sock, $timeout) = @_;
    my $end = time + $timeout;
    my $sel = IO::Select->new($sock);
    while ((my $left = $end - time) > 0) {
        next unless $sel->can_read($left);
        my $n = sysread($sock, my $chunk, 65536);
        return $! ? 'reset' : 'eof' if !defined $n;
        return 'eof' if $n == 0;
        ${*$sock}{co_rbuf} .= $chunk;
    }
    return 'timeout';
}


# ------------------------------------------------------------ keep-alive ---

{
    my $sock = $s->raw_connect;
    my (@status, %pids, $closes, @ids);
    for my $i (1 .. 100) {
        my $text;
        if ($i % 3 == 0) {
            $text = req(GET => '/healthz');
        } elsif ($i % 3 == 1) {
            $text = req(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => "ka-$i" });
        } else {
            $text = req(GET => "/api/v1/calls/$ids[-1]");
        }
        print {$sock} $text;
        my $r = raw_read($sock, 20);
        push @status, $r->{status};
        $pids{ $r->{json}{pid} } = 1 if $i % 3 == 0 && $r->{json};
        push @ids, $r->{json}{id} if $i % 3 == 1 && $r->{json};
        $closes++ if lc($r->{headers}{connection} // '') eq 'close';
        last unless $r->{status};
    }
    is(scalar @status, 100, 'keep-alive: 100 answers on one connection');
    is(scalar(grep { $_ >= 200 && $_ < 300 } @status), 100, 'keep-alive: all 2xx')
        or diag "statuses: @status";
    ok(!$closes, 'keep-alive: no answer says Connection: close');
    is(scalar keys %pids, 1, 'keep-alive: one worker served them all');
    close $sock;
}

# ------------------------------------------------------------ pipelining ---

{
    my $sock = $s->raw_connect;
    print {$sock} join '', map { req(POST => '/api/v1/calls', { to => $s->next_phone, scriptId => "pipe-$_" }) } 1 .. 20;
    my (@got, @ids, $loc_ok);
    for my $i (1 .. 20) {
        my $r = raw_read($sock, 20);
        last unless $r->{status};
        push @got, [ $r->{status}, $r->{json}{scriptId} // '' ];
        push @ids, $r->{json}{id};
        $loc_ok++ if ($r->{headers}{location} // '') eq "/api/v1/calls/" . ($r->{json}{id} // '-');
    }
    is_deeply(\@got, [ map { [ 201, "pipe-$_" ] } 1 .. 20 ],
        'pipelining: 20 POSTs written at once, answered 201 in request order');
    is($loc_ok, 20, 'pipelining: each Location names the call in its body');

    my @order = shuffle 0 .. $#ids;
    print {$sock} join '', map { req(GET => "/api/v1/calls/$ids[$_]") } @order;
    my @back = map { raw_read($sock, 20)->{json}{id} // '' } @order;
    is_deeply(\@back, [ @ids[@order] ], 'pipelining: 20 GETs in shuffled order, answered in that order');

    # Errors of the handler keep the connection and the order.
    print {$sock} req(GET => '/healthz'), req(GET => '/nope'),
        req(POST => '/api/v1/calls', { to => 'bad', scriptId => 'x' }),
        req(DELETE => '/api/v1/calls'), req(GET => "/api/v1/calls/$ids[0]");
    my @st = map { raw_read($sock, 20)->{status} } 1 .. 5;
    is("@st", '200 404 400 405 200', 'pipelining: 404, 400 and 405 in between keep order and connection');
    close $sock;
}

# ------------------------------------------------------ Connection: close ---

{
    my $sock = $s->raw_connect;
    print {$sock} req(GET => '/healthz', undef, [ Connection => 'close' ]);
    my $r = raw_read($sock, 20);
    is($r->{status}, 200, 'Connection: close: answered');
    is(lc($r->{headers}{connection} // ''), 'close', 'Connection: close: echoed');
    is(wait_closed($sock, $CUTOFF), 'eof', 'Connection: close: then the server closes');
    close $sock;

    $sock = $s->raw_connect;
    print {$sock} req(GET => '/healthz'), req(GET => '/healthz', undef, [ Connection => 'close' ]),
        req(GET => '/healthz');
    my @st = map { raw_read($sock, 20)->{status} } 1 .. 2;
    is("@st", '200 200', 'pipelined, close on the 2nd: two answers');
    is(wait_closed($sock, $CUTOFF), 'eof', '... then EOF; the 3rd is not answered');
    is(${*$sock}{co_rbuf} // '', '', '... nothing after the 2nd answer');
    close $sock;

    $sock = $s->raw_connect;
    print {$sock} req(GET => '/healthz', undef, [ VERSION => 'HTTP/1.0' ]);
    $r = raw_read($sock, 20);
    is($r->{status}, 200, 'HTTP/1.0: answered');
    is(wait_closed($sock, $CUTOFF), 'eof', 'HTTP/1.0 without keep-alive: closed after the answer');
    close $sock;

    $sock = $s->raw_connect;
    print {$sock} req(GET => '/healthz', undef, [ VERSION => 'HTTP/1.0' ], [ Connection => 'keep-alive' ]);
    $r = raw_read($sock, 20);
    is(lc($r->{headers}{connection} // ''), 'keep-alive', 'HTTP/1.0 keep-alive: Connection: keep-alive');
    print {$sock} req(GET => '/healthz', undef, [ VERSION => 'HTTP/1.0' ]);
    is(raw_read($sock, 20)->{status}, 200, 'HTTP/1.0 keep-alive: a second request on the connection');
    close $sock;
}

# ------------------------------------------------------------ slow clients ---

{
    # Half the headers, then nothing.
    my $sock = $s->raw_connect;
    print {$sock} "POST /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl";
    my $t0 = time;
    my $how = wait_closed($sock, $CUTOFF);
    isnt($how, 'timeout', "half a header block: the connection is closed within ${CUTOFF}s");
    my $got = ${*$sock}{co_rbuf} // '';
    ok($got eq '' || $got =~ m{^HTTP/1\.1 408 }, 'half a header block: 408 or nothing')
        or diag $got;
    note(sprintf 'closed after %.1fs', time - $t0);
    close $sock;

    # Complete headers, part of the body.
    $sock = $s->raw_connect;
    print {$sock} "POST /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"to\":";
    $how = wait_closed($sock, $CUTOFF);
    isnt($how, 'timeout', "part of the body: closed within ${CUTOFF}s");
    $got = ${*$sock}{co_rbuf} // '';
    ok($got eq '' || $got =~ m{^HTTP/1\.1 408 }, 'part of the body: 408 or nothing') or diag $got;
    close $sock;

    # A header byte every 0.2 s: trickling does not extend the deadline.
    $sock = $s->raw_connect;
    print {$sock} "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    my $sel = IO::Select->new($sock);
    my $end = time + $CUTOFF;
    my $closed = 0;
    while (time < $end) {
        local $SIG{PIPE} = 'IGNORE';
        if ($sel->can_read(0.2)) {
            $closed = 1 if wait_closed($sock, 0.1) ne 'timeout';
            last if $closed;
        }
        last unless syswrite($sock, 'a');
    }
    ok($closed || wait_closed($sock, 1) ne 'timeout',
        "a byte every 0.2s: cut off within ${CUTOFF}s all the same");
    close $sock;

    # An idle keep-alive connection.
    $sock = $s->raw_connect;
    print {$sock} req(GET => '/healthz');
    is(raw_read($sock, 20)->{status}, 200, 'keep-alive connection served');
    is(wait_closed($sock, $CUTOFF), 'eof', "idle keep-alive connection closed within ${CUTOFF}s");
    is(${*$sock}{co_rbuf} // '', '', '... silently (no 408 on an idle connection)');
    close $sock;

    my ($st) = $s->api(GET => '/healthz');
    is($st, 200, 'the server still serves');
}

# ------------------------------------------------------- max_connections ---

is($s->stop_daemon, 0, 'callorchd stops cleanly');
$s->write_config('http.workers' => 1, 'http.max_connections' => 5, 'http.idle_timeout' => '30s');
my $master = $s->start_daemon;

{
    my ($worker) = grep { $_->{title} =~ /http/ } $s->children_of($master);
    ok($worker, "the http worker: pid $worker->{pid} ($worker->{title})") or BAIL_OUT('no http worker');
    my $port = $s->http_port;

    # Connections the worker accepted: established sockets on the HTTP port
    # whose inode is one of the worker's descriptors (the kernel's accept
    # queue holds sockets no process owns yet).
    my $accepted = sub {
        my %ours;
        opendir my $dh, "/proc/$worker->{pid}/fd" or return -1;
        for (readdir $dh) {
            my $l = readlink "/proc/$worker->{pid}/fd/$_" // next;
            $ours{$1} = 1 if $l =~ /^socket:\[(\d+)\]$/;
        }
        my $n = 0;
        for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
            open my $fh, '<', $f or next;
            while (<$fh>) {
                my @f = split ' ';
                $n++ if @f > 9 && $f[1] =~ /:([0-9A-F]{4})$/ && hex($1) == $port && $f[3] eq '01'
                    && $ours{ $f[9] };
            }
        }
        return $n;
    };

    $s->wait_for(sub { $accepted->() == 0 }, timeout => 10, what => 'no client connection left');
    my @idle = map { $s->raw_connect } 1 .. 10;
    ok($s->wait_for(sub { $accepted->() == 5 }, timeout => 10, soft => 1),
        '10 idle clients: the worker takes 5 of them');
    my $most = 0;
    for (1 .. 20) {
        $most = max($most, $accepted->());
        sleep 0.05;
    }
    is($most, 5, 'never more than 5 at once');

    my $late = $s->raw_connect;
    print {$late} req(GET => '/healthz');
    my $r = raw_read($late, 1);
    is($r->{error} // '', 'timeout', 'at the cap a further client waits (not answered)');
    close $_ for @idle;
    $r = raw_read($late, 20);
    is($r->{status}, 200, 'once the idle clients left, the waiting one is served');
    ok($accepted->() <= 5, 'still at most 5');
    close $late;

    # The cap is not leaked: five fresh clients are served at once, again.
    $s->wait_for(sub { $accepted->() == 0 }, timeout => 10, what => 'the connections to close');
    my @five = map { $s->raw_connect } 1 .. 5;
    print {$_} req(GET => '/healthz') for @five;
    my @st = map { raw_read($_, 20)->{status} } @five;
    is("@st", '200 200 200 200 200', 'five keep-alive clients served');
    my $sixth = $s->raw_connect;
    print {$sixth} req(GET => '/healthz');
    is(raw_read($sixth, 1)->{error} // '', 'timeout', 'a sixth waits while the five stay open');
    close $five[0];
    is(raw_read($sixth, 20)->{status}, 200, 'one of the five leaves: the sixth is served');
    close $_ for @five, $sixth;
    my ($st) = $s->api(GET => '/healthz');
    is($st, 200, 'the server still serves');
}

is($s->stop_daemon, 0, 'callorchd stops cleanly');
my @errors = grep { /level=error/ && /role=(?:http|master)\b/ } split /\n/, $s->log_text;
is(scalar @errors, 0, 'no errors logged by the http workers or the master') or diag join "\n", @errors;

done_testing;
