"""ansible-doc renders every module's and every role's documentation.

Runs the real ansible-doc against this checkout (linked as
.collections/ansible_collections/p2p/swarm), as a user would after installing
the collection.
"""
import json
import os
import re
import sys

import pytest
import yaml

from sanity_helpers import COLLECTION, ROOT, explain, module_names, role_names, run, tool

MODULES = module_names()
ROLES = role_names()


def fqcn(name):
    return '%s.%s' % (COLLECTION, name)


@pytest.fixture(scope='module')
def module_docs():
    proc = run([tool('ansible-doc'), '--json'] + [fqcn(m) for m in MODULES])
    assert proc.returncode == 0, explain(proc)
    return json.loads(proc.stdout)


@pytest.fixture(scope='module')
def module_text():
    proc = run([tool('ansible-doc')] + [fqcn(m) for m in MODULES])
    assert proc.returncode == 0, explain(proc)
    assert 'WARNING' not in proc.stderr and 'ERROR' not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.fixture(scope='module')
def role_docs():
    docs = {}
    for role in ROLES:
        proc = run([tool('ansible-doc'), '-t', 'role', '--json', fqcn(role)])
        assert proc.returncode == 0, explain(proc)
        docs.update(json.loads(proc.stdout))
    return docs


def test_every_module_is_listed():
    proc = run([tool('ansible-doc'), '--list', '--json', COLLECTION])
    assert proc.returncode == 0, explain(proc)
    assert sorted(json.loads(proc.stdout)) == [fqcn(m) for m in MODULES]
    assert set(MODULES) >= {'p2p_torrent', 'p2p_fetch', 'p2p_tracker', 'p2p_wait'}


@pytest.mark.parametrize('module', MODULES)
def test_module_documentation(module, module_docs):
    entry = module_docs[fqcn(module)]
    doc = entry['doc']
    assert doc['module'] == module
    assert doc['short_description'].strip()
    assert doc['description'] and all(line.strip() for line in doc['description'])
    assert doc['author']
    assert doc['version_added']
    assert doc['options'], 'no options documented'
    for name, option in doc['options'].items():
        assert option.get('description'), 'option %s has no description' % name
        assert option.get('type'), 'option %s has no type' % name


@pytest.mark.parametrize('module', MODULES)
def test_module_examples_are_tasks_using_the_module(module, module_docs):
    tasks = yaml.safe_load(module_docs[fqcn(module)]['examples'])
    assert isinstance(tasks, list) and tasks
    for task in tasks:
        assert task.get('name'), 'example task without a name: %r' % task
    assert any(fqcn(module) in task for task in tasks), 'no example calls %s' % fqcn(module)


@pytest.mark.parametrize('module', MODULES)
def test_module_return_values(module, module_docs):
    returned = module_docs[fqcn(module)]['return']
    assert returned, 'no RETURN documentation'
    for key, value in returned.items():
        for field in ('description', 'returned', 'type'):
            assert value.get(field), 'return value %s has no %s' % (key, field)


@pytest.mark.parametrize('module', MODULES)
def test_module_text_rendering(module, module_docs, module_text):
    # ansible-doc's text output, module by module: header, options, examples, return values.
    start = module_text.index('> MODULE %s' % fqcn(module))
    others = [module_text.find('> MODULE ', start + 1)]
    section = module_text[start:others[0] if others[0] > 0 else None]
    assert 'OPTIONS' in section
    assert 'EXAMPLES:' in section
    assert 'RETURN VALUES:' in section
    for option in module_docs[fqcn(module)]['doc']['options']:
        assert option in section, 'option %s missing from the text' % option


def test_every_role_is_listed():
    proc = run([tool('ansible-doc'), '-t', 'role', '--list', '--json', COLLECTION])
    assert proc.returncode == 0, explain(proc)
    listed = json.loads(proc.stdout)
    assert sorted(listed) == [fqcn(r) for r in ROLES]
    for name, summary in listed.items():
        # The galaxy_info description from meta/main.yml, not UNDOCUMENTED.
        assert summary['description'] != 'UNDOCUMENTED', name
        assert 'main' in summary['entry_points'], name


@pytest.mark.parametrize('role', ROLES)
def test_role_argument_spec(role, role_docs):
    entry_points = role_docs[fqcn(role)]['entry_points']
    assert 'main' in entry_points
    for name, spec in entry_points.items():
        assert spec.get('short_description'), '%s: no short_description' % name
        assert spec.get('description'), '%s: no description' % name
        assert spec.get('author'), '%s: no author' % name
        assert spec.get('options'), '%s: no options' % name
        for option, data in spec['options'].items():
            assert data.get('description'), '%s %s: no description' % (name, option)
            assert data.get('type'), '%s %s: no type' % (name, option)


@pytest.mark.parametrize('role', ROLES)
def test_role_text_rendering(role, role_docs):
    proc = run([tool('ansible-doc'), '-t', 'role', fqcn(role)])
    assert proc.returncode == 0, explain(proc)
    assert 'WARNING' not in proc.stderr and 'ERROR' not in proc.stderr, proc.stderr
    for name, spec in role_docs[fqcn(role)]['entry_points'].items():
        # Without colours ansible-doc marks the bold entry point name with '*'.
        assert re.search(r'^ENTRY POINT: \*?%s\*? - ' % re.escape(name), proc.stdout, re.M), name
        for option in spec['options']:
            assert option in proc.stdout, '%s %s missing from the text' % (name, option)


def test_runtime_metadata_groups_every_module():
    """meta/runtime.yml: group/p2p.swarm.swarm (module_defaults) holds every module."""
    with open(os.path.join(ROOT, 'meta', 'runtime.yml')) as handle:
        runtime = yaml.safe_load(handle)
    assert re.match(r'^>=\s*2\.\d+(\.\d+)?$', runtime['requires_ansible'])
    assert sorted(runtime['action_groups']['swarm']) == MODULES


def test_module_defaults_group_reaches_the_modules(tmp_path):
    playbook = tmp_path / 'defaults.yml'
    playbook.write_text('''
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/p2p.swarm.swarm:
      state: stopped
      state_dir: %s
  tasks:
    - name: p2p_tracker takes state and state_dir from the group defaults
      p2p.swarm.p2p_tracker:
      register: stopped
    - ansible.builtin.assert:
        that: stopped is not changed and stopped is not failed
''' % (tmp_path / 'state'))
    proc = run([tool('ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                '-e', 'ansible_python_interpreter=' + sys.executable, str(playbook)])
    assert proc.returncode == 0, explain(proc)
    assert 'failed=0' in proc.stdout
