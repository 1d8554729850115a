# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where an agent keeps its files on a host, and how modules talk to it.

Layout under the state directory (default /var/lib/p2p-swarm)::

    agent.py                 the agent script (module_utils/agent.py), and the
                             files it imports (agent.script_files())
    <info-hash>/<dest-id>/   one job per torrent and destination:
        job.json             what the agent was asked to do
        agent.pid            its pid; the job path in its cmdline proves it is ours
        status.json          progress and outcome, rewritten every half second
        placed.json          stamp of the placed file, so reruns skip re-hashing
        agent.log            stderr of the agent
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os

from ansible_collections.p2p.swarm.plugins.module_utils import daemon


def info_hash_hex(torrent_info):
    """v1 info-hash in hex, or the v2 one for v2-only torrents."""
    hashes = torrent_info.info_hashes()
    if hashes.has_v1():
        return str(hashes.v1)
    return str(hashes.v2)


def all_jobs(state_dir):
    """Every job under state_dir, whatever its torrent (for clean-up)."""
    found = []
    try:
        hashes = sorted(os.listdir(state_dir))
    except OSError:
        return found
    for info_hash in hashes:
        top = os.path.join(state_dir, info_hash)
        try:
            dest_ids = sorted(os.listdir(top)) if os.path.isdir(top) else []
        except OSError:
            continue
        for dest_id in dest_ids:
            try:
                with open(os.path.join(top, dest_id, 'job.json')) as handle:
                    dest = json.load(handle)['dest']
            except (IOError, OSError, ValueError, KeyError, TypeError):
                continue
            job = Job(state_dir, info_hash, dest)
            if job.dir == os.path.join(top, dest_id):
                found.append(job)
    return found


class Job(object):
    """The files of one (torrent, dest) pair in the state directory."""

    def __init__(self, state_dir, info_hash, dest):
        self.state_dir = state_dir
        # Two destinations of one torrent on a host are two jobs.
        dest_id = hashlib.sha1(dest.encode('utf-8')).hexdigest()[:12]
        self.dir = os.path.join(state_dir, info_hash, dest_id)
        self.job_path = os.path.join(self.dir, 'job.json')
        self.pidfile = os.path.join(self.dir, 'agent.pid')
        self.status_path = os.path.join(self.dir, 'status.json')
        self.stamp_path = os.path.join(self.dir, 'placed.json')
        self.log_path = os.path.join(self.dir, 'agent.log')
        self.script = os.path.join(state_dir, 'agent.py')

    def running_pid(self):
        return daemon.read_pidfile(self.pidfile, self.job_path)

    def is_agent(self, pid):
        return daemon.is_running(pid, self.job_path)

    def read_status(self):
        try:
            with open(self.status_path) as handle:
                return json.load(handle)
        except (IOError, OSError, ValueError):
            return {}

    def log_tail(self, lines=5):
        try:
            with open(self.log_path) as handle:
                text = handle.read().strip().splitlines()
        except (IOError, OSError):
            return 'no agent log'
        tail = text[-lines:]
        # A crash (faulthandler's dump): the signal and the innermost frame say
        # more than the outermost frames at the end of the dump.
        fatal = [i for i, line in enumerate(text) if line.startswith('Fatal Python error')]
        if fatal:
            frames = [line.strip() for line in text[fatal[-1]:] if line.strip().startswith('File ')]
            tail = [text[fatal[-1]]] + frames[:2]
        return ' | '.join(tail) or 'agent log is empty'

    def start(self, agent_module, job, python):
        """Write the job, start the agent detached and return its pid."""
        for path in (self.state_dir, self.dir):
            if not os.path.isdir(path):
                os.makedirs(path, 0o700)
        for name, module in agent_module.script_files():   # the files it imports first
            daemon.install_script(module, os.path.join(self.state_dir, name))
        job = dict(job, job_dir=self.dir, status_path=self.status_path)
        daemon.write_atomic(self.job_path, json.dumps(job, sort_keys=True, indent=1))
        # A fresh status, so nobody reads the outcome of an earlier agent.
        daemon.write_atomic(self.status_path, json.dumps({'state': 'starting', 'run_id': job.get('run_id')}))
        with open(self.log_path, 'w'):
            pass
        return daemon.spawn([python, self.script, self.job_path], self.pidfile, self.log_path)

    def stop(self, pid):
        return daemon.stop(pid, self.job_path)
