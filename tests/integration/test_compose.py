"""The roles composed the way teams with playbooks of their own use them.

On the shared lab: the peer role inside a user's play with pre_tasks and
post_tasks and a remote seeder; tracker, seeder and peer in plays of their
own; runs side by side (two files at once; one file in slices over
--limit, as AWX job slicing does); v2-only torrents; strategy: free.
"""
import os
import subprocess

import pytest

from helpers import (WHEEL_DIR, agent_statuses, describe, host_sha256, parse_recap, peers, playbook_argv, run_playbook,
                     swarm_ended, write_payload)

pytestmark = pytest.mark.lab

SIZE = 8 * 1024 * 1024
FORKS = 5


@pytest.fixture(scope='module')
def payloads(lab):
    return [write_payload(lab, 'compose-%d.bin' % i, SIZE) for i in range(2)]


def write_playbook(tmp_path, text):
    path = tmp_path / 'site.yml'
    path.write_text(text)
    return str(path)


def peer_and_release_plays(tracker, dest, post_tasks=''):
    """The web group getting what the seeder published, then the release."""
    return """
- name: Web servers get it
  hosts: peers:!%(tracker)s
  gather_facts: false
  roles:
    - role: p2p.swarm.peer
      p2p_seeder_host: seed
      p2p_dest: %(dest)s
      p2p_wheel_dir: %(wheels)s
%(post_tasks)s
- name: The release is out
  hosts: seed
  gather_facts: false
  tasks:
    - name: Release the claim (the seed ends with it)
      ansible.builtin.include_role:
        name: p2p.swarm.seeder
        tasks_from: release
""" % {'tracker': tracker, 'dest': dest, 'wheels': WHEEL_DIR, 'post_tasks': post_tasks}


def run_together(lab, env, argvs, timeout=240):
    """Start every ansible-playbook at once; their (rc, stdout) when all ended."""
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for argv in argvs]
    results = []
    for proc in procs:
        try:
            out, _err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _err = proc.communicate()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ''))
        results[-1].recap = parse_recap(out)
    return results


def test_peer_role_in_a_users_play_with_a_remote_seeder(lab, env, payloads, tmp_path):
    """README's "inside your own playbook": pre_tasks, the role, post_tasks."""
    path, digest = payloads[0]
    playbook = write_playbook(tmp_path, """
- hosts: peers
  gather_facts: false
  pre_tasks:
    - name: Something the team does first
      ansible.builtin.command: touch /tmp/pre-ran
      changed_when: false
  roles:
    - role: p2p.swarm.peer
      p2p_seeder_host: seed
      p2p_file: %s
      p2p_dest: /srv/own.bin
      p2p_wheel_dir: %s
  post_tasks:
    - name: Something the team does with the file
      ansible.builtin.command: cp /srv/own.bin /tmp/post-ran
      changed_when: false
""" % (path, WHEEL_DIR))
    proc = run_playbook(lab, env, FORKS, {}, playbook=playbook)
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert host_sha256(lab, host, '/srv/own.bin') == digest, host
        assert host_sha256(lab, host, '/tmp/post-ran') == digest, host
    assert swarm_ended(lab) == []


def test_tracker_seeder_and_peer_in_plays_of_their_own(lab, env, payloads, tmp_path):
    """A tracker host, a build host (the seeder) and the web group, in three
    plays, and the seeder's release at the end; a second run changes nothing."""
    path, digest = payloads[1]
    tracker, web = peers(lab)[0], peers(lab)[1:]
    playbook = write_playbook(tmp_path, """
- name: Tracker
  hosts: %(tracker)s
  gather_facts: false
  roles:
    - role: p2p.swarm.tracker

- name: Build host publishes the release
  hosts: seed
  gather_facts: false
  roles:
    - role: p2p.swarm.seeder
      p2p_file: %(path)s
      p2p_tracker_host: %(tracker)s
      # The lab's inventory points p2p_tracker_address at the seed host.
      p2p_tracker_address: ""
      p2p_wheel_dir: %(wheels)s
      # As the README has it: the seed sends once every web host is there.
      p2p_seed_hold: "{{ groups['peers'] | length - 1 }}"
""" % {'tracker': tracker, 'path': path, 'wheels': WHEEL_DIR} + peer_and_release_plays(tracker, '/srv/composed.bin', """
  post_tasks:
    - name: Mark the host
      ansible.builtin.command: touch /tmp/composed-post
      changed_when: false
"""))
    try:
        first = run_playbook(lab, env, FORKS, {}, playbook=playbook)
        assert first.returncode == 0, describe(first)
        assert 'Wait for the swarm' in first.stdout and '%' in first.stdout, 'no progress from the tracker'
        for host in web:
            assert host_sha256(lab, host, '/srv/composed.bin') == digest, host
            assert lab.exec(host, ['test', '-e', '/tmp/composed-post']).returncode == 0, host
        assert lab.exec(tracker, ['test', '-e', '/srv/composed.bin']).returncode != 0
        # The seed, started a play before the web hosts, sent nothing until
        # the last of them had reached it (not after the 5 s quiet time).
        last_start = max(s['started_at'] for h in web for s in agent_statuses(lab, h, '/srv/composed.bin'))
        seeds = [s for s in agent_statuses(lab, 'seed', path) if s['seed']]
        assert len(seeds) == 1 and seeds[0]['held_peers'] == len(web), seeds
        assert last_start <= seeds[0]['released_at'] < last_start + 4, (last_start, seeds[0])
        # The seed ended with the released claim; the tracker, a service, runs on.
        left = swarm_ended(lab)
        assert len(left) == 1 and 'tracker.py' in left[0], left

        second = run_playbook(lab, env, FORKS, {}, playbook=playbook)
        assert second.returncode == 0, describe(second)
        for host, counts in second.recap.items():
            assert counts['changed'] == 0 and counts['failed'] == 0, (host, describe(second))
    finally:
        lab.exec(tracker, ['pkill', '-f', 'p2p-swarm/tracker/tracker.py'])


def test_two_files_at_once_share_the_seeder_and_its_tracker(lab, env, payloads):
    argvs = [playbook_argv(lab, FORKS, {'file': path, 'dest': '/srv/side-%d.bin' % i,
                                        'p2p_seeder_host': 'seed', 'p2p_wheel_dir': WHEEL_DIR})
             for i, (path, _digest) in enumerate(payloads)]
    results = run_together(lab, env, argvs)
    for proc in results:
        assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        for i, (_path, digest) in enumerate(payloads):
            assert host_sha256(lab, host, '/srv/side-%d.bin' % i) == digest, (host, i)
    assert swarm_ended(lab) == []


@pytest.mark.parametrize('slices', [2, 4])
def test_one_file_in_concurrent_slices_forms_one_swarm(lab, env, payloads, slices):
    path, digest = payloads[0]
    hosts = peers(lab)
    dest = '/srv/sliced-%d.bin' % slices
    argvs = [playbook_argv(lab, FORKS, {'file': path, 'dest': dest, 'p2p_seeder_host': 'seed',
                                        'p2p_wheel_dir': WHEEL_DIR},
                           options=['--limit', ','.join(hosts[k::slices])])
             for k in range(slices)]
    results = run_together(lab, env, argvs)
    for proc in results:
        assert proc.returncode == 0, describe(proc)
    for host in hosts:
        assert host_sha256(lab, host, dest) == digest, host
    # One torrent for all slices: one swarm, one info-hash on every host.
    hashes = set(os.path.basename(os.path.dirname(s['job_dir']))
                 for host in hosts for s in agent_statuses(lab, host, dest))
    assert len(hashes) == 1, hashes
    assert swarm_ended(lab) == []


def test_v2_only_torrent(lab, env, payloads):
    path, digest = payloads[1]
    proc = run_playbook(lab, env, FORKS, {'file': path, 'dest': '/srv/v2.bin', 'p2p_seeder_host': 'seed',
                                          'p2p_wheel_dir': WHEEL_DIR, 'p2p_torrent_version': 'v2'})
    assert proc.returncode == 0, describe(proc)
    for host in peers(lab):
        assert host_sha256(lab, host, '/srv/v2.bin') == digest, host
    assert swarm_ended(lab) == []


def test_strategy_free_is_refused_in_one_line_before_anything_runs(lab, env, payloads, tmp_path):
    path, _digest = payloads[0]
    playbook = write_playbook(tmp_path, """
- hosts: peers
  gather_facts: false
  strategy: free
  roles:
    - role: p2p.swarm.peer
      p2p_seeder_host: seed
      p2p_file: %s
      p2p_dest: /srv/free.bin
""" % path)
    proc = run_playbook(lab, env, FORKS, {}, playbook=playbook)
    assert proc.returncode != 0, describe(proc)
    assert 'strategy: free' in proc.stdout and 'use strategy: linear' in proc.stdout, describe(proc)
    for host in peers(lab):
        assert lab.exec(host, ['test', '-e', '/srv/free.bin']).returncode != 0
    assert swarm_ended(lab, within=1) == []


def test_opentracker_with_a_whitelist(lab, env, payloads, tmp_path):
    """A tracker that is not the collection's: Debian's opentracker, which
    serves only whitelisted info-hashes. The seeder publishes, a task
    whitelists the hash (as docs/how-it-works.md says), the peers get the
    file and report their own outcome; the release stops the seed."""
    path, digest = payloads[0]
    tracker, web = peers(lab)[0], peers(lab)[1:]
    root = '/tmp/opentracker'
    lab.exec(tracker, ['mkdir', '-p', root], check=True)
    lab.exec(tracker, ['sh', '-c', ': > %s/whitelist.txt && chmod 755 %s && chmod 644 %s/whitelist.txt'
                       % (root, root, root)], check=True)
    # Started as root it chroots into tracker.rootdir: the whitelist path is as seen from inside.
    conf = ('listen.tcp 0.0.0.0:6970\nlisten.udp 0.0.0.0:6971\naccess.whitelist /whitelist.txt\n'
            'tracker.rootdir %s\ntracker.user nobody\n' % root)
    lab.exec(tracker, ['sh', '-c', 'cat > %s/opentracker.conf' % root], input=conf, check=True)
    started = lab.exec(tracker, ['sh', '-c', 'opentracker -f %s/opentracker.conf >/dev/null 2>&1 & echo $!' % root])
    assert started.returncode == 0, started.stderr
    playbook = write_playbook(tmp_path, """
- name: Build host publishes the release
  hosts: seed
  gather_facts: false
  roles:
    - role: p2p.swarm.seeder
      p2p_file: %(path)s
      p2p_tracker_url: http://%(address)s:6970/announce
      p2p_torrent_version: v1
      p2p_wheel_dir: %(wheels)s

- name: Whitelist the torrent on opentracker
  hosts: %(tracker)s
  gather_facts: false
  tasks:
    - name: Add the info-hash to the whitelist
      ansible.builtin.lineinfile:
        path: %(root)s/whitelist.txt
        line: "{{ hostvars.seed.p2p_swarm.info_hash }}"
    - name: Make opentracker read it again
      ansible.builtin.command: pkill -HUP -x opentracker
      changed_when: true
""" % {'tracker': tracker, 'path': path, 'wheels': WHEEL_DIR, 'root': root, 'address': lab.address(tracker)}
        + peer_and_release_plays(tracker, '/srv/opentracker.bin'))
    try:
        proc = run_playbook(lab, env, FORKS, {}, playbook=playbook)
        assert proc.returncode == 0, describe(proc)
        for host in web:
            assert host_sha256(lab, host, '/srv/opentracker.bin') == digest, host
        # The agents were asked (no status to read) and ended; the seed was stopped.
        assert swarm_ended(lab) == []
        whitelist = lab.exec(tracker, ['cat', root + '/whitelist.txt']).stdout.split()
        assert len(whitelist) == 1 and len(whitelist[0]) == 40, whitelist
        # opentracker answered the agents (the torrent names no other tracker).
        assert lab.exec(tracker, ['pgrep', '-x', 'opentracker']).returncode == 0
        answered = [s.get('tracker_ok') for h in web for s in agent_statuses(lab, h, '/srv/opentracker.bin')]
        assert answered and all(answered), answered
    finally:
        lab.exec(tracker, ['pkill', '-x', 'opentracker'])
