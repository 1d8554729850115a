#!/bin/sh
# Test-only ssh wrapper (ANSIBLE_SSH_EXECUTABLE): log every invocation, one
# line of arguments per call, then run the real ssh. With pipelining, one
# module run on a host is one ssh invocation: a round.
printf '%s\n' "$*" >> "$P2P_SSH_LOG"
exec ssh "$@"
