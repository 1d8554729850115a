"""Run the collection the way a user does: built, installed, ansible-playbook."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
WHEEL_DIR = os.path.join(ROOT, '.lab', 'wheels')


def install_collection(dest):
    """ansible-galaxy collection build + install into dest; returns the collections path."""
    build = os.path.join(dest, 'build')
    os.makedirs(build, exist_ok=True)
    subprocess.run([os.path.join(VENV_BIN, 'ansible-galaxy'), 'collection', 'build', '--force',
                    '--output-path', build, ROOT], check=True, capture_output=True, timeout=120)
    tarball = [f for f in os.listdir(build) if f.endswith('.tar.gz')][0]
    path = os.path.join(dest, 'collections')
    subprocess.run([os.path.join(VENV_BIN, 'ansible-galaxy'), 'collection', 'install', '--force',
                    '-p', path, os.path.join(build, tarball)], check=True, capture_output=True, timeout=120)
    return path


def ansible_env(collections_path, home):
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': collections_path,
        'ANSIBLE_HOST_KEY_CHECKING': 'False',
        'ANSIBLE_RETRY_FILES_ENABLED': 'False',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_PIPELINING': 'True',
        'ANSIBLE_LOCAL_TEMP': os.path.join(home, 'tmp'),
        'HOME': home,  # the controller-side torrent cache goes under it
        'PATH': VENV_BIN + os.pathsep + env.get('PATH', ''),
    })
    return env


def run_playbook(lab, env, forks, extra_vars, timeout=900, playbook='p2p.swarm.distribute'):
    argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', lab.inventory, '-f', str(forks), playbook]
    for key, value in extra_vars.items():
        argv += ['-e', '%s=%s' % (key, value)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    proc.recap = parse_recap(proc.stdout)
    return proc


def parse_recap(output):
    """{host: {'ok': n, 'changed': n, 'unreachable': n, 'failed': n, ...}} from PLAY RECAP."""
    recap = {}
    text = output.split('PLAY RECAP', 1)[-1]
    for match in re.finditer(r'^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$', text, re.M):
        recap[match.group(1)] = dict((k, int(v)) for k, v in re.findall(r'(\w+)=(\d+)', match.group(2)))
    return recap


def describe(proc):
    """Enough of a failed run to see why, for assertion messages."""
    return 'rc=%s\n--- stdout (tail)\n%s\n--- stderr (tail)\n%s' % (
        proc.returncode, proc.stdout[-6000:], proc.stderr[-3000:])
