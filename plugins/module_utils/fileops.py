# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""File helpers every part of the collection shares: atomic writes, octal
modes, owner and group names, file checksums.

Standard library only: the agent script imports this file on the managed
host too (it is one of agent.script_files()).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import hashlib
import os
import pwd
import tempfile

CHUNK = 1024 * 1024


class AtomicFile(object):
    """A file written beside path and renamed onto it when the with-block
    ends without error, so nobody ever reads it half-written. The mode is set
    before any data goes in (a key is never readable by others, not even
    briefly); discard() leaves path as it was."""

    def __init__(self, path, mode=0o600, fsync=False):
        self.path = path
        self.mode = mode
        self.fsync = fsync
        self.keep = True
        self.tmp = None
        self.handle = None

    def __enter__(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(self.path), suffix='.tmp', dir=directory)
        try:
            os.fchmod(fd, self.mode)
            self.handle = os.fdopen(fd, 'wb')
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise
        return self

    def write(self, data):
        return self.handle.write(data)

    def discard(self):
        self.keep = False

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and self.keep:
                self.handle.flush()
                if self.fsync:
                    os.fsync(self.handle.fileno())
            self.handle.close()
            if exc_type is None and self.keep:
                os.rename(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
        return False


def write_atomic(path, data, mode=0o600, fsync=False):
    """Write bytes, or text as UTF-8, to path in one step (see AtomicFile)."""
    if not isinstance(data, bytes):
        data = data.encode('utf-8')
    with AtomicFile(path, mode, fsync) as handle:
        handle.write(data)


def octal_mode(mode):
    """A mode as a number: an int as it is, a string of octal digits ('0644')
    parsed; None for None and for symbolic modes (u=rw,go=r)."""
    if mode is None:
        return None
    if isinstance(mode, int):
        return mode
    try:
        return int(str(mode), 8)
    except ValueError:
        return None


def _resolve_id(name, lookup, what):
    """An id from a number or a name (lookup(name) -> id); None for None."""
    if name is None:
        return None
    try:
        return int(name)
    except ValueError:
        pass
    try:
        return lookup(name)
    except KeyError:
        raise KeyError('%s %s does not exist' % (what, name))


def resolve_uid(owner):
    """uid of a user name or number; None for None. KeyError names an unknown user."""
    return _resolve_id(owner, lambda name: pwd.getpwnam(name).pw_uid, 'user')


def resolve_gid(group):
    """gid of a group name or number; None for None. KeyError names an unknown group."""
    return _resolve_id(group, lambda name: grp.getgrnam(name).gr_gid, 'group')


def file_sha256(path):
    """Hex SHA-256 of the file at path, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()
