"""`ansible-test sanity` passes on the collection (tests/sanity/run.sh).

run.sh lays out an ansible_collections/p2p/swarm copy, puts the offline
get-pip stand-in in place and runs every sanity test ansible-test has, in
its cached per-test virtual environments. Accepted findings are listed,
each with its reason, in tests/sanity/ignore-2.19.txt.
"""
import os
import re

import pytest

from sanity_helpers import ROOT, explain, run

pytestmark = pytest.mark.sanity


def test_ansible_test_sanity():
    proc = run(['bash', os.path.join(ROOT, 'tests', 'sanity', 'run.sh')], timeout=1800)
    errors = '\n'.join(line for line in (proc.stdout + proc.stderr).splitlines()
                       if line.startswith(('ERROR', 'FATAL')))
    assert proc.returncode == 0, errors or explain(proc)
    ran = re.findall(r'^Running sanity test "([\w-]+)"', proc.stdout, re.M)
    # The tests that matter for a collection all ran (none skipped for a missing tool).
    for test in ('validate-modules', 'pep8', 'pylint', 'yamllint', 'compile', 'import',
                 'shebang', 'ansible-doc', 'runtime-metadata', 'changelog', 'shellcheck'):
        assert test in ran, test
    assert 'not found' not in proc.stdout + proc.stderr, explain(proc)
