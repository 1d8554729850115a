"""Bring up a lab, distribute a generated file over the swarm, print a summary.

Called by scripts/demo.sh, which installs what it needs first.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'lab'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))

from lab import Lab, parse_rate  # noqa: E402
from helpers import WHEEL_DIR, ansible_env, install_collection  # noqa: E402


def make_file(path, size):
    """Random content, written in 1 MiB chunks; returns its sha256."""
    digest = hashlib.sha256()
    with open(path, 'wb') as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1 << 20))
            digest.update(chunk)
            handle.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--hosts', type=int, default=10)
    parser.add_argument('--size-mb', type=int, default=100)
    parser.add_argument('--rate', default='50mbit')
    parser.add_argument('--forks', type=int, default=5)
    parser.add_argument('--keep-lab', action='store_true', help='leave the lab up afterwards')
    args = parser.parse_args()

    lab = Lab(args.hosts, rate=args.rate)
    print('== lab: %d hosts + 1 seeder, every link %s both ways' % (args.hosts, args.rate), flush=True)
    lab.up()
    try:
        work = tempfile.mkdtemp(prefix='p2p-demo-')
        os.makedirs(os.path.join(work, 'tmp'))
        env = ansible_env(install_collection(work), work)
        data_dir = os.path.join(lab.workdir, 'data')
        os.makedirs(data_dir, exist_ok=True)
        path = os.path.join(data_dir, 'demo.bin')
        size = args.size_mb * 1024 * 1024
        digest = make_file(path, size)
        print('== file: %s, %d MiB, sha256 %s' % (path, args.size_mb, digest[:16]), flush=True)
        playbook = [os.path.join(ROOT, '.venv', 'bin', 'ansible-playbook'), '-i', lab.inventory,
                    '-f', str(args.forks), '-e', 'p2p_wheel_dir=%s' % WHEEL_DIR]
        # Fresh lab hosts have no libtorrent: install it first (offline, from
        # the wheel directory) so the distribution time below is the transfer.
        print('== running: ansible-playbook -i %s -f %d p2p.swarm.prepare' % (lab.inventory, args.forks), flush=True)
        started = time.time()
        rc = subprocess.call(playbook + ['p2p.swarm.prepare'], env=env)
        prepare = time.time() - started
        if rc:
            return rc
        print('== running: ansible-playbook -i %s -f %d p2p.swarm.distribute -e file=%s -e dest=/srv/demo.bin'
              % (lab.inventory, args.forks, path), flush=True)
        started = time.time()
        rc = subprocess.call(playbook + ['p2p.swarm.distribute', '-e', 'file=%s' % path,
                                         '-e', 'dest=/srv/demo.bin'], env=env)
        total = time.time() - started
        summarize(lab, digest, size, args, total, prepare)
        return rc
    finally:
        if not args.keep_lab:
            lab.down()


def summarize(lab, digest, size, args, total, prepare):
    limit = size * 8 / parse_rate(args.rate)
    print('\n== summary')
    ok = 0
    for host in [h for h in lab.hosts if lab.group(h) == 'peers']:
        proc = lab.exec(host, ['sha256sum', '/srv/demo.bin'])
        good = proc.returncode == 0 and proc.stdout.split()[0] == digest
        ok += good
        print('  %-6s %s' % (host, 'verified' if good else 'MISSING OR WRONG'))
    print('  %d/%d hosts hold the verified file' % (ok, args.hosts))
    print('  libtorrent install on fresh hosts (first run only): %.1f s' % prepare)
    print('  distribute playbook, whole: %.1f s; S/B, the fastest any method could be: %.1f s; '
          'a copy from one server needs at least N x S/B = %.0f s' % (total, limit, args.hosts * limit))


if __name__ == '__main__':
    sys.exit(main())
