#!/bin/bash
# MimiPenguin: dump cleartext credentials from memory
# usage: sudo ./mimipenguin.sh
