# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The start of a run, on the controller: refuse a play the roles cannot
work in, and pick the run's identifier.

The roles do the seeder's and the tracker's steps once per play (run_once).
Under `strategy: free` Ansible runs run_once tasks on every host, so each
host would make its own torrent and end the tracker for everyone: refused
here, in one line, before anything runs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import platform
import secrets
import string

from ansible.errors import AnsibleActionFail
from ansible_collections.p2p.swarm.plugins.plugin_utils.controller_action import ControllerAction

ARGUMENT_SPEC = dict(
    run_id=dict(type='str', default=''),
    claim_key=dict(type='list', elements='str', default=[]),
)
ALPHABET = string.ascii_lowercase + string.digits


def play_strategy(task):
    """The strategy of the play the task belongs to, or None when unknown."""
    block = task._parent
    while block is not None and getattr(block, '_play', None) is None:
        block = getattr(block, '_parent', None)
    play = getattr(block, '_play', None) if block is not None else None
    return getattr(play, 'strategy', None)


def claim_identity(key, hosts):
    """The name of a run's claim on the tracker: the same for the same command
    run again from this controller (a rerun after a killed run takes over and
    releases the claim that run left), different for another file, another
    destination or another slice of hosts (runs side by side keep theirs)."""
    text = json.dumps([platform.node(), sorted(hosts)] + list(key), sort_keys=True)
    return 'run-' + hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


class ActionModule(ControllerAction):
    ARGUMENT_SPEC = ARGUMENT_SPEC

    def act(self, result, args, task_vars):
        strategy = play_strategy(self._task)
        if strategy and strategy.rsplit('.', 1)[-1] == 'free':
            raise AnsibleActionFail(
                'p2p.swarm roles need a play with the linear strategy (strategy: free runs their '
                'once-per-play steps on every host); use strategy: linear for this play')
        run_id = args['run_id'] or ''.join(secrets.choice(ALPHABET) for _char in range(12))
        claim_id = claim_identity(args['claim_key'], task_vars.get('ansible_play_hosts_all') or [])
        result.update(changed=False, run_id=run_id, claim_id=claim_id, strategy=strategy or 'linear',
                      ansible_facts={'p2p_run_id': run_id, 'p2p_claim_id': claim_id})
        return result
