#!/bin/sh
VERSION="ng"
ADVISORY="This script should be used for authorized penetration testing only"
# linpeas.sh - part of PEASS-ng
