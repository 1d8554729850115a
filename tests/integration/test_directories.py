"""Directories and archives end to end on a small lab.

A directory on the seeder is packed into a deterministic tar, the swarm moves
that one file to each host's cache, and p2p_unpack extracts it into dest; an
archive with p2p_unpack=true goes the same way without the packing. Three
hosts (P2P_LAB_HOSTS) and small files: this checks the wiring, not the speed.
Run it on a lab of its own, for instance:

    P2P_LAB_PREFIX=p2pdir P2P_LAB_SUBNET=10.235.0 P2P_LAB_DIR=/var/lib/p2p-dir-lab P2P_LAB_HOSTS=3 \\
        .venv/bin/python -m pytest -p no:cacheprovider -q tests/integration/test_directories.py
"""
import hashlib
import io
import os
import shutil
import stat
import tarfile

import pytest

from helpers import WHEEL_DIR, describe, peers, run_playbook, swarm_ended, swarm_processes

pytestmark = pytest.mark.lab

DEST = '/opt/app'
FORKS = 3


def write(path, data, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as handle:
        handle.write(data)
    os.chmod(path, mode)


@pytest.fixture(scope='module')
def tree(lab):
    """A directory tree where the seed host can read it (the shared part of the lab's files)."""
    root = os.path.join(lab.workdir, 'data', 'app-tree')
    shutil.rmtree(root, ignore_errors=True)
    write(os.path.join(root, 'bin', 'app'), b'#!/bin/sh\necho app\n', 0o755)
    write(os.path.join(root, 'lib', 'app', 'blob.bin'), os.urandom(3 * 1024 * 1024 + 17), 0o644)
    write(os.path.join(root, 'etc', 'app.conf'), b'level=1\n', 0o640)
    write(os.path.join(root, 'share', 'doc', 'deep', 'README'), b'read me\n', 0o444)
    os.makedirs(os.path.join(root, 'var', 'empty'))
    os.chmod(os.path.join(root, 'etc'), 0o750)
    os.symlink('lib/app/blob.bin', os.path.join(root, 'current'))
    os.chmod(root, 0o755)
    return root


def local_listing(root):
    """{relative path: description} as the hosts' listing below gives it."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = 'l -> ' + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = 'd %o' % stat.S_IMODE(st.st_mode)
            else:
                with open(path, 'rb') as handle:
                    found[rel] = 'f %o %s' % (stat.S_IMODE(st.st_mode), hashlib.sha256(handle.read()).hexdigest())
    return found


def host_listing(lab, host, root):
    """The same listing of root on a lab host, from inside the host."""
    script = r'''
cd "$1" || exit 3
find . -mindepth 1 | sort | while IFS= read -r p; do
  rel=${p#./}
  if [ -L "$p" ]; then echo "$rel	l -> $(readlink "$p")"
  elif [ -d "$p" ]; then echo "$rel	d $(stat -c %a "$p")"
  else echo "$rel	f $(stat -c %a "$p") $(sha256sum < "$p" | cut -d' ' -f1)"
  fi
done
'''
    proc = lab.exec(host, ['sh', '-c', script, 'listing', root])
    assert proc.returncode == 0, (host, proc.stdout, proc.stderr)
    return dict(line.split('\t', 1) for line in proc.stdout.splitlines() if line)


def run_vars(file, dest, **extra):
    values = {'file': file, 'dest': dest, 'p2p_wheel_dir': WHEEL_DIR}
    values.update(extra)
    return values


def hidden_leftovers(lab, host, parent):
    return [n for n in lab.exec(host, ['ls', '-A', parent]).stdout.split() if n.startswith('.')]


def test_directory_reaches_every_host_with_its_modes(lab, env, tree):
    proc = run_playbook(lab, env, FORKS, run_vars(tree, DEST))
    assert proc.returncode == 0, describe(proc)
    expected = local_listing(tree)
    assert len(expected) == 14
    for host in peers(lab):
        assert proc.recap[host]['failed'] == 0 and proc.recap[host]['changed'] > 0, describe(proc)
        assert host_listing(lab, host, DEST) == expected, host
        top = lab.exec(host, ['stat', '-c', '%a', DEST]).stdout.strip()
        assert top == '755', (host, top)
        assert hidden_leftovers(lab, host, '/opt') == [], host
        # The swarm moved one tar into the host's cache, not into dest.
        cached = lab.exec(host, ['ls', '/var/lib/p2p-swarm/cache']).stdout.split()
        assert cached == ['app-tree.tar'], (host, cached)
    assert swarm_ended(lab) == []


def test_second_run_changes_nothing(lab, env, tree):
    inode = {h: lab.exec(h, ['stat', '-c', '%i', DEST]).stdout for h in peers(lab)}
    proc = run_playbook(lab, env, FORKS, run_vars(tree, DEST))
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['changed'] == 0 and proc.recap[host]['failed'] == 0, describe(proc)
        assert lab.exec(host, ['stat', '-c', '%i', DEST]).stdout == inode[host], host
    assert swarm_ended(lab) == []


def test_changed_file_replaces_the_tree(lab, env, tree):
    path = os.path.join(tree, 'etc', 'app.conf')
    write(path, b'level=2\n', 0o600)
    proc = run_playbook(lab, env, FORKS, run_vars(tree, DEST))
    assert proc.returncode == 0, describe(proc)
    expected = local_listing(tree)
    for host in peers(lab):
        assert proc.recap[host]['changed'] > 0, describe(proc)
        assert host_listing(lab, host, DEST) == expected, host
        assert hidden_leftovers(lab, host, '/opt') == [], host


def test_tar_gz_with_unpack(lab, env):
    archive = os.path.join(lab.workdir, 'data', 'site.tar.gz')
    files = {'index.html': (b'<h1>hi</h1>\n', 0o644), 'cgi/run.sh': (b'#!/bin/sh\n', 0o755)}
    with tarfile.open(archive, 'w:gz') as tar:
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo('./' + name)
            info.size, info.mode, info.mtime = len(data), mode, 1600000000
            tar.addfile(info, io.BytesIO(data))
    proc = run_playbook(lab, env, FORKS, run_vars(archive, '/srv/site', p2p_unpack='true'))
    assert proc.returncode == 0, describe(proc)
    expected = {'cgi': 'd 755'}
    for name, (data, mode) in files.items():
        expected[name] = 'f %o %s' % (mode, hashlib.sha256(data).hexdigest())
    for host in peers(lab):
        assert proc.recap[host]['failed'] == 0 and proc.recap[host]['changed'] > 0, describe(proc)
        assert host_listing(lab, host, '/srv/site') == expected, host
        assert hidden_leftovers(lab, host, '/srv') == [], host
    again = run_playbook(lab, env, FORKS, run_vars(archive, '/srv/site', p2p_unpack='true'))
    assert again.returncode == 0, describe(again)
    for host in peers(lab):
        assert again.recap[host]['changed'] == 0, describe(again)
    assert swarm_ended(lab) == []


def test_unsafe_archive_fails_each_host_and_keeps_dest(lab, env):
    archive = os.path.join(lab.workdir, 'data', 'evil.tar.gz')
    with tarfile.open(archive, 'w:gz') as tar:
        for name, data in (('ok.txt', b'fine\n'), ('../evil', b'escaped\n')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for host in peers(lab):
        assert lab.exec(host, ['sh', '-c', 'mkdir -p /srv/guarded && echo old > /srv/guarded/keep']).returncode == 0
    proc = run_playbook(lab, env, FORKS, run_vars(archive, '/srv/guarded', p2p_unpack='true'))
    assert proc.returncode != 0
    assert "archive member '../evil' escapes dest" in proc.stdout, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['failed'] == 1, describe(proc)
        assert host_listing(lab, host, '/srv/guarded') == {'keep': 'f 644 %s' % hashlib.sha256(b'old\n').hexdigest()}
        assert lab.exec(host, ['test', '-e', '/srv/evil']).returncode != 0, host
        assert hidden_leftovers(lab, host, '/srv') == [], host
    assert swarm_ended(lab) == []


def test_plain_file_still_goes_to_dest(lab, env):
    """A regular file without p2p_unpack takes the usual way: straight to dest, no cache copy."""
    path = os.path.join(lab.workdir, 'data', 'plain.bin')
    data = os.urandom(300 * 1024)
    write(path, data, 0o644)
    proc = run_playbook(lab, env, FORKS, run_vars(path, '/srv/plain.bin'))
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert proc.recap[host]['failed'] == 0, describe(proc)
        assert lab.exec(host, ['sha256sum', '/srv/plain.bin']).stdout.split()[0] == hashlib.sha256(data).hexdigest()
        assert lab.exec(host, ['test', '-e', '/var/lib/p2p-swarm/cache/plain.bin']).returncode != 0, host
        lab.exec(host, ['rm', '-f', '/srv/plain.bin'])     # the lab is shared with the other test files
