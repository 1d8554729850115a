"""The control plane's cost per host, counted: SSH rounds (an ssh wrapper
logs every invocation; with pipelining, as the lab inventory has it, one
module run is one invocation) and task results (a callback). A host that has
libtorrent gets one round, on a first run and on a rerun alike."""
import collections
import json
import os

import pytest

from helpers import WHEEL_DIR, describe, host_sha256, peers, run_playbook, swarm_ended, write_payload

pytestmark = pytest.mark.lab

HERE = os.path.dirname(os.path.abspath(__file__))
FORKS = 10
# The target: argument validation, the swarm include, the start (an
# include and its task), the libtorrent include, the outcome, the question
# to hosts without one, the unpack include. Everything of the seeder, the
# tracker and SSL runs once for the play, on the carrier host.
TASKS_PER_HOST = 8


def counted_run(lab, env, tmp_path, name, extra_vars):
    ssh_log = tmp_path / (name + '.ssh')
    counts = tmp_path / (name + '.tasks.json')
    ssh_log.write_text('')
    counted_env = dict(env, ANSIBLE_SSH_EXECUTABLE=os.path.join(HERE, 'ssh_counter.sh'),
                       P2P_SSH_LOG=str(ssh_log), P2P_TASK_COUNT_FILE=str(counts),
                       ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, 'plugins', 'callback'),
                       ANSIBLE_CALLBACKS_ENABLED='task_count')
    proc = run_playbook(lab, counted_env, FORKS, extra_vars)
    assert proc.returncode == 0, describe(proc)
    by_address = dict((lab.ip(h), h) for h in lab.hosts)
    rounds = collections.Counter()
    for line in ssh_log.read_text().splitlines():
        words = line.split()
        # The destination is the word before the remote command.
        hosts = [by_address[w] for w in words if w in by_address]
        assert hosts, line
        rounds[hosts[-1]] += 1
    return proc, rounds, json.loads(counts.read_text())


def test_one_ssh_round_per_host_and_few_tasks_first_run_and_rerun(lab, env, tmp_path):
    path, digest = write_payload(lab, 'rounds.bin', 8 * 1024 * 1024)
    common = {'file': path, 'p2p_wheel_dir': WHEEL_DIR}
    # Hosts set up: libtorrent in place from an earlier run.
    proc = run_playbook(lab, env, FORKS, dict(common, dest='/srv/rounds-setup.bin'))
    assert proc.returncode == 0, describe(proc)

    first, first_rounds, first_tasks = counted_run(lab, env, tmp_path, 'first', dict(common, dest='/srv/rounds.bin'))
    rerun, rerun_rounds, rerun_tasks = counted_run(lab, env, tmp_path, 'rerun', dict(common, dest='/srv/rounds.bin'))
    for host in peers(lab):
        assert host_sha256(lab, host, '/srv/rounds.bin') == digest, host
        assert first.recap[host]['changed'] >= 1 and rerun.recap[host]['changed'] == 0, host
    # One round on every host, whatever it had to do.
    assert {h: first_rounds[h] for h in peers(lab)} == {h: 1 for h in peers(lab)}, (first_rounds, describe(first))
    assert {h: rerun_rounds[h] for h in peers(lab)} == {h: 1 for h in peers(lab)}, (rerun_rounds, describe(rerun))
    # The run_once steps land on the first host that runs them: the seeder's
    # work (publish) on the play's first host, the seed join, the wait and the
    # release on the first host of the swarm part. Every other host runs at
    # most TASKS_PER_HOST tasks, skips included.
    once = ('Publish the file on the seeder', 'Seed the original copy', 'Wait for the swarm', "Release the run's claim")
    for tasks in (first_tasks, rerun_tasks):
        carriers = [h for h, names in tasks.items() if any(n.endswith(once) for n in names)]
        assert any('Create the torrent' in n for h in carriers for n in tasks[h]), json.dumps(tasks, indent=0)
        others = [h for h in peers(lab) if h not in carriers]
        assert len(others) >= len(peers(lab)) - 2, carriers
        for host in others:
            assert len(tasks[host]) <= TASKS_PER_HOST, (host, tasks[host])
    print('rounds first run %s, rerun %s; seeder rounds %d / %d; tasks first run %s'
          % (dict(first_rounds), dict(rerun_rounds), first_rounds['seed'], rerun_rounds['seed'],
             dict((h, len(t)) for h, t in first_tasks.items())))
    assert swarm_ended(lab) == []
