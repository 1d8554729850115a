"""ansible-lint (production profile, .ansible-lint) passes on the roles, playbooks and the
molecule scenario (extensions/molecule).

Also checks the collection metadata (galaxy.yml, meta/runtime.yml) and the
changelog files. Accepted findings are in .ansible-lint (skip_list) and
.ansible-lint-ignore, each with its reason.
"""
import pytest

from sanity_helpers import explain, run, tool

pytestmark = pytest.mark.sanity


def test_ansible_lint_production_profile():
    proc = run([tool('ansible-lint'), '--nocolor', '--format', 'pep8', '--profile', 'production',
                'roles', 'playbooks', 'meta', 'galaxy.yml', 'changelogs', 'extensions'], timeout=900)
    assert proc.returncode == 0, explain(proc)
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr, explain(proc)
