"""docs/ is complete, linked from the README, and consistent with the code.

- docs/roles.md is what scripts/gen_roles_doc.py makes of the argument specs;
- the README links every page, and every relative link and #anchor resolves;
- every p2p_* variable the pages mention exists.
"""
import os
import re
import subprocess
import sys

import pytest
import yaml

from sanity_helpers import ROOT, module_names, role_names

PAGES = ['getting-started.md', 'roles.md', 'how-it-works.md', 'troubleshooting.md', 'reliability.md', 'security.md']
# Names that are not role variables: the playbook's own variable, the
# announce parameter the agents send to the tracker, and the result the
# seeder's torrent step registers.
# Facts the roles set for later tasks and plays, and the playbook's pattern.
OTHER_NAMES = {'p2p_targets', 'p2p_host', 'p2p_torrent_result', 'p2p_swarm', 'p2p_agent_python', 'p2p_run_id'}


def read(path):
    with open(os.path.join(ROOT, path)) as handle:
        return handle.read()


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r'[`*_]', '', heading.strip().lower())
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path):
    return {slug(m) for m in re.findall(r'^#+ (.*)$', read(path), re.M)}


def test_roles_page_is_generated_from_the_argument_specs():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'gen_roles_doc.py'), '--check'],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_readme_links_every_page():
    readme = read('README.md')
    assert '## Documentation' in readme
    for page in PAGES:
        assert '](docs/%s)' % page in readme, page


@pytest.mark.parametrize('path', ['README.md'] + ['docs/' + p for p in PAGES])
def test_links_resolve(path):
    text = re.sub(r'```.*?```', '', read(path), flags=re.S)
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+:', target):
            continue  # absolute URL
        file_part, _sep, anchor = target.partition('#')
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        assert os.path.exists(os.path.join(ROOT, resolved)), '%s: broken link %s' % (path, target)
        if anchor:
            assert anchor in anchors(resolved), '%s: no heading for #%s in %s' % (path, anchor, resolved)


def known_names():
    names = set(OTHER_NAMES) | set(module_names())
    for role in role_names():
        for part in ('defaults', 'vars'):
            path = os.path.join(ROOT, 'roles', role, part, 'main.yml')
            if os.path.exists(path):
                with open(path) as handle:
                    names.update(yaml.safe_load(handle) or {})
        path = os.path.join(ROOT, 'roles', role, 'meta', 'argument_specs.yml')
        with open(path) as handle:
            for spec in yaml.safe_load(handle)['argument_specs'].values():
                names.update(spec.get('options') or {})
    return names


@pytest.mark.parametrize('path', ['README.md'] + ['docs/' + p for p in PAGES])
def test_mentioned_variables_exist(path):
    mentioned = set(re.findall(r'(?<![\w.])p2p_[a-z0-9_]*[a-z0-9]', read(path)))
    unknown = mentioned - known_names()
    assert not unknown, '%s mentions variables that no role has: %s' % (path, sorted(unknown))
