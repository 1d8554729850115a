# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One lock file per state directory, for runs that act on one host at once
(slices of a run, or two runs, starting the same tracker or seed)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import os


@contextlib.contextmanager
def locked(directory, name, skip=False):
    """Hold an exclusive flock on directory/name for the with-block.

    skip: do nothing (check mode, or a directory that may not exist).
    The lock goes with the process, so a killed module never leaves it held.
    """
    if skip or not os.path.isdir(directory):
        yield
        return
    fd = os.open(os.path.join(directory, name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
