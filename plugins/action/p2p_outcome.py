# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each host's outcome from what the swarm reported, on the controller.

An agent announces p2p_outcome=placed once the verified file is in place, or
p2p_outcome=failed with its reason; p2p_wait collects those per host. This
plugin turns them into the host's own task result (changed, or failed naming
the cause) without an SSH round. A host the swarm cannot vouch for (it never
reached the tracker, or the wait ended early) comes back with
confirmed=false: the peer role then asks that host itself.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.p2p.swarm.plugins.plugin_utils.controller_action import ControllerAction

ARGUMENT_SPEC = dict(
    start=dict(type='dict', required=True),
    swarm=dict(type='dict', default={}),
    host=dict(type='str'),
)
KEPT = ('dest', 'info_hash', 'size', 'ssl', 'status', 'progress', 'downloaded', 'uploaded', 'pid')


def judge(start, swarm, host):
    """The task result for `host` from its start result and the swarm wait's."""
    result = dict((k, start[k]) for k in KEPT if k in start)
    if start.get('failed') or start.get('skipped'):
        # The start itself failed (that task already failed the host) or did not run.
        return dict(result, changed=False, confirmed=True, msg=start.get('msg', 'not started'))
    if start.get('pid') is None:
        # Nothing to download (content in place), or --check: the start said it all.
        return dict(result, changed=bool(start.get('changed')), confirmed=True,
                    msg=start.get('msg', 'nothing started'))
    view = (swarm.get('per_host') or {}).get(host) or {}
    if view.get('outcome') == 'placed':
        return dict(result, changed=True, confirmed=True, status='placed', progress=1.0,
                    msg='downloaded and verified (reported through the tracker)')
    if view.get('outcome') == 'failed':
        return dict(result, changed=False, confirmed=True, failed=True, status='failed',
                    msg='%s: %s' % (host, view.get('error') or 'the agent failed without a reason'))
    return dict(result, changed=False, confirmed=False, swarm_state=view.get('state', 'not waited for'),
                msg='the swarm did not report an outcome for %s (%s): asking the host'
                % (host, view.get('state', 'no wait')))


class ActionModule(ControllerAction):
    ARGUMENT_SPEC = ARGUMENT_SPEC

    def act(self, result, args, task_vars):
        host = args['host'] or task_vars.get('inventory_hostname')
        result.update(judge(args['start'], args['swarm'] or {}, host))
        return result
