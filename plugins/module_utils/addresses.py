# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Allowed-address lists (p2p_fetch allowed_peers, p2p_tracker allowed_networks).

Entries are addresses, CIDR networks or host names; names are resolved on
the managed host, since what matters is the address a peer connects from as
that host sees it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import socket


class AddressError(ValueError):
    """An entry that is neither an address, a network nor a host name."""


def resolve_networks(entries):
    """Return (networks, unresolved): CIDR strings, and the names that did not resolve.

    Raises AddressError for an entry that cannot be a name either (bad CIDR).
    """
    networks, unresolved = [], []
    for entry in entries or []:
        entry = str(entry).strip()
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
            continue
        except ValueError:
            pass
        if not entry or '/' in entry or ' ' in entry:
            raise AddressError('%r is not an address, a network or a host name' % entry)
        try:
            infos = socket.getaddrinfo(entry, None, 0, socket.SOCK_STREAM)
        except (socket.error, UnicodeError):
            unresolved.append(entry)
            continue
        found = set(str(ipaddress.ip_network(info[4][0].split('%', 1)[0])) for info in infos)
        networks.extend(sorted(found))
    return networks, unresolved


def collapse(networks):
    """The fewest CIDR strings covering the given ones (IPv4 first)."""
    nets = [ipaddress.ip_network(n, strict=False) for n in networks]
    out = []
    for version in (4, 6):
        out.extend(str(n) for n in ipaddress.collapse_addresses(x for x in nets if x.version == version))
    return out
