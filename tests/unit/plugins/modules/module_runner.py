# -*- coding: utf-8 -*-
"""What the module tests share: run a module as Ansible does (a child
process reading its arguments as JSON), test data, bounded polling, and the
loopback addresses the swarm tests give each role so that ip filters and
the tracker can tell them apart."""

import hashlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
COLLECTIONS = os.path.join(ROOT, '.collections')

# libtorrent binds outgoing connections and announces to the listen address.
TRACKER_IP, SEED_IP, PEER_IP, STRANGER_IP = '127.0.0.2', '127.0.0.3', '127.0.0.5', '127.0.0.7'


def run_module(name, tmp_path, check_mode=False, diff=False, timeout=120, path_first=None, **args):
    """Run p2p.swarm.<name> in a child process; return (rc, result dict, stderr).
    path_first: a directory searched for imports before everything else."""
    if check_mode:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    # Ansible sends its temp dir; point it at tmp_path so nothing lands elsewhere.
    args.setdefault('_ansible_tmpdir', str(tmp_path))
    proc = subprocess.run(
        [sys.executable, '-m', 'ansible_collections.p2p.swarm.plugins.modules.' + name],
        input=json.dumps({'ANSIBLE_MODULE_ARGS': args}).encode(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path), timeout=timeout,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [path_first, COLLECTIONS]))),
        check=False)
    try:
        result = json.loads(proc.stdout.decode())
    except ValueError:
        raise AssertionError('module printed no JSON.\nstdout: %s\nstderr: %s'
                             % (proc.stdout.decode(), proc.stderr.decode()))
    return proc.returncode, result, proc.stderr.decode()


def assert_failed(outcome, *fragments):
    """outcome of run_module is a clean failure: one message holding every fragment."""
    rc, result, stderr = outcome
    assert rc == 1 and result.get('failed') is True, result
    assert 'Traceback' not in stderr and 'exception' not in result, (stderr, result)
    for fragment in fragments:
        assert fragment in result['msg'], result['msg']
    return result


def payload(size, seed=b'p2p'):
    """size bytes of reproducible, incompressible data."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + str(counter).encode()).digest()
        counter += 1
    return bytes(out[:size])


def wait_until(predicate, timeout, what):
    """Poll predicate until it returns something true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError('timed out after %s s waiting for %s' % (timeout, what))
