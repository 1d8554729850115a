# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark-only callback: when each task started and ended, as JSON.

bench/run.py enables it with ANSIBLE_CALLBACK_PLUGINS / ANSIBLE_CALLBACKS_ENABLED
and P2P_BENCH_TIMINGS=<path>; it writes there, at the end of the run, a list of
{"name", "start", "end", "hosts"} (wall clock) plus the result of every
p2p_wait task, so the benchmark can split a playbook's wall time into phases.
It is not part of the collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = '''
    name: p2p_bench_timer
    type: aggregate
    short_description: write task start/end times to $P2P_BENCH_TIMINGS
    description: Benchmark helper of p2p.swarm (bench/run.py); not shipped in the collection.
    requirements:
      - enabled with ANSIBLE_CALLBACKS_ENABLED=p2p_bench_timer
'''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'p2p_bench_timer'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.tasks = []
        self.wait_results = []
        self.current = None

    def _close(self):
        if self.current is not None:
            self.current['end'] = time.time()
            self.tasks.append(self.current)
            self.current = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close()
        self.current = {'name': task.get_name(), 'action': task.action, 'start': time.time(), 'hosts': 0}

    def _count(self, result, *args, **kwargs):
        if self.current is not None:
            self.current['hosts'] += 1

    def v2_runner_on_ok(self, result):
        self._count(result)
        if result._task.action in ('p2p.swarm.p2p_wait', 'p2p_wait'):
            keep = ('elapsed', 'p50', 'p99', 'max', 'per_host', 'complete_hosts', 'incomplete_hosts', 'msg')
            self.wait_results.append(dict((k, result._result.get(k)) for k in keep))

    v2_runner_on_failed = _count
    v2_runner_on_skipped = _count
    v2_runner_on_unreachable = _count

    def v2_playbook_on_stats(self, stats):
        self._close()
        path = os.environ.get('P2P_BENCH_TIMINGS')
        if path:
            with open(path, 'w') as handle:
                json.dump({'tasks': self.tasks, 'p2p_wait': self.wait_results}, handle)
