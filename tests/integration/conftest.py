"""The `lab` fixture: one lab of namespace hosts for the whole test session.

Size and rate come from P2P_LAB_HOSTS (default 10) and P2P_LAB_RATE
(default 50mbit); P2P_LAB_DIR moves the lab's files; P2P_LAB_PREFIX and
P2P_LAB_SUBNET (a /24 as 'a.b.c') let a second lab run beside the first. Tests that use the
fixture are marked `lab` automatically (select with -m lab / -m 'not lab').
"""
import os
import sys
import warnings

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'lab'))
import lab as p2p_lab  # noqa: E402  (tests/lab/lab.py, stdlib only)
from helpers import BackgroundPlaybook, make_env, stop_swarm  # noqa: E402


def lab_settings():
    return {
        'n': int(os.environ.get('P2P_LAB_HOSTS', '10')),
        'rate': os.environ.get('P2P_LAB_RATE', p2p_lab.DEFAULT_RATE),
        'workdir': os.environ.get('P2P_LAB_DIR', p2p_lab.DEFAULT_DIR),
        'prefix': os.environ.get('P2P_LAB_PREFIX', p2p_lab.DEFAULT_PREFIX),
        'subnet': os.environ.get('P2P_LAB_SUBNET', p2p_lab.DEFAULT_SUBNET),
    }


def require_root():
    if os.geteuid() != 0:
        pytest.skip('the lab needs root (network namespaces, veths, tc, mounts)')


@pytest.fixture(scope='session')
def lab():
    """A running p2p_lab.Lab: seed + P2P_LAB_HOSTS peers; always torn down."""
    require_root()
    the_lab = p2p_lab.Lab(**lab_settings())
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down()      # raises (an error in teardown) if anything is left


@pytest.fixture(scope='module')
def env(lab, tmp_path_factory):
    """Environment for ansible commands: the collection built and installed
    with ansible-galaxy, a HOME of its own; one per test file."""
    return make_env(tmp_path_factory)


@pytest.fixture(autouse=True)
def nothing_left_running(request):
    """After every lab test, passed or failed: kill its background playbooks
    still running, then end the agents and trackers left on the lab's hosts
    (the collection's clean-up playbook, SIGKILL for survivors). A failed
    test cannot leave agents behind for the next test's checks. Leftovers
    after a test are reported as a warning; tests that promise to leave
    nothing assert swarm_processes(lab) == [] themselves."""
    lab = request.getfixturevalue('lab') if 'lab' in request.fixturenames else None
    env = request.getfixturevalue('env') if lab is not None and 'env' in request.fixturenames else None
    yield
    while BackgroundPlaybook.started:
        BackgroundPlaybook.started.pop().stop()
    if lab is not None:
        left = stop_swarm(lab, env)
        if left:
            warnings.warn('%s left running on the lab, ended: %s' % (request.node.nodeid, left))


def pytest_collection_modifyitems(items):
    for item in items:
        if 'lab' in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.lab)
