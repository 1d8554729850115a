# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Membership in the collection's action group (meta/runtime.yml), said once for the modules that document it.
    DOCUMENTATION = r'''
attributes:
  action_group:
    description: Defaults can be set for it with C(group/p2p.swarm.swarm) in C(module_defaults).
    support: full
    membership:
      - p2p.swarm.swarm
'''
