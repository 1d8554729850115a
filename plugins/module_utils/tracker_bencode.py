# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bencoding for the tracker (BEP 3): the answers it sends.

Part of the tracker script (see tracker.py); standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def bencode(value):
    """Encode int, bytes, str, list and dict (keys sorted as raw bytes)."""
    out = []
    _bencode(value, out)
    return b''.join(out)


def _bencode(value, out):
    if isinstance(value, bool):
        raise TypeError('cannot bencode a bool')
    if isinstance(value, int):
        out.append(b'i%de' % value)
    elif isinstance(value, (bytes, str)):
        if isinstance(value, str):
            value = value.encode('utf-8')
        out.append(b'%d:' % len(value))
        out.append(value)
    elif isinstance(value, (list, tuple)):
        out.append(b'l')
        for item in value:
            _bencode(item, out)
        out.append(b'e')
    elif isinstance(value, dict):
        items = []
        for key, item in value.items():
            items.append((key.encode('utf-8') if isinstance(key, str) else key, item))
        out.append(b'd')
        for key, item in sorted(items):
            _bencode(key, out)
            _bencode(item, out)
        out.append(b'e')
    else:
        raise TypeError('cannot bencode %r' % type(value))


def failure(reason):
    return bencode({'failure reason': reason})
