"""The changelog fragments pass `antsibull-changelog lint`, and a release would list everything.

The release is tried on a copy of the collection: changelog.yaml and the
fragments in the checkout stay as they are.
"""
import os
import shutil
import subprocess

import yaml

from sanity_helpers import ROOT, explain, module_names, role_names, run, tool


def test_fragments_lint():
    proc = run([tool('antsibull-changelog'), 'lint'])
    assert proc.returncode == 0, explain(proc)
    assert not proc.stdout.strip(), proc.stdout


def test_changelog_yaml_lint():
    proc = run([tool('antsibull-changelog'), 'lint-changelog-yaml',
                os.path.join('changelogs', 'changelog.yaml')])
    assert proc.returncode == 0, explain(proc)


def test_release_lists_modules_and_roles(tmp_path):
    with open(os.path.join(ROOT, 'galaxy.yml')) as f:
        version = yaml.safe_load(f)['version']
    tree = tmp_path / 'ansible_collections' / 'p2p' / 'swarm'
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split('\0')
    for name in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.dirname(str(tree / name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), str(tree / name))
    proc = run([tool('antsibull-changelog'), 'release', '--version', version, '--date', '2026-01-01'],
               cwd=str(tree))
    assert proc.returncode == 0, explain(proc)
    with open(str(tree / 'changelogs' / 'changelog.yaml')) as f:
        release = yaml.safe_load(f)['releases'][version]
    assert release['changes']['release_summary']
    assert sorted(m['name'] for m in release['modules']) == module_names()
    assert sorted(r['name'] for r in release['objects']['role']) == role_names()
    notes = (tree / 'CHANGELOG.md').read_text()
    for name in module_names() + role_names():
        assert name.replace('_', '\\_') in notes, name
