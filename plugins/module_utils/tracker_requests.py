# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracker's requests: announce and scrape query parsing, client
addresses (normalized, packed, checked against allow lists).

No state here: tracker_swarm records what these return. Part of the
tracker script (see tracker.py); standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
import socket
from urllib.parse import unquote_to_bytes

DEFAULT_NUMWANT = 50
MAX_NUMWANT = 200
MAX_INT = 2 ** 63 - 1
MAX_PARAMS = 256           # query parameters per request (scrape may repeat info_hash)
MAX_HOSTNAME = 255
MAX_OUTCOME = 300  # characters of an agent's error kept per peer
EVENTS = ('', 'started', 'completed', 'stopped', 'paused')

_NUMBER_RE = re.compile(rb'\A[0-9]{1,19}\Z')
_BAD_PERCENT_RE = re.compile(r'%(?![0-9A-Fa-f]{2})')
_QUERY_CHARS_RE = re.compile(r'\A[\x21-\x7e]*\Z')


class BadRequest(Exception):
    """A malformed request: answered with a bencoded failure reason."""


def parse_query(query):
    """Split a raw query string into {name: [raw byte values]}.

    urllib's parse_qs decodes to text, but info_hash and peer_id are raw
    bytes, so values are unquoted to bytes here, strictly.
    """
    if not _QUERY_CHARS_RE.match(query):
        raise BadRequest('invalid characters in query')
    if _BAD_PERCENT_RE.search(query):
        raise BadRequest('invalid percent-encoding')
    params = {}
    count = 0
    for part in query.split('&'):
        if not part:
            continue
        count += 1
        if count > MAX_PARAMS:
            raise BadRequest('too many parameters')
        name, _sep, value = part.partition('=')
        if '%' in name or '+' in name:
            try:
                name = unquote_to_bytes(name.replace('+', ' ')).decode('ascii')
            except UnicodeDecodeError:
                raise BadRequest('invalid parameter name')
        # Most values (numbers, events) carry no escapes: skip the unquoting.
        if '%' in value or '+' in value:
            value = unquote_to_bytes(value.replace('+', ' '))
        else:
            value = value.encode('ascii')
        if name in params:
            params[name].append(value)
        else:
            params[name] = [value]
    return params


def _single(params, name, required=True):
    values = params.get(name)
    if not values:
        if required:
            raise BadRequest('missing %s' % name)
        return None
    if len(values) > 1:
        raise BadRequest('%s given more than once' % name)
    return values[0]


def _number(params, name, low=0, high=MAX_INT, default=None):
    raw = _single(params, name, required=default is None)
    if raw is None:
        return default
    if not _NUMBER_RE.match(raw):
        raise BadRequest('invalid %s' % name)
    value = int(raw)
    if value < low or value > high:
        raise BadRequest('%s out of range' % name)
    return value


_IP_CACHE = {}
_IP_CACHE_SIZE = 8192


def normalize_ip(text):
    """Return the canonical text form of an IP address (IPv4-mapped -> IPv4).

    ipaddress is slow next to the rest of an announce, and a swarm's hosts
    keep announcing from the same addresses: answers are cached (bounded).
    """
    try:
        return _IP_CACHE[text]
    except KeyError:
        pass
    addr = ipaddress.ip_address(text.split('%', 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if len(_IP_CACHE) >= _IP_CACHE_SIZE:
        _IP_CACHE.clear()
    result = _IP_CACHE[text] = str(addr)
    return result


def pack_peer(ip, port):
    """The compact form of an address (BEP 23 / BEP 7): 6 bytes for IPv4, 18 for IPv6."""
    if ':' in ip:
        return socket.inet_pton(socket.AF_INET6, ip) + port.to_bytes(2, 'big')
    return socket.inet_aton(ip) + port.to_bytes(2, 'big')


def parse_announce(query, client_ip):
    """Validate an announce query; return a dict of typed fields."""
    params = parse_query(query)
    info_hash = _single(params, 'info_hash')
    if len(info_hash) != 20:
        raise BadRequest('info_hash must be 20 bytes')
    peer_id = _single(params, 'peer_id')
    if len(peer_id) != 20:
        raise BadRequest('peer_id must be 20 bytes')
    req = {
        'info_hash': info_hash,
        'peer_id': peer_id,
        'port': _number(params, 'port', 1, 65535),
        'uploaded': _number(params, 'uploaded'),
        'downloaded': _number(params, 'downloaded'),
        'left': _number(params, 'left'),
        'numwant': min(_number(params, 'numwant', default=DEFAULT_NUMWANT), MAX_NUMWANT),
        'compact': _number(params, 'compact', 0, 1, default=1) == 1,
        'no_peer_id': _number(params, 'no_peer_id', 0, 1, default=0) == 1,
    }
    event = _single(params, 'event', required=False) or b''
    try:
        event = event.decode('ascii')
    except UnicodeDecodeError:
        raise BadRequest('invalid event')
    if event not in EVENTS:
        raise BadRequest('invalid event')
    req['event'] = event
    ip = _single(params, 'ip', required=False)
    try:
        req['ip'] = normalize_ip(ip.decode('ascii') if ip else client_ip)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest('invalid ip')
    host = _single(params, 'p2p_host', required=False)
    if host is not None:
        try:
            host = host.decode('utf-8').strip()
        except UnicodeDecodeError:
            raise BadRequest('invalid p2p_host')
        if len(host) > MAX_HOSTNAME or any(ord(c) < 32 or ord(c) == 127 for c in host):
            raise BadRequest('invalid p2p_host')
    req['host'] = host or None
    req['client_ip'] = client_ip
    req['outcome'] = parse_outcome(params)
    return req


def parse_outcome(params):
    """The agent's verdict, carried in its announces once it has one:
    p2p_outcome=placed (verified and in place) or p2p_outcome=failed with
    p2p_error=<reason>. The controller reads it from status.json, so an
    outcome needs no SSH round to the host."""
    outcome = _single(params, 'p2p_outcome', required=False)
    if outcome is None:
        return None
    if outcome == b'placed':
        return ('placed', None)
    if outcome != b'failed':
        raise BadRequest('invalid p2p_outcome')
    error = _single(params, 'p2p_error', required=False) or b''
    error = error.decode('utf-8', 'replace')[:MAX_OUTCOME]
    return ('failed', ''.join(c if ord(c) >= 32 and ord(c) != 127 else ' ' for c in error))


def parse_scrape(query):
    params = parse_query(query)
    hashes = params.get('info_hash', [])
    for value in hashes:
        if len(value) != 20:
            raise BadRequest('info_hash must be 20 bytes')
    return hashes


def networks_allow(networks, cache, ip_text):
    """True when ip_text is inside one of networks (parsed ip_network objects)."""
    try:
        return cache[ip_text]
    except KeyError:
        pass
    try:
        addr = ipaddress.ip_address(normalize_ip(ip_text))
    except ValueError:
        return False
    if len(cache) >= _IP_CACHE_SIZE:
        cache.clear()
    result = cache[ip_text] = any(addr in net for net in networks)
    return result
