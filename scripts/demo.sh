#!/usr/bin/env bash
# The demo: a lab of real sshd hosts (network namespaces, shaped links), a
# generated file, distributed over the swarm with the distribute playbook, a
# summary, and the lab torn down. Run as root on Debian.
#   bash scripts/demo.sh [--hosts 10] [--size-mb 100] [--rate 50mbit] [--forks 5]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
