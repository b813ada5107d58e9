#!/bin/sh
# forward a local port to the backend; no program is attached to the connection
socat TCP-LISTEN:8080,fork,reuseaddr TCP:backend.internal:80 &
socat -d -d pty,raw,echo=0 pty,raw,echo=0
