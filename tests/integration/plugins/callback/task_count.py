# -*- coding: utf-8 -*-
"""Test-only callback: count the task results each host gets (ok, changed,
failed, skipped, unreachable) and write them as JSON to $P2P_TASK_COUNT_FILE
when the playbook ends. A task that runs once (run_once) counts for the one
host it ran on; a loop counts once, not per item."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r'''
name: task_count
type: aggregate
short_description: Count task results per host (p2p.swarm tests)
description: Writes the names of the tasks each host ran, per host, as JSON to the file named by P2P_TASK_COUNT_FILE.
'''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'task_count'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self.counts = collections.defaultdict(list)

    def _count(self, result, *args, **kwargs):
        self.counts[result._host.get_name()].append(result._task.get_name())

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_skipped = v2_runner_on_unreachable = _count

    def v2_playbook_on_stats(self, stats):
        with open(os.environ['P2P_TASK_COUNT_FILE'], 'w') as handle:
            json.dump(self.counts, handle, indent=1, sort_keys=True)
