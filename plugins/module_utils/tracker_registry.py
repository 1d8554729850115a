# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracker's registrations: the one definition of torrents.json.

The p2p_tracker module writes it (claim, release), the tracker reads it
(effective). Standard library only: it is part of the tracker script.

    {"<40 or 64 hex>": {
        "name": "app.tar.gz", "size": 123,
        "aliases": ["<64 hex v2 hash of a hybrid>"],
        "allowed": ["10.0.0.0/24"],                 # permanent entries only
        "users": {"<run id>": {"expires": 1767000000.0, "allowed": ["10.0.0.5/32"]}}
    }}

An entry without "users" is permanent (registered by hand or by the tracker
role). An entry with users lives while one of them holds an unexpired claim:
runs side by side (other files, or slices of one run) each add their own
claim and allow list, and each release drops only its own. The allow list of
a torrent is the union of its claims'; an empty one lets anyone in.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

FILE_NAME = 'torrents.json'
# Present in the state directory: the tracker keeps running with no
# registration left (a tracker run as a service); absent, it ends then.
KEEP_FILE = 'keep-running'
HEX_RE = re.compile(r'\A(?:[0-9a-f]{40}|[0-9a-f]{64})\Z')


class RegistrationError(ValueError):
    pass


def load(path):
    """The document at path; {} when missing or unreadable (never raises)."""
    try:
        with open(path, 'rb') as handle:
            data = json.loads(handle.read().decode('utf-8'))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def dumps(data):
    return json.dumps(data, indent=2, sort_keys=True) + '\n'


def normalize(items):
    """Validate torrents given as hex strings or dicts into {hex: entry}.

    A bare hex string gives an entry marked '_bare': it keeps what an
    existing registration says about name and size.
    """
    result = {}
    for index, item in enumerate(items or []):
        where = 'info_hashes[%d]' % index
        if isinstance(item, str):
            item = {'info_hash': item, '_bare': True}
        if not isinstance(item, dict):
            raise RegistrationError('%s must be a hex string or a dictionary' % where)
        unknown = set(item) - set(('info_hash', 'info_hash_v2', 'name', 'size', '_bare'))
        if unknown:
            raise RegistrationError('%s has unknown keys: %s' % (where, ', '.join(sorted(unknown))))
        hex_hash = str(item.get('info_hash') or '').strip().lower()
        if not HEX_RE.match(hex_hash):
            raise RegistrationError('%s: %r is not a 40 or 64 hex digit info-hash' % (where, item.get('info_hash')))
        entry = {'name': str(item.get('name') or ''), 'size': None}
        size = item.get('size')
        if size not in (None, ''):
            try:
                size = int(size)
            except (TypeError, ValueError):
                size = -1
            if size < 0:
                raise RegistrationError('%s: size must be a non-negative integer' % where)
            entry['size'] = size
        v2 = str(item.get('info_hash_v2') or '').strip().lower()
        if v2:
            if len(v2) != 64 or not HEX_RE.match(v2):
                raise RegistrationError('%s: info_hash_v2 must be 64 hex digits' % where)
            if v2 != hex_hash:
                entry['aliases'] = [v2]
        if item.get('_bare'):
            entry['_bare'] = True
        result[hex_hash] = entry
    return result


def claim(current, wanted, user=None, expires=None, allowed=None, exclusive=False):
    """The document after registering `wanted` (from normalize()).

    With a user, each torrent gets that user's claim (until `expires`, an
    epoch time, with its own allow list); without one, a permanent entry.
    A torrent already registered for good stays permanent.
    """
    merged = {} if exclusive else dict(current)
    for hex_hash, new in wanted.items():
        old = current.get(hex_hash) if isinstance(current.get(hex_hash), dict) else {}
        entry = dict(old) if new.get('_bare') and old else {k: v for k, v in new.items() if k != '_bare'}
        for key in ('users', 'allowed'):
            if key in old:
                entry[key] = old[key]
        if user and (not old or 'users' in old):
            users = dict(old.get('users') or {})
            users[str(user)] = {'expires': float(expires or 0), 'allowed': list(allowed or [])}
            entry['users'] = users
        elif not user:
            entry.pop('users', None)
            if allowed is not None:
                entry['allowed'] = list(allowed)
        merged[hex_hash] = entry
    return merged


def release(current, user, hashes=None):
    """The document after `user` gives up its claims (on `hashes`, or all).

    A torrent whose last claim goes is dropped; permanent ones stay.
    """
    result = {}
    for hex_hash, entry in current.items():
        users = entry.get('users') if isinstance(entry, dict) else None
        if isinstance(users, dict) and str(user) in users and (hashes is None or hex_hash in hashes):
            users = dict(users)
            del users[str(user)]
            if not users:
                continue
            entry = dict(entry, users=users)
        result[hex_hash] = entry
    return result


def prune(current, now):
    """The document without expired claims (and torrents left without one)."""
    result = {}
    for hex_hash, entry in current.items():
        users = entry.get('users') if isinstance(entry, dict) else None
        if isinstance(users, dict):
            live = {u: c for u, c in users.items()
                    if not isinstance(c, dict) or not c.get('expires') or float(c['expires']) > now}
            if not live:
                continue
            if len(live) != len(users):
                entry = dict(entry, users=live)
        result[hex_hash] = entry
    return result


def has_claims(current, now):
    """True while some run holds an unexpired claim in the document."""
    return any(isinstance(e, dict) and isinstance(e.get('users'), dict) and e['users']
               for e in prune(current, now).values())


def next_expiry(current):
    """The earliest claim expiry in the document, or None."""
    times = [float(c['expires']) for e in current.values() if isinstance(e, dict)
             for c in (e.get('users') or {}).values() if isinstance(c, dict) and c.get('expires')]
    return min(times) if times else None


def allowed_networks(entry):
    """The torrent's allow list (union of its claims'), or None for anyone."""
    users = entry.get('users')
    if isinstance(users, dict):
        lists = [c.get('allowed') or [] if isinstance(c, dict) else [] for c in users.values()]
    else:
        lists = [entry.get('allowed') or []]
    if not lists or any(not networks for networks in lists):
        return None
    return sorted(set(str(n) for networks in lists for n in networks))


def hashes(current):
    """Every hex form served for these registrations (aliases included), sorted."""
    found = set(current)
    for entry in current.values():
        if isinstance(entry, dict) and isinstance(entry.get('aliases'), list):
            found.update(str(alias) for alias in entry['aliases'])
    return sorted(h for h in found if HEX_RE.match(h))


def effective(data, now):
    """[(hexes, name, size, allowed or None)] that the tracker serves now.

    Entries that do not validate are skipped rather than failing the whole
    file, so one bad line cannot take the tracker down.
    """
    if not isinstance(data, dict):
        raise ValueError('top level must be an object')
    result = []
    for hex_hash, entry in prune(data, now).items():
        hex_hash = str(hex_hash).lower()
        entry = entry if isinstance(entry, dict) else {}
        if not HEX_RE.match(hex_hash):
            continue
        hexes = [hex_hash]
        aliases = entry.get('aliases') or []
        if isinstance(aliases, str):
            aliases = [aliases]
        for alias in aliases if isinstance(aliases, list) else []:
            alias = str(alias).lower()
            if HEX_RE.match(alias) and alias not in hexes:
                hexes.append(alias)
        name = entry.get('name')
        size = entry.get('size')
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            size = None
        result.append((hexes, str(name) if name else '', size, allowed_networks(entry)))
    return result


def keep_running(state_dir):
    return os.path.exists(os.path.join(state_dir, KEEP_FILE))
