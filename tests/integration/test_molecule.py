"""`molecule test` on the collection's scenario (extensions/molecule/default).

The scenario brings up its own lab (prefix p2pmol, 10.234.0.0/24, in
/var/lib/p2p-molecule: seed + 3 peers) with create.yml, applies the peer role
to a generated 4 MiB file, converges a second time (molecule's idempotence
step: nothing may report a change), checks every copy's sha256 against the
source (verify.yml) and tears the lab down (destroy.yml). Needs root, like
the other lab tests; it does not use the session's `lab` fixture.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
COLLECTIONS = os.path.join(ROOT, '.collections')     # made by tests/conftest.py
LAB_PY = os.path.join(ROOT, 'tests', 'lab', 'lab.py')
WHEEL_DIR = os.path.join(ROOT, '.lab', 'wheels')
PREFIX, SUBNET, LAB_DIR = 'p2pmol', '10.234.0', '/var/lib/p2p-molecule'
PEERS = ('h01', 'h02', 'h03')
TIMEOUT = 1200

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
BORDER = re.compile(r'^[ \t]*\u2502 ?', re.M)     # the frame molecule draws around a command's output


def plain(text):
    """molecule's output without colours and frame."""
    return BORDER.sub('', ANSI.sub('', text))


def molecule_namespaces():
    out = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True, check=True, timeout=30).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX + '-')]


def lab_down():
    """What destroy.yml does, for a run that did not get that far."""
    return subprocess.run([sys.executable, LAB_PY, 'down', '--dir', LAB_DIR, '--prefix', PREFIX,
                           '--subnet', SUBNET], capture_output=True, text=True, timeout=120, check=False)


def step_line(step, what):
    """molecule's line for a step: 'default ➜ verify: Executing' on a terminal,
    '[default > verify] Executing' otherwise."""
    return re.compile(r'\b%s(?::|\]) %s' % (step, what))


def section(output, step):
    """What molecule printed for one step of the sequence (the last time it ran)."""
    starts = [m.end() for m in step_line(step, 'Executing').finditer(output)]
    assert starts, 'molecule never ran its %s step' % step
    end = step_line(step, 'Executed').search(output, starts[-1])
    return output[starts[-1]:end.start() if end else None]


def last(output, step, what):
    """Where molecule last reported `what` for a step as it ran it; not in the
    DETAILS summary at the end, which calls a failed idempotence step successful."""
    body = output.rsplit('\nDETAILS', 1)[0]
    found = [m.start() for m in step_line(step, what).finditer(body)]
    return found[-1] if found else -1


def recap(text):
    return {m.group(1): dict((k, int(v)) for k, v in re.findall(r'(\w+)=(\d+)', m.group(2)))
            for m in re.finditer(r'^\W*(\S+)\s+:\s+((?:\w+=\d+\s*)+)$', text, re.M)}


def test_molecule_scenario_converges_idempotent_and_verified(tmp_path):
    if os.geteuid() != 0:
        pytest.skip('the molecule scenario builds a lab: it needs root')
    assert os.path.isdir(os.path.join(COLLECTIONS, 'ansible_collections', 'p2p', 'swarm'))
    assert any(f.startswith('libtorrent-') for f in os.listdir(WHEEL_DIR)), \
        'no libtorrent wheel in %s (scripts/setup.sh downloads it)' % WHEEL_DIR
    home = tmp_path / 'home'
    home.mkdir()
    # ssh's control sockets: a path under pytest's tmp dir is too long for one.
    control_dir = tempfile.mkdtemp(prefix='p2pmol-cp-')
    env = dict(os.environ)
    env.update({
        'HOME': str(home),      # molecule's ephemeral files and the torrent cache go here
        'PATH': VENV_BIN + os.pathsep + env.get('PATH', ''),
        'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS,
        'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
        'ANSIBLE_SSH_CONTROL_PATH_DIR': control_dir,
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
        'NO_COLOR': '1',
        'PY_COLORS': '0',
    })
    out_path = tmp_path / 'molecule.out'
    with open(str(out_path), 'w') as out:
        proc = subprocess.Popen([os.path.join(VENV_BIN, 'molecule'), 'test'], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            rc = 'killed after %d s' % TIMEOUT
        finally:
            leftover = molecule_namespaces()
            if leftover:           # the run died before its destroy step
                lab_down()
            shutil.rmtree(control_dir, ignore_errors=True)
    output = plain(out_path.read_text(errors='replace'))
    tail = output[-8000:]

    assert 'Idempotence test failed' not in output, output[output.index('Idempotence test failed'):][:3000]
    assert rc == 0, 'molecule test rc=%s (all of it in %s)\n%s' % (rc, out_path, tail)
    assert not leftover, 'molecule test left namespaces behind: %s' % leftover
    assert molecule_namespaces() == []
    assert 'Collection \'p2p.swarm\' detected' in output, tail

    converge = recap(section(output, 'converge'))
    for host in PEERS:
        assert converge[host]['failed'] == 0 and converge[host]['changed'] > 0, converge

    # molecule's own idempotence step: the second converge changed nothing.
    assert last(output, 'idempotence', 'Executed: Successful') >= 0, tail
    second = recap(section(output, 'idempotence'))
    assert sorted(second) == sorted(PEERS + ('seed',)), second
    for host, counts in second.items():
        assert counts['changed'] == 0 and counts['failed'] == 0, (host, counts)

    assert last(output, 'verify', 'Executed: Successful') >= 0, tail
    verify = section(output, 'verify')
    for host in PEERS:
        assert re.search(r'%s: sha256\s+[0-9a-f]{64}\s+matches\s+the\s+source' % host, verify), verify
    # destroy ran after verify, as the last step.
    assert last(output, 'destroy', 'Executed: Successful') > last(output, 'verify', 'Executed'), tail
