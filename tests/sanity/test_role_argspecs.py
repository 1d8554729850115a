"""The roles' argument specs match what the roles use, and validation passes.

Argument spec validation runs when a role starts, on every host: a spec
that rejects what the roles or the playbook pass stops every run. So the
specs are checked against defaults/main.yml and the variables the task files
use, and then a real ansible-playbook runs the validation tasks alone
(`--tags` naming no task: only the validation tasks, tagged `always`, run).
"""
import os
import re

import pytest
import yaml

from sanity_helpers import ROOT, explain, role_names, run, tool

ROLES = role_names()
# Facts that the roles set under a name chosen at run time
# (set_fact with "{{ p2p_python_fact }}" as the key).
# Facts the modules set: libtorrent's interpreter (p2p_libtorrent via set_fact), the run's names (p2p_run).
DYNAMIC_FACTS = {'p2p_agent_python', 'p2p_seeder_python', 'p2p_run_id', 'p2p_claim_id'}
VALIDATED = "Validating arguments against arg spec"


def load(*parts):
    path = os.path.join(ROOT, 'roles', *parts)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def specs(role):
    return load(role, 'meta', 'argument_specs.yml')['argument_specs']


def all_options():
    names = set()
    for role in ROLES:
        for spec in specs(role).values():
            names.update(spec['options'])
    return names


def strings(node):
    """Every string below node, dictionary keys included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def task_files(role):
    folder = os.path.join(ROOT, 'roles', role, 'tasks')
    return [(name, load(role, 'tasks', name)) for name in sorted(os.listdir(folder))]


def defined_in_tasks(tasks, found):
    """Variables the tasks define themselves: register, set_fact keys, task vars."""
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        if isinstance(task.get('register'), str):
            found.add(task['register'])
        for key in ('vars',):
            found.update((task.get(key) or {}).keys())
        for module in ('ansible.builtin.set_fact', 'set_fact'):
            found.update((task.get(module) or {}).keys())
        for section in ('block', 'rescue', 'always'):
            defined_in_tasks(task.get(section), found)


@pytest.mark.parametrize('role', ROLES)
def test_main_spec_matches_defaults(role):
    """Every default is a documented option of main, with the same default value.

    Options without a default in defaults/main.yml (optional ones the tasks
    read with `| default(...)`) must not claim one in the spec either.
    """
    defaults = load(role, 'defaults', 'main.yml')
    options = specs(role)['main']['options']
    missing = sorted(set(defaults) - set(options))
    assert not missing, (
        'roles/%s: variables of defaults/main.yml missing from the main entry point of '
        'meta/argument_specs.yml (add them, then run scripts/gen_roles_doc.py): %s' % (role, missing))
    for name in sorted(set(options) - set(defaults)):
        assert 'default' not in options[name], (
            'roles/%s: %s has a default in the spec but none in defaults/main.yml' % (role, name))
    for name, value in defaults.items():
        option = options[name]
        if isinstance(value, str) and '{{' in value:
            # A templated default is described in words, not repeated.
            assert 'default' not in option, '%s: templated default repeated in the spec' % name
            continue
        if value is None:
            assert option.get('default') is None, name
            continue
        assert option.get('default') == value, '%s: default %r in the spec, %r in defaults' % (
            name, option.get('default'), value)


@pytest.mark.parametrize('role', ROLES)
def test_vars_are_not_options(role):
    """vars/main.yml holds derived values, which users cannot override: never options."""
    derived = set(load(role, 'vars', 'main.yml'))
    for name, spec in specs(role).items():
        assert not derived & set(spec['options']), name


@pytest.mark.parametrize('role', ROLES)
def test_every_variable_the_tasks_use_is_known(role):
    """A p2p_* name in a task file is an option, a derived var, or set by the tasks."""
    known = all_options() | DYNAMIC_FACTS
    # The peer role runs the seeder's task files: what any role defines counts.
    for other in ROLES:
        known |= set(load(other, 'vars', 'main.yml'))
        known |= set(load(other, 'defaults', 'main.yml'))
        for _name, tasks in task_files(other):
            defined_in_tasks(tasks, known)
    used = {}
    for name, tasks in task_files(role):
        for text in strings(tasks):
            # Module names (p2p.swarm.p2p_fetch) are not variables.
            for var in re.findall(r'(?<![\w.])p2p_\w+', text):
                used.setdefault(var, name)
    unknown = {var: where for var, where in used.items() if var not in known}
    assert not unknown, (
        'roles/%s/tasks use variables that no argument spec, defaults or vars file '
        'knows (add them to meta/argument_specs.yml): %s' % (role, unknown))


def test_specs_cover_the_task_files():
    """Each role's entry points are main plus task files that exist."""
    for role in ROLES:
        for entry in specs(role):
            assert os.path.exists(os.path.join(ROOT, 'roles', role, 'tasks', entry + '.yml')), (
                role, entry)


@pytest.fixture(scope='module')
def inventory(tmp_path_factory):
    # Validation runs on the controller: a local connection is enough.
    path = tmp_path_factory.mktemp('argspec') / 'hosts.ini'
    path.write_text('localhost ansible_connection=local\n'
                    'web1 ansible_connection=local ansible_host=192.0.2.10\n'
                    'web2 ansible_connection=local ansible_host=192.0.2.11\n')
    return str(path)


def validate(inventory, playbook, *extra):
    """Run only the argument spec validation of the roles a playbook applies."""
    return run([tool('ansible-playbook'), '-i', inventory, playbook,
                '--tags', 'p2p_no_such_tag'] + list(extra), timeout=180)


def test_distribute_playbook_passes_validation(inventory):
    # As the README shows it, with extra vars that arrive as strings.
    proc = validate(inventory, os.path.join(ROOT, 'playbooks', 'distribute.yml'),
                    '-e', 'file=/build/app-1.2.tar.gz', '-e', 'dest=/opt/app.tar.gz',
                    '-e', 'p2p_timeout=600', '-e', 'p2p_keep_seeding=true',
                    '-e', 'p2p_mode=0640', '-e', 'p2p_libtorrent_install=wheel')
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.count("ok: [web") == 2, explain(proc)
    assert VALIDATED in proc.stdout


def test_distribute_playbook_rejects_a_bad_value(inventory):
    proc = validate(inventory, os.path.join(ROOT, 'playbooks', 'distribute.yml'),
                    '-e', 'file=/build/app.tar.gz', '-e', 'p2p_libtorrent_install=pip')
    assert proc.returncode != 0
    assert 'Validation of arguments failed' in proc.stdout
    assert 'p2p_libtorrent_install must be one of' in proc.stdout


PLAYBOOK = '''
- name: The peer role with role parameters, as in the README
  hosts: web1
  gather_facts: false
  roles:
    - role: p2p.swarm.peer
      p2p_file: /build/app-1.2.tar.gz
      p2p_dest: /opt/app/app-1.2.tar.gz
      p2p_seeder_host: localhost
      p2p_mode: "0640"
      p2p_owner: app

- name: Every other entry point, with the values the peer role passes
  hosts: localhost
  gather_facts: false
  vars:
    p2p_file: "{{ '/build/app.tar.gz' }}"
    p2p_torrent_result: {info_hash: 0123456789abcdef0123456789abcdef01234567, name: app.tar.gz, size: 1048576}
  tasks:
    - name: Tracker, started with a registration
      ansible.builtin.include_role:
        name: p2p.swarm.tracker
      vars:
        p2p_tracker_info_hashes:
          - info_hash: "{{ p2p_torrent_result.info_hash }}"
            name: "{{ p2p_torrent_result.name }}"
            size: "{{ p2p_torrent_result.size }}"
        p2p_tracker_state: started
        p2p_tracker_user: run1
        p2p_tracker_keep_running: false
      tags: [always]

    - name: Tracker, released by a run
      ansible.builtin.include_role:
        name: p2p.swarm.tracker
      vars:
        p2p_tracker_state: released
        p2p_tracker_user: run1
      tags: [always]

    - name: Tracker, stopped
      ansible.builtin.include_role:
        name: p2p.swarm.tracker
      vars:
        p2p_tracker_state: stopped
      tags: [always]

    - name: Peer role, libtorrent entry point
      ansible.builtin.include_role:
        name: p2p.swarm.peer
        tasks_from: libtorrent
      vars:
        p2p_python_fact: p2p_seeder_python
      tags: [always]

    - name: Seeder role, every entry point
      ansible.builtin.include_role:
        name: p2p.swarm.seeder
        tasks_from: "{{ item }}"
      loop: [main, seed, release, stop]
      vars:
        p2p_seeder_state: published
        p2p_tracker_host: localhost
      tags: [always]
'''


def test_every_entry_point_passes_validation(inventory, tmp_path):
    playbook = tmp_path / 'entry_points.yml'
    playbook.write_text(PLAYBOOK)
    proc = validate(inventory, str(playbook))
    assert proc.returncode == 0, explain(proc)
    for entry in ('main', 'libtorrent', 'seed', 'release', 'stop'):
        assert "%s '%s'" % (VALIDATED, entry) in proc.stdout, entry
    # peer main, tracker main three times, seeder main: five validations of a main entry point.
    assert proc.stdout.count("%s 'main'" % VALIDATED) == 5, explain(proc)
    assert 'failed=0' in proc.stdout


def test_seeder_state_is_one_of_its_choices(inventory, tmp_path):
    playbook = tmp_path / 'seeder.yml'
    playbook.write_text('''
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: p2p.swarm.seeder
      vars:
        p2p_file: /build/app.tar.gz
        p2p_seeder_state: later
      tags: [always]
''')
    proc = validate(inventory, str(playbook))
    assert proc.returncode != 0
    assert 'p2p_seeder_state must be one of: seeding, published, stopped, got: later' in proc.stdout, explain(proc)
