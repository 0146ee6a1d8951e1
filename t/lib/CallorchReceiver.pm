package CallorchReceiver;
# A webhook receiver for the provider simulator's tests (t/20, t/21): a
# forked single-process select() loop that records each request as one JSON
# line (time, path, headers, raw body) in FILE before answering.  Its answer
# depends on the path: /fail/N → 503 for the first N requests to that path,
# then 200; /status/CODE → always CODE; /hang… → recorded, never answered
# (the connection stays open until the client gives up); anything else
# (e.g. /hook) → 200.  t/90-events.t uses it for client events too.
#
#   my $rcv = CallorchReceiver->start("$dir/hooks.jsonl");
#   ... webhookUrl => $rcv->url . '/hook' ...
#   my @h = $rcv->hooks_for($reference);
#
# The process is killed when the object goes away or the test ends.
use strict;
use warnings;

use Carp qw(croak);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(_exit);
use Scalar::Util qw(weaken);
use Time::HiRes qw(time);

my $JSON = JSON::PP->new->utf8->canonical;
my @LIVE;

# Listen on 127.0.0.1 (a port of its own), fork the loop that appends to
# FILE; returns the receiver.
sub start {
    my ($class, $file) = @_;
    my $lsock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 128,
        Proto => 'tcp', ReuseAddr => 1) or croak "receiver: $!";
    my $port = $lsock->sockport;
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        eval { _serve($lsock, $file) };
        _exit(0);    # never run the parent's END blocks
    }
    close $lsock;
    my $self = bless { pid => $pid, owner => $$, file => $file, url => "http://127.0.0.1:$port" }, $class;
    push @LIVE, $self;
    weaken($LIVE[-1]);
    return $self;
}

sub url  { return $_[0]{url} }
sub file { return $_[0]{file} }
sub pid  { return $_[0]{pid} }

sub _serve {
    my ($lsock, $file) = @_;
    open my $out, '>>', $file or die "$file: $!";
    $out->autoflush(1);
    my $sel = IO::Select->new($lsock);
    my (%buf, %hits);
    while (1) {
        for my $fh ($sel->can_read) {
            if ($fh == $lsock) {
                my $c = $lsock->accept or next;
                $sel->add($c);
                $buf{$c} = '';
                next;
            }
            my $n = sysread($fh, my $chunk, 65536);
            if (!$n) {
                $sel->remove($fh);
                delete $buf{$fh};
                close $fh;
                next;
            }
            $buf{$fh} .= $chunk;
            while ($buf{$fh} =~ /\A(.*?)\r\n\r\n/s) {
                my $head = $1;
                my ($line, @lines) = split /\r\n/, $head;
                my %h = map { /^([^:]+):\s*(.*?)\s*$/ ? (lc $1 => $2) : () } @lines;
                my $len = $h{'content-length'} // 0;
                last if length($buf{$fh}) < length($head) + 4 + $len;
                my $body = substr($buf{$fh}, length($head) + 4, $len);
                substr($buf{$fh}, 0, length($head) + 4 + $len) = '';
                my (undef, $path) = split / /, $line;
                print $out $JSON->encode({ t => time, path => $path, headers => \%h, body => $body }), "\n";
                next if $path =~ m{^/hang};
                my $code = 200;
                $code = $1 if $path =~ m{^/status/(\d+)};
                $code = 503 if $path =~ m{^/fail/(\d+)} && ++$hits{$path} <= $1;
                syswrite($fh, "HTTP/1.1 $code " . ($code == 200 ? 'OK' : 'X') . "\r\nContent-Length: 0\r\n\r\n");
            }
        }
    }
}

# All requests received so far, oldest first, bodies decoded into {json}.
sub hooks {
    my ($self) = @_;
    open my $fh, '<', $self->{file} or return ();
    # only whole lines: the receiver may be writing the last one right now
    my @h = map { eval { $JSON->decode($_) } // () } grep { /\S\n\z/ } <$fh>;
    $_->{json} = eval { $JSON->decode($_->{body}) } for @h;
    return @h;
}

# Those whose body has "reference": REF.
sub hooks_for {
    my ($self, $ref) = @_;
    return grep { ($_->{json}{reference} // '') eq $ref } $self->hooks;
}

# Kill the process (only the process that started it does).
sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    return unless $$ == $self->{owner};
    local ($?, $!);    # never change the test's exit status
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return;
}

sub DESTROY { $_[0]->stop }

END { $_->stop for grep { defined } @LIVE }

1;
