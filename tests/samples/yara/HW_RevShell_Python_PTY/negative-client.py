import os
import pty
import socket

def fetch(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect((host, port))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    return s.recv(4096)

def terminal():
    # local terminal emulator: spawn the user's shell on a pty, not on a socket
    pty.spawn(os.environ.get("SHELL", "/usr/bin/env"))
