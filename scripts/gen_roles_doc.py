"""Write docs/roles.md from the roles' meta/argument_specs.yml.

    .venv/bin/python scripts/gen_roles_doc.py          # rewrite docs/roles.md
    .venv/bin/python scripts/gen_roles_doc.py --check  # exit 1 if it is out of date

The argument specs are the one source: ansible-doc shows them, role start-up
validates against them, and this page is made from them, so the three agree.
"""
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'docs', 'roles.md')
ORDER = ['peer', 'seeder', 'tracker']  # the role most users need first

INTRO = """\
# Roles reference

Generated from `roles/*/meta/argument_specs.yml` by `scripts/gen_roles_doc.py`;
do not edit by hand. The same text is shown by
`ansible-doc -t role p2p.swarm.<role>`, and every role checks its variables
against it when it starts (a wrong type or choice stops the play before
anything runs).

Most users need only the `peer` role (or the `p2p.swarm.distribute`
playbook, which applies it): it runs the seeder's and the tracker's steps
itself, delegated to `p2p_seeder_host`. The `seeder` and `tracker` roles are
for flows where those parts are driven separately.

All variables share the `p2p_` prefix, so one value set for a play reaches
every role that uses it.
"""


def plain(text):
    """Ansible doc markup to Markdown: O(x), V(x), C(x), M(x), I(x)."""
    text = str(text)
    text = re.sub(r'\b[OVC]\(([^()]*(?:\([^()]*\)[^()]*)*)\)', lambda m: '`%s`' % m.group(1), text)
    text = re.sub(r'\bM\(([^)]*)\)', r'`\1`', text)
    text = re.sub(r'\bI\(([^)]*)\)', r'*\1*', text)
    return text


def as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def cell(text):
    return plain(text).replace('|', '\\|').replace('\n', ' ')


def default_of(option):
    if 'default' not in option:
        if option.get('required'):
            return ''
        described = any('default' in str(p).lower() for p in as_list(option.get('description')))
        return 'see description' if described else 'unset'
    value = option['default']
    if value is None:
        return 'unset'
    if value == '':
        return '`""`'
    if value == []:
        return '`[]`'
    if isinstance(value, bool):
        return '`%s`' % str(value).lower()
    return '`%s`' % value


def entry_point(role, name, spec):
    lines = ['### %s: `%s`' % ('Entry point' if name != 'main' else 'Main entry point', name), '']
    lines.append('*%s*' % plain(spec['short_description']))
    lines.append('')
    if name != 'main':
        lines.append('Use it with `tasks_from: %s`:' % name)
        lines.append('')
        lines.append('```yaml')
        lines.append('- ansible.builtin.include_role:')
        lines.append('    name: p2p.swarm.%s' % role)
        lines.append('    tasks_from: %s' % name)
        lines.append('```')
        lines.append('')
    for paragraph in as_list(spec.get('description')):
        lines.append(plain(paragraph))
        lines.append('')
    lines.append('| variable | type | default | description |')
    lines.append('|---|---|---|---|')
    for option_name in sorted(spec.get('options') or {}):
        option = spec['options'][option_name]
        kind = option.get('type', 'str')
        if option.get('elements'):
            kind += ' of %s' % option['elements']
        text = ' '.join(cell(p) for p in as_list(option.get('description')))
        if option.get('choices'):
            text += ' Choices: %s.' % ', '.join('`%s`' % c for c in option['choices'])
        if option.get('required'):
            text = '**Required.** ' + text
        lines.append('| `%s` | %s | %s | %s |' % (option_name, kind, default_of(option), text))
    lines.append('')
    return lines


def render():
    roles = sorted(os.listdir(os.path.join(ROOT, 'roles')),
                   key=lambda r: (ORDER.index(r) if r in ORDER else len(ORDER), r))
    lines = [INTRO]
    lines.append('Contents: ' + ', '.join('[%s](#role-p2pswarm%s)' % (r, r) for r in roles))
    lines.append('')
    for role in roles:
        path = os.path.join(ROOT, 'roles', role, 'meta', 'argument_specs.yml')
        if not os.path.exists(path):
            continue
        with open(path) as handle:
            specs = yaml.safe_load(handle)['argument_specs']
        lines.append('## Role `p2p.swarm.%s`' % role)
        lines.append('')
        for name in sorted(specs, key=lambda n: (n != 'main', n)):
            lines.extend(entry_point(role, name, specs[name]))
    return '\n'.join(lines).rstrip('\n') + '\n'


def main(argv):
    text = render()
    if '--check' in argv:
        with open(OUT) as handle:
            current = handle.read()
        if current != text:
            sys.stderr.write('docs/roles.md is out of date: run %s\n' % ' '.join(
                ['.venv/bin/python', 'scripts/gen_roles_doc.py']))
            return 1
        return 0
    with open(OUT, 'w') as handle:
        handle.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
