"""The tracker run as p2p_tracker runs it, for the tests that need a real
process: its script and the files it imports in a state directory, started
with `python -I`, on 127.0.0.1; always ended."""
import contextlib
import os
import socket
import subprocess
import sys
import time

from ansible_collections.p2p.swarm.plugins.module_utils import daemon
from ansible_collections.p2p.swarm.plugins.module_utils import tracker


def free_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@contextlib.contextmanager
def tracker_process(state):
    """Yields (process, port) once the tracker accepts connections (20 s at most)."""
    port = free_port()
    script = os.path.join(state, 'tracker.py')
    for name, module in tracker.script_files():   # the script and the files it imports
        daemon.install_script(module, os.path.join(state, name))
    proc = subprocess.Popen([sys.executable, '-I', script, '--bind', '127.0.0.1', '--port', str(port),
                             '--state-dir', state], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
