#!/usr/bin/env bash
# Install what the demo, the tests and the benchmark need on a fresh Debian
# machine (run as root). Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# tcpdump: the security tests capture the lab bridge (tests/integration/test_faults.py).
# chromium: the tracker's progress page in a headless browser (tests/integration/test_progress_page.py).
# mmdebstrap, apt-ftparchive (apt-utils): the lab's image hosts and their apt repos (tests/lab/images.py).
# opentracker: a whitelisting tracker that is not the collection's (tests/integration/test_compose.py, bench/tracker_load.py).
for cmd in sshd:openssh-server ssh:openssh-client ip:iproute2 tc:iproute2 bridge:iproute2 unshare:util-linux tcpdump:tcpdump chromium:chromium mmdebstrap:mmdebstrap apt-ftparchive:apt-utils opentracker:opentracker; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${cmd%%:*}" ] || need_apt+=("${cmd##*:}")
done
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# Debian's own libtorrent (2.0.8 on Debian 12) under the system python: the
# tests check that it and the 2.1 wheel make the same torrents, and the lab's
# shared-/usr hosts then run the distribution's libtorrent as many fleets do.
/usr/bin/python3 -c 'import libtorrent' 2>/dev/null || need_apt+=(python3-libtorrent)
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

# libtorrent wheels for the managed hosts, one per CPython the hosts may have
# (bookworm 3.11, trixie 3.13, ...): the peer role pushes one (the offline-site
# path) and the lab serves them all as a package index (tests/lab/repos.py).
mkdir -p .lab/wheels
for v in 3.9 3.10 3.11 3.12 3.13; do
    if ! ls .lab/wheels/libtorrent-*-cp"${v/./}"-cp"${v/./}"-*manylinux*x86_64*.whl >/dev/null 2>&1; then
        .venv/bin/pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            --python-version "$v" --implementation cp --platform manylinux2014_x86_64 -d .lab/wheels libtorrent
    fi
done
