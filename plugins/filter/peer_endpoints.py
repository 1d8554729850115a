# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The peer_endpoints filter: 'address:port' strings for p2p_fetch's peers."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: peer_endpoints
short_description: C(address:port) of hosts, for the O(p2p.swarm.p2p_fetch#module:peers) option
version_added: 0.1.0
description:
  - Takes hosts' variables (C(hostvars[name]) of each) and gives C(address:port) for each, the
    address being C(ansible_host), else the inventory name, an IPv6 address in brackets.
  - The port is O(port), or, with O(port_from), the C(listen_port) in that registered
    M(p2p.swarm.p2p_fetch) result of each host (hosts without one are left out).
author:
  - p2p.swarm contributors (@p2p-swarm)
options:
  _input:
    description: The hosts' variables.
    type: list
    elements: dict
    required: true
  port:
    description: The port of every host.
    type: int
  port_from:
    description: Name of a registered p2p_fetch result holding each host's C(listen_port).
    type: str
'''

EXAMPLES = r'''
- name: Tell every agent where three other hosts listen
  p2p.swarm.p2p_fetch:
    torrent: /var/lib/p2p-swarm/torrents/app.torrent
    dest: /opt/app.tar.gz
    peers: "{{ groups['web'][:3] | map('extract', hostvars) | p2p.swarm.peer_endpoints(port=6881) }}"
    wait: false
'''

RETURN = r'''
_value:
  description: C(address:port) strings, in the order of the input.
  type: list
  elements: str
'''


def peer_endpoints(hosts, port=None, port_from=None):
    found = []
    for host in hosts or []:
        address = str(host.get('ansible_host') or host.get('inventory_hostname') or '')
        value = port
        if port_from:
            value = (host.get(port_from) or {}).get('listen_port')
        if not address or not value:
            continue
        found.append('%s:%d' % ('[%s]' % address if ':' in address else address, int(value)))
    return found


class FilterModule(object):
    def filters(self):
        return {'peer_endpoints': peer_endpoints}
