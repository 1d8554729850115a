# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which libtorrent versions the collection accepts, and version numbers as
tuples. Kept apart from wheels.py so that p2p_fetch, which every host runs
in every run, checks the version without shipping the installer."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# The oldest libtorrent whose API the agents and torrent making use (Ubuntu 22.04's).
MIN_VERSION = '2.0.5'


def version_tuple(text):
    """'2.0.11.0' -> (2, 0, 11, 0); non-numeric parts end the tuple."""
    parts = []
    for part in str(text).split('.'):
        digits = re.match(r'\d+', part)
        if not digits:
            break
        parts.append(int(digits.group(0)))
    return tuple(parts)


def too_old(version, minimum=MIN_VERSION):
    return version_tuple(version)[:3] < version_tuple(minimum)[:3]
