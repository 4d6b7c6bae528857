#!/bin/sh
# The page names the container, then nginx in the foreground (PID 1: SIGQUIT stops it gracefully).
mkdir -p /www
hostname > /www/index.html
exec nginx
