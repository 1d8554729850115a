"""p2p_libtorrent: find libtorrent or install a wheel with no pip and no venv
module, from a wheel on the host or a PEP 503 index on 127.0.0.1.

The test machine's interpreters all import libtorrent (the controller venv's
2.1 and, from scripts/setup.sh, Debian's 2.0.8 under /usr/bin/python3), so
the install paths are driven with a min_version none of them meets."""
import functools
import glob
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import wheels

from module_runner import ROOT, assert_failed, run_module

WHEEL_DIR = os.path.join(ROOT, '.lab', 'wheels')


@pytest.fixture(scope='module')
def wheel():
    found = wheels.pick_wheel(glob.glob(os.path.join(WHEEL_DIR, '*.whl')), wheels.host_python())
    assert found, 'no libtorrent wheel for this python in %s: run scripts/setup.sh' % WHEEL_DIR
    return found


def imported_version(python):
    return subprocess.run([python, '-c', wheels.PROBE], capture_output=True, text=True, check=False).stdout.strip()


@pytest.fixture
def index(tmp_path, wheel):
    """A PEP 503 index on 127.0.0.1 with the wheel; yields (url, root dir)."""
    root = tmp_path / 'index'
    (root / 'simple' / 'libtorrent').mkdir(parents=True)
    shutil.copy(wheel, root / 'simple' / 'libtorrent')
    name = os.path.basename(wheel)
    with open(wheel, 'rb') as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    (root / 'simple' / 'libtorrent' / 'index.html').write_text(
        '<html><body><a href="%s#sha256=%s">%s</a></body></html>' % (name, digest, name))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield 'http://127.0.0.1:%d/simple/' % server.server_address[1], root
    finally:
        server.shutdown()
        server.server_close()


def test_probe_finds_an_importing_interpreter_and_the_wheel_for_it(tmp_path, wheel):
    names = [os.path.basename(f) for f in glob.glob(os.path.join(WHEEL_DIR, '*.whl'))]
    rc, result = run_module('p2p_libtorrent', tmp_path, venv=str(tmp_path / 'venv'), wheels=names)[:2]
    assert rc == 0 and result['found'] and not result['changed'], result
    assert imported_version(result['python']) == result['version']
    assert result['wheel'] == os.path.basename(wheel)
    assert result['host_python']['tag'] == 'cp%d%d' % sys.version_info[:2]
    assert not (tmp_path / 'venv').exists()


def test_a_too_old_libtorrent_is_named_with_its_version(tmp_path):
    rc, result = run_module('p2p_libtorrent', tmp_path, venv=str(tmp_path / 'venv'), min_version='99.0')[:2]
    assert rc == 0 and not result['found']
    assert result['too_old'] and all(v for v in result['too_old'].values())
    assert result['problem'].startswith('no libtorrent 99.0 or later (found: ')
    assert '%s has %s' % (sys.executable, imported_version(sys.executable)) in result['problem']


def test_a_wheel_installs_without_pip_into_a_venv_that_ignores_the_system(tmp_path, wheel):
    venv = tmp_path / 'venv'
    rc, result = run_module('p2p_libtorrent', tmp_path, state='present', venv=str(venv), wheel=wheel,
                            min_version='99.0')[:2]
    # Installed and importable; only the impossible minimum fails it.
    assert rc == 1 and 'older than 99.0' in result['msg'] and result['source'] == wheel, result
    python = str(venv / 'bin' / 'python')
    assert imported_version(python) == imported_version(sys.executable)   # the wheel's, not Debian's
    assert 'include-system-site-packages = false' in (venv / 'pyvenv.cfg').read_text()
    assert subprocess.run([python, '-c', 'import pip'], capture_output=True, check=False).returncode != 0
    leftovers = [n for n in os.listdir(wheels.site_packages(str(venv), wheels.host_python())) if n.startswith('.')]
    assert leftovers == []


def test_check_mode_installs_nothing(tmp_path, wheel):
    rc, result = run_module('p2p_libtorrent', tmp_path, check_mode=True, state='present',
                            venv=str(tmp_path / 'venv'), wheel=wheel, min_version='99.0')[:2]
    assert rc == 0 and result['changed'] and result['msg'] == 'would install libtorrent from %s' % wheel
    assert not (tmp_path / 'venv').exists()


def test_the_index_wheel_is_downloaded_checked_and_installed(tmp_path, index):
    url, _root = index
    venv = tmp_path / 'venv'
    rc, result = run_module('p2p_libtorrent', tmp_path, state='present', venv=str(venv), index_url=url,
                            min_version='99.0')[:2]
    assert rc == 1 and result['source'].startswith(url) and 'older than 99.0' in result['msg'], result
    assert imported_version(str(venv / 'bin' / 'python')) == imported_version(sys.executable)


def test_a_wheel_that_does_not_match_its_checksum_is_refused(tmp_path, index):
    url, root = index
    page = root / 'simple' / 'libtorrent' / 'index.html'
    page.write_text(page.read_text().replace('sha256=', 'sha256=0'))
    assert_failed(run_module('p2p_libtorrent', tmp_path, state='present', venv=str(tmp_path / 'venv'),
                             index_url=url, min_version='99.0'),
                  'does not match the sha256')
    assert not (tmp_path / 'venv').exists()


def test_an_index_without_a_wheel_for_this_python_says_so(tmp_path, index):
    url, root = index
    for path in (root / 'simple' / 'libtorrent').glob('*.whl'):
        path.rename(path.with_name(path.name.replace('cp%d%d' % sys.version_info[:2], 'cp39')))
    page = root / 'simple' / 'libtorrent' / 'index.html'
    page.write_text(page.read_text().replace('cp%d%d' % sys.version_info[:2], 'cp39'))
    assert_failed(run_module('p2p_libtorrent', tmp_path, state='present', venv=str(tmp_path / 'venv'),
                             index_url=url, min_version='99.0'),
                  'has no libtorrent wheel for CPython %d.%d' % sys.version_info[:2])


def test_an_unreachable_index_fails_in_one_line(tmp_path):
    result = assert_failed(run_module('p2p_libtorrent', tmp_path, state='present', venv=str(tmp_path / 'venv'),
                                      index_url='http://127.0.0.1:9/simple/', min_version='99.0'),
                           'cannot read the package index http://127.0.0.1:9/simple/libtorrent/')
    assert '\n' not in result['msg']


def test_a_system_libtorrent_is_reached_through_a_thin_venv(tmp_path):
    # Debian's python3-libtorrent (scripts/setup.sh) under the interpreter this venv's python is built on.
    system = '/usr/bin/python3'
    assert imported_version(system), 'Debian python3-libtorrent is missing: run scripts/setup.sh'
    if os.path.realpath(system) != os.path.realpath(sys.executable):
        pytest.fail('the test venv must be built on /usr/bin/python3 (scripts/setup.sh does)')
    venv = tmp_path / 'venv'
    rc, result = run_module('p2p_libtorrent', tmp_path, state='present', venv=str(venv), python=[system],
                            link_venv=True)[:2]
    assert rc == 0 and result['changed'] and result['python'] == str(venv / 'bin' / 'python'), result
    assert imported_version(result['python']) == imported_version(system) == result['version']
    again = run_module('p2p_libtorrent', tmp_path, state='present', venv=str(venv), python=[system], link_venv=True)[1]
    assert again['changed'] is False and again['python'] == str(venv / 'bin' / 'python')
