# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The host-side working directory that p2p_fetch and p2p_unpack share.
    DOCUMENTATION = r'''
options:
  state_dir:
    description:
      - Directory on the managed host where the collection keeps its working files,
        the same for every module of a run.
      - M(p2p.swarm.p2p_fetch) keeps the agent script there, and for each download its job,
        status, log and pidfile; M(p2p.swarm.p2p_unpack) keeps its stamps in C(unpacked/).
    type: path
    default: /var/lib/p2p-swarm
'''
