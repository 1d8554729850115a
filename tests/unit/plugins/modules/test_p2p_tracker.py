# -*- coding: utf-8 -*-
"""p2p_tracker, run as a subprocess the way Ansible runs a module."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import daemon

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
COLLECTIONS = os.path.join(ROOT, '.collections')
HASH_A = 'aa' * 20
HASH_B = 'bb' * 20
HASH_V2 = 'cc' * 32
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def run_module(**args):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    proc = subprocess.run(
        [sys.executable, '-m', 'ansible_collections.p2p.swarm.plugins.modules.p2p_tracker'],
        input=json.dumps({'ANSIBLE_MODULE_ARGS': args}), capture_output=True, check=False, text=True,
        env=env, timeout=60, cwd='/')
    try:
        return json.loads(proc.stdout)
    except ValueError:
        pytest.fail('module printed no JSON: rc=%s stdout=%r stderr=%r' % (proc.returncode, proc.stdout, proc.stderr))


def free_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def status(port):
    with OPENER.open('http://127.0.0.1:%d/status.json' % port, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def env(tmp_path):
    state_dir = str(tmp_path / 'tracker')
    port = free_port()
    yield {'state_dir': state_dir, 'port': port, 'bind_address': '127.0.0.1'}
    # Never leave a tracker behind, whatever the test did.
    script = os.path.join(state_dir, 'tracker.py')
    pid = daemon.read_pidfile(os.path.join(state_dir, 'tracker.pid'), script)
    if pid:
        daemon.stop(pid, script, timeout=5)


def test_start_idempotent_stop(env):
    first = run_module(**env)
    assert not first.get('failed'), first
    assert first['changed'] is True and first['started'] is True
    pid = first['pid']
    script = os.path.join(env['state_dir'], 'tracker.py')
    assert daemon.is_running(pid, script)
    assert status(env['port'])['pid'] == pid
    assert first['url'] == 'http://127.0.0.1:%d/announce' % env['port']
    assert first['status_url'] == 'http://127.0.0.1:%d/status.json' % env['port']
    assert first['announce_path'] == '/announce'
    assert first['registered'] == []
    with open(os.path.join(env['state_dir'], 'tracker.log')) as handle:
        assert 'started pid %d' % pid in handle.read()

    second = run_module(**env)
    assert second['changed'] is False and second['started'] is False
    assert second['pid'] == pid

    stopped = run_module(state='stopped', **env)
    assert stopped['changed'] is True and stopped['pid'] is None
    assert not daemon.is_running(pid, script)
    assert not os.path.exists('/proc/%d' % pid) or not daemon.is_running(pid, script)
    with pytest.raises(OSError):
        status(env['port'])
    again = run_module(state='stopped', **env)
    assert again['changed'] is False


def test_registrations(env):
    started = run_module(info_hashes=[HASH_A], **env)
    assert started['changed'] is True and started['registered'] == [HASH_A]
    assert list(status(env['port'])['torrents']) == [HASH_A]

    same = run_module(info_hashes=[HASH_A], **env)
    assert same['changed'] is False and same['added'] == []

    # A hybrid: both forms registered, served as one torrent; merged with HASH_A.
    hybrid = {'info_hash': HASH_B, 'info_hash_v2': HASH_V2, 'name': 'hybrid.bin', 'size': 1234}
    added = run_module(info_hashes=[hybrid], **env)
    assert added['changed'] is True and added['started'] is False
    assert added['added'] == [HASH_B, HASH_V2]
    assert added['registered'] == [HASH_A, HASH_B, HASH_V2]
    torrents = status(env['port'])['torrents']   # the module waited until the tracker had them
    assert sorted(torrents) == [HASH_A, HASH_B]
    assert torrents[HASH_B]['info_hashes'] == [HASH_B, HASH_V2]
    assert torrents[HASH_B]['name'] == 'hybrid.bin' and torrents[HASH_B]['size'] == 1234

    # A bare hash keeps the name and size registered before.
    bare = run_module(info_hashes=[HASH_B], **env)
    assert bare['changed'] is False
    assert status(env['port'])['torrents'][HASH_B]['name'] == 'hybrid.bin'

    # Check mode reports without touching anything.
    reg_file = os.path.join(env['state_dir'], 'torrents.json')
    before = open(reg_file).read()
    checked = run_module(info_hashes=['dd' * 20], _ansible_check_mode=True, **env)
    assert checked['changed'] is True and checked['added'] == ['dd' * 20]
    assert open(reg_file).read() == before

    exclusive = run_module(info_hashes=[HASH_A], exclusive=True, **env)
    assert exclusive['changed'] is True and exclusive['removed'] == [HASH_B, HASH_V2]
    assert list(status(env['port'])['torrents']) == [HASH_A]


def test_port_in_use_is_a_clear_failure(env):
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(('127.0.0.1', env['port']))
    busy.listen(1)
    try:
        result = run_module(**env)
    finally:
        busy.close()
    assert result['failed'] is True
    assert result['msg'].startswith('port %d already in use on ' % env['port'])
    assert result['pid'] is None
    assert daemon.read_pidfile(os.path.join(env['state_dir'], 'tracker.pid'),
                               os.path.join(env['state_dir'], 'tracker.py')) is None


def test_config_change_restarts(env):
    first = run_module(**env)
    changed = run_module(interval=5, **env)
    assert changed['changed'] is True and changed['started'] is True
    assert changed['pid'] != first['pid']
    assert not daemon.is_running(first['pid'], os.path.join(env['state_dir'], 'tracker.py'))
    assert status(env['port'])['interval'] == 5


def test_check_mode_start_does_nothing(env):
    result = run_module(_ansible_check_mode=True, info_hashes=[HASH_A], **env)
    assert result['changed'] is True and result['started'] is True and result['pid'] is None
    assert not os.path.exists(env['state_dir'])


@pytest.mark.parametrize('item, message', [
    ('xyz', 'not a 40 or 64 hex digit info-hash'),
    ({'info_hash': HASH_A, 'colour': 'red'}, 'unknown keys: colour'),
    ({'info_hash': HASH_A, 'size': -4}, 'size must be a non-negative integer'),
    ({'info_hash': HASH_A, 'info_hash_v2': HASH_B}, 'info_hash_v2 must be 64 hex digits'),
    (42, 'must be a hex string or a dictionary'),
])
def test_bad_info_hashes_fail(env, item, message):
    result = run_module(info_hashes=[item], **env)
    assert result['failed'] is True and message in result['msg']
    assert not os.path.exists(os.path.join(env['state_dir'], 'tracker.pid'))


def test_claims_merge_without_a_restart_and_the_tracker_ends_with_the_last(env):
    """Two runs share one tracker: each its own claim and allow list; the
    tracker (not kept running) ends once both released theirs."""
    first = run_module(info_hashes=[HASH_A], user='run1', keep_running=False,
                       allowed_networks=['127.0.0.1'], **env)
    assert first['changed'] and first['started'] and first['pid']
    second = run_module(info_hashes=[HASH_A, HASH_B], user='run2', keep_running=False,
                        allowed_networks=['127.0.0.2'], **env)
    assert second['pid'] == first['pid'] and not second['started']
    assert second['added'] == [HASH_B]
    regs = json.load(open(os.path.join(env['state_dir'], 'torrents.json')))
    assert sorted(regs[HASH_A]['users']) == ['run1', 'run2']
    assert regs[HASH_A]['users']['run2']['allowed'] == ['127.0.0.2/32']
    again = run_module(info_hashes=[HASH_A], user='run1', keep_running=False,
                       allowed_networks=['127.0.0.1'], **env)
    assert again['changed'] is False, 'a renewed claim changes nothing that is served'
    released = run_module(state='released', user='run1', **env)
    assert released['changed'] is False and released['registered'] == [HASH_A, HASH_B]
    assert HASH_A in status(env['port'])['torrents']
    released = run_module(state='released', user='run2', **env)
    assert released['removed'] == [HASH_A, HASH_B]
    script = os.path.join(env['state_dir'], 'tracker.py')
    for _attempt in range(150):
        if not daemon.is_running(first['pid'], script):
            break
        time.sleep(0.1)
    assert not daemon.is_running(first['pid'], script), 'the tracker outlived its last registration'
    assert 'no registration left' in open(os.path.join(env['state_dir'], 'tracker.log')).read()


def test_concurrent_claims_start_one_tracker(env):
    """Slices of one run start together: one tracker, every claim kept."""
    env_vars = dict(os.environ, PYTHONPATH=COLLECTIONS)
    procs = [subprocess.Popen(
        [sys.executable, '-m', 'ansible_collections.p2p.swarm.plugins.modules.p2p_tracker'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env_vars, cwd='/')
        for _slice in range(4)]
    for index, proc in enumerate(procs):
        proc.stdin.write(json.dumps({'ANSIBLE_MODULE_ARGS': dict(
            info_hashes=[HASH_A], user='slice%d' % index, keep_running=False, **env)}))
        proc.stdin.close()
    results = [json.loads(proc.stdout.read()) for proc in procs]
    for proc in procs:
        proc.wait(timeout=60)
    assert not any(r.get('failed') for r in results), results
    assert len(set(r['pid'] for r in results)) == 1
    assert sum(r['started'] for r in results) == 1
    regs = json.load(open(os.path.join(env['state_dir'], 'torrents.json')))
    assert sorted(regs[HASH_A]['users']) == ['slice0', 'slice1', 'slice2', 'slice3']


def test_registering_needs_a_running_tracker(env):
    result = run_module(state='registered', info_hashes=[HASH_A], user='run1', **env)
    assert result['failed'] and 'no tracker runs in' in result['msg']
