#!/usr/bin/env bash
# Install what the demo, the tests and the benchmark need on a fresh Debian
# machine (run as root). Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# tcpdump: the security tests capture the lab bridge (tests/integration/test_faults.py).
# chromium: the tracker's progress page in a headless browser (tests/integration/test_progress_page.py).
for cmd in sshd:openssh-server ssh:openssh-client ip:iproute2 tc:iproute2 bridge:iproute2 unshare:util-linux tcpdump:tcpdump chromium:chromium; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${cmd%%:*}" ] || need_apt+=("${cmd##*:}")
done
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The controller venv: ansible-core, libtorrent, test tools. Built from the
# system interpreter so lab hosts (which see the same /usr) can run it too.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt

# A libtorrent wheel for the managed hosts: lab hosts have no index, so the
# peer role pushes this file (the offline-site path).
mkdir -p .lab/wheels
if ! ls .lab/wheels/libtorrent-*.whl >/dev/null 2>&1; then
    .venv/bin/pip download -q --disable-pip-version-check --no-deps -d .lab/wheels libtorrent
fi
