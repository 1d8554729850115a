# -*- coding: utf-8 -*-
# Copyright: p2p.swarm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start, find and stop the detached helper processes (agent, tracker).

Modules return at once while the agent or tracker keeps running, so the
process must outlive the module: own session, no inherited pipes (Ansible
waits for stdout to close), a pidfile, and a cmdline marker so a recycled pid
is never mistaken for ours.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import inspect
import os
import signal
import subprocess
import time

# p2p_tracker and the tests write through daemon.write_atomic too.
from ansible_collections.p2p.swarm.plugins.module_utils.fileops import write_atomic


def install_script(module_obj, path):
    """Write the source of a self-contained python module to path if it changed.

    The agent and tracker live in module_utils so they ship with the
    collection; on the managed host they must run as plain scripts.
    """
    source = inspect.getsource(module_obj)
    try:
        with open(path, 'r') as handle:
            if handle.read() == source:
                return False
    except (IOError, OSError):
        pass
    write_atomic(path, source, mode=0o700)
    return True


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except (IOError, OSError):
        return None


def is_running(pid, marker):
    """True when pid is alive (not a zombie) and its cmdline contains marker."""
    cmdline = _cmdline(pid)
    if not cmdline or marker not in cmdline:
        return False
    try:
        with open('/proc/%d/stat' % pid, 'r') as handle:
            state = handle.read().rsplit(')', 1)[1].split()[0]
    except (IOError, OSError, IndexError):
        return False
    return state != 'Z'


def read_pidfile(pidfile, marker):
    """Return the pid recorded in pidfile if that process still runs, else None."""
    try:
        with open(pidfile, 'r') as handle:
            pid = int(handle.read().strip())
    except (IOError, OSError, ValueError):
        return None
    return pid if is_running(pid, marker) else None


def spawn(argv, pidfile, log_path, env=None, marker=None):
    """Start argv detached from the module: new session, stdio to log_path.

    Returns once the new process shows marker (default: the last argument) in
    its cmdline, or has exited: right after exec the cmdline reads empty for
    a moment, and a caller checking then would think the process is gone.
    """
    with open(os.devnull, 'rb') as devnull, open(log_path, 'ab') as log:
        proc = subprocess.Popen(
            argv, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
            close_fds=True, start_new_session=True, cwd='/', env=env)
    write_atomic(pidfile, '%d\n' % proc.pid, mode=0o644)
    marker = marker or argv[-1]
    deadline = time.time() + 5
    while time.time() < deadline and proc.poll() is None and not is_running(proc.pid, marker):
        time.sleep(0.01)
    return proc.pid


def stop(pid, marker, timeout=15.0):
    """SIGTERM, wait up to timeout, then SIGKILL. Returns True if it was running."""
    if not is_running(pid, marker):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not is_running(pid, marker):
            return True
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    deadline = time.time() + 5
    while time.time() < deadline and is_running(pid, marker):
        time.sleep(0.1)
    return True
