"""Which wheel fits which host: the choice p2p_libtorrent makes for the
controller's wheel directory and for a package index."""
import pytest

from ansible_collections.p2p.swarm.plugins.module_utils import versions
from ansible_collections.p2p.swarm.plugins.module_utils import wheels

BOOKWORM = {'tag': 'cp311', 'version': '3.11.2', 'machine': 'x86_64', 'glibc': '2.36'}
TRIXIE = {'tag': 'cp313', 'version': '3.13.5', 'machine': 'x86_64', 'glibc': '2.41'}
OLD_GLIBC = {'tag': 'cp311', 'version': '3.11.2', 'machine': 'x86_64', 'glibc': '2.12'}
ARM = {'tag': 'cp311', 'version': '3.11.2', 'machine': 'aarch64', 'glibc': '2.36'}

DIR = [
    'libtorrent-2.1.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl',
    'libtorrent-2.0.11-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl',
    'libtorrent-2.1.1-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl',
    'libtorrent-2.1.1-cp312-cp312-manylinux_2_28_x86_64.whl',
    'libtorrent-2.1.1-cp311-cp311-win_amd64.whl',
    'requests-2.32.0-py3-none-any.whl',
    'libtorrent-2.1.1.tar.gz',
]


def test_each_host_gets_the_newest_wheel_for_its_python():
    assert wheels.pick_wheel(DIR, BOOKWORM) == DIR[0]
    assert wheels.pick_wheel(DIR, TRIXIE) == DIR[2]


@pytest.mark.parametrize('host', [OLD_GLIBC, ARM, dict(BOOKWORM, tag='cp39', version='3.9.2')])
def test_no_wheel_when_glibc_machine_or_python_do_not_fit(host):
    assert wheels.pick_wheel(DIR, host) is None


def test_versions_compare_as_numbers_not_text():
    names = ['libtorrent-2.0.9-cp311-cp311-linux_x86_64.whl', 'libtorrent-2.0.11-cp311-cp311-linux_x86_64.whl']
    assert wheels.pick_wheel(names, BOOKWORM) == names[1]
    assert versions.too_old('2.0.4.0') and not versions.too_old('2.0.5.0') and not versions.too_old('2.1.1')
    assert versions.too_old('1.2.19.0')


def test_abi3_wheels_fit_newer_pythons_only():
    name = 'libtorrent-3.0.0-cp312-abi3-manylinux_2_28_x86_64.whl'
    assert wheels.wheel_fits(name, TRIXIE)
    assert not wheels.wheel_fits(name, BOOKWORM)


def test_host_python_describes_this_interpreter():
    import sys
    host = wheels.host_python()
    assert host['tag'] == 'cp%d%d' % sys.version_info[:2]
    assert host['version'].startswith('%d.%d.' % sys.version_info[:2])
    assert 'CPython %d.%d' % sys.version_info[:2] in wheels.describe_host(host)
