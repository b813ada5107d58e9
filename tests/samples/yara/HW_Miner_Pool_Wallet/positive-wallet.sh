#!/bin/sh
exec ./sysupdate --url pool.example.net:14444 -u 4A123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789ABCDEFGHJKLMNPQRSTUVWXYZab -p rig1
