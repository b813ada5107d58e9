use strict;
use Socket;
socket(my $s, PF_INET, SOCK_STREAM, getprotobyname('tcp')) or die;
connect($s, sockaddr_in(80, inet_aton('127.0.0.1'))) or die;
open(STDOUT, '>', '/var/log/client.log') or die;
print $s "GET / HTTP/1.0\r\n\r\n";
