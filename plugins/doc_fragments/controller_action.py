# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The attributes every controller-only action (p2p_run, p2p_wait, p2p_outcome) shares.
    DOCUMENTATION = r'''
attributes:
  check_mode:
    description: Whether the task can run with C(--check).
    support: full
  diff_mode:
    description: Whether the task can show a diff with C(--diff).
    support: none
  action:
    description: The work happens in an action plugin on the controller, not on the managed host.
    support: full
'''
