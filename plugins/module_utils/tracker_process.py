# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracker process as the p2p_tracker module sees it: install its
script, tell whether the running one is current, start-up checks, and
waiting until it serves what was registered.

Used by the module only, not part of the tracker script.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import platform
import socket
import time

from ansible.module_utils.urls import open_url
from ansible_collections.p2p.swarm.plugins.module_utils import daemon
from ansible_collections.p2p.swarm.plugins.module_utils import tracker


class TrackerError(Exception):
    pass


def read_cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError):
        return None
    return [arg.decode('utf-8', 'replace') for arg in raw.split(b'\0')[:-1]]


def script_is_current(path):
    """True when the tracker script and every file it imports are as shipped."""
    import inspect
    directory = os.path.dirname(path)
    for name, module in tracker.script_files():
        try:
            with open(os.path.join(directory, name), 'r') as handle:
                if handle.read() != inspect.getsource(module):
                    return False
        except (IOError, OSError):
            return False
    return True


def install_scripts(state_dir):
    """Write the tracker script and its files (those it imports first)."""
    for name, module in tracker.script_files():
        daemon.install_script(module, os.path.join(state_dir, name))


def probe_bind(bind, port):
    """Raise TrackerError when (bind, port) cannot be listened on."""
    family = socket.AF_INET6 if ':' in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise TrackerError('port %d already in use on %s' % (port, platform.node()))
        raise TrackerError('cannot listen on %s:%d on %s: %s' % (bind, port, platform.node(), exc.strerror or exc))
    finally:
        sock.close()


def local_base(bind, port):
    host = {'0.0.0.0': '127.0.0.1', '::': '::1', '': '127.0.0.1'}.get(bind, bind)
    return 'http://%s:%d' % ('[%s]' % host if ':' in host else host, port)


def fetch_status(url, timeout=2.0):
    response = open_url(url, timeout=timeout, use_proxy=False, validate_certs=False)
    try:
        return json.loads(response.read().decode('utf-8'))
    finally:
        response.close()


def log_tail(path, offset, limit=2000):
    try:
        with open(path, 'rb') as handle:
            handle.seek(offset)
            return handle.read()[-limit:].decode('utf-8', 'replace').strip()
    except (IOError, OSError):
        return ''


def has_exited(pid, marker):
    """True once our child is gone.

    Right after exec, /proc/<pid>/cmdline reads empty for a moment (which
    daemon.is_running takes for "not ours"), so an empty one means "starting".
    """
    try:
        with open('/proc/%d/stat' % pid, 'r') as handle:
            if handle.read().rsplit(')', 1)[1].split()[0] == 'Z':
                return True
    except (IOError, OSError, IndexError):
        return True
    cmdline = read_cmdline(pid)
    if cmdline is None:
        return True
    return bool(cmdline) and marker not in cmdline


def wait_until_serving(pid, marker, status_url, log_path, log_offset, port, want_hashes, timeout):
    """Poll status.json until our own process answers and lists want_hashes."""
    deadline = time.time() + timeout
    last_error = 'no answer'
    while time.time() < deadline:
        if has_exited(pid, marker):
            tail = log_tail(log_path, log_offset)
            if 'already in use' in tail:
                raise TrackerError('port %d already in use on %s' % (port, platform.node()))
            raise TrackerError('tracker exited at start: %s' % (tail or 'no output'))
        try:
            status = fetch_status(status_url)
        except Exception as exc:  # connection refused while it starts up, etc.
            last_error = str(exc)
        else:
            if status.get('pid') != pid:
                raise TrackerError('another process answers on %s (pid %s, expected %d)'
                                   % (status_url, status.get('pid'), pid))
            served = set()
            for entry in (status.get('torrents') or {}).values():
                served.update(entry.get('info_hashes') or [])
            missing = set(want_hashes) - served
            if not missing:
                return
            last_error = 'registrations not loaded yet: %s' % ', '.join(sorted(missing))
        time.sleep(0.1)
    raise TrackerError('tracker (pid %d) did not answer on %s within %d s: %s'
                       % (pid, status_url, timeout, last_error))
