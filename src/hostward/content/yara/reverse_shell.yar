/*
 * Reverse-shell one-liners saved in scripts, cron jobs and dropped files: a shell whose standard
 * streams are a network connection. These are patterns in files; a reverse shell that is running is
 * found by the process detector (malware_0002) instead.
 */

rule HW_RevShell_Bash_DevTcp
{
    meta:
        family = "reverse_shell"
        severity = "critical"
        description = "Interactive shell redirected to /dev/tcp or /dev/udp (bash -i >& /dev/tcp/host/port 0>&1)"

    strings:
        $interactive = /(ba|z|k|da)?sh\s+-i\s*[0-9]*\s*>&\s*\/dev\/(tcp|udp)\/[^\s\/]{1,255}\/[0-9]{1,5}/
        $exec_fd = /exec\s+[0-9]{1,3}\s*<>\s*\/dev\/(tcp|udp)\/[^\s\/]{1,255}\/[0-9]{1,5}/
        $stdin_dup = /\/dev\/(tcp|udp)\/[^\s\/]{1,255}\/[0-9]{1,5}\s+0>&1/

    condition:
        filesize < 4MB and any of them
}

rule HW_RevShell_Netcat_Exec
{
    meta:
        family = "reverse_shell"
        severity = "critical"
        description = "netcat/ncat handing a shell to a connection (nc -e /bin/sh, ncat --exec, mkfifo | sh -i | nc)"

    strings:
        $e = /\b(nc|ncat|netcat|nc\.traditional)\s[^\n|;]{0,96}-[a-zA-Z]*[ec]\s*['"]?\/bin\/(ba|z|k|da)?sh\b/
        $exec = /\b(ncat|nc)\s[^\n|;]{0,96}--(exec|sh-exec|lua-exec)[= ]/
        $fifo = /\/bin\/(ba|z|k|da)?sh\s+-i\s*2>&1\s*\|\s*(nc|ncat|netcat)\s+[^\s|;]{1,255}\s+[0-9]{1,5}/

    condition:
        filesize < 4MB and any of them
}

rule HW_RevShell_Python_PTY
{
    meta:
        family = "reverse_shell"
        severity = "critical"
        description = "Python connecting a socket and spawning a shell on it (os.dup2 of the socket to 0/1/2, pty.spawn)"

    strings:
        $socket = "socket.socket(" ascii
        $connect = /\.connect\s*\(\s*\(/
        $dup2 = /os\.dup2\s*\(\s*\w{1,32}\.fileno\s*\(\s*\)\s*,\s*[012]\s*\)/
        $pty = /pty\.spawn\s*\(\s*["']\/bin\/(ba|z|k|da)?sh/
        $call = /subprocess\.(call|Popen|run)\s*\(\s*\[\s*["']\/bin\/(ba|z|k|da)?sh["']\s*,\s*["']-i["']/

    condition:
        filesize < 4MB and $socket and $connect and (#dup2 >= 2 or $pty) and ($pty or $call or #dup2 >= 3)
}

rule HW_RevShell_Perl_Socket
{
    meta:
        family = "reverse_shell"
        severity = "critical"
        description = "Perl attaching STDIN/STDOUT/STDERR to a socket and executing a shell"

    strings:
        $use = "use Socket" ascii
        $sock = /socket\s*\(\s*\w{1,16}\s*,\s*PF_INET/
        $std = /open\s*\(\s*STD(IN|OUT|ERR)\s*,\s*["']>&/
        $sh = /exec\s*\(?\s*["']\/bin\/(ba|z|k|da)?sh/
        $io = /IO::Socket::INET\s*\(\s*PeerAddr/
        $fdopen = /STDIN\s*->\s*fdopen\s*\(/

    condition:
        filesize < 4MB and (($use and $sock and #std >= 2 and $sh) or ($io and $fdopen))
}

rule HW_RevShell_Socat_Exec
{
    meta:
        family = "reverse_shell"
        severity = "critical"
        description = "socat connecting a shell (exec:/system:) to a TCP/UDP peer"

    strings:
        $exec_first = /socat\s[^\n]{0,128}(exec|system):['"]?[^\s'",]{0,32}(ba|z|k|da)?sh\b[^\n]{0,160}\s(tcp|tcp4|tcp6|tcp-connect|udp|openssl|openssl-connect):[^\s:]{1,255}:[0-9]{1,5}/ nocase
        $peer_first = /socat\s[^\n]{0,128}(tcp|tcp4|tcp6|tcp-connect|udp|openssl|openssl-connect):[^\s:]{1,255}:[0-9]{1,5}[^\n]{0,64}\s(exec|system):['"]?[^\s'",]{0,32}(ba|z|k|da)?sh\b/ nocase

    condition:
        filesize < 4MB and any of them
}
