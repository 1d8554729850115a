"""Shared helpers for the checks in tests/sanity: paths and a command runner."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, '.venv', 'bin')
# tests/conftest.py links the checkout here as ansible_collections/p2p/swarm.
COLLECTIONS = os.path.join(ROOT, '.collections')
COLLECTION = 'p2p.swarm'


def tool(name):
    """Path of a command installed in the project's venv."""
    return os.path.join(VENV_BIN, name)


def ansible_env(**extra):
    """Environment that makes Ansible see this checkout as the p2p.swarm collection only."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false',
        ANSIBLE_NOCOLOR='1',
        ANSIBLE_FORCE_COLOR='0',
        ANSIBLE_DEPRECATION_WARNINGS='false',
        PATH=VENV_BIN + os.pathsep + env.get('PATH', ''),
    )
    env.update(extra)
    return env


def run(argv, timeout=300, env=None, cwd=ROOT):
    """Run a command; return the CompletedProcess (text, stdout and stderr kept apart)."""
    return subprocess.run(argv, cwd=cwd, env=env or ansible_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def explain(proc, limit=6000):
    """The end of a command's output, for assertion messages."""
    out = (proc.stdout or '') + (proc.stderr or '')
    return 'rc=%s\n%s' % (proc.returncode, out[-limit:])


def module_names():
    """Modules shipped in plugins/modules, by file name."""
    folder = os.path.join(ROOT, 'plugins', 'modules')
    return sorted(f[:-3] for f in os.listdir(folder) if f.endswith('.py') and not f.startswith('_'))


def role_names():
    folder = os.path.join(ROOT, 'roles')
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d, 'tasks')))
