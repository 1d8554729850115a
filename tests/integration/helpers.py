"""Run the collection the way a user does: built, installed, ansible-playbook."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

# Controller side only: nothing under ROOT or VENV_BIN may run inside a lab
# host. The checkout may live under /tmp, which every host has a private copy
# of, and hosts with a root filesystem of their own see none of the
# controller's files. On a host run HOST_PYTHON (plain scripts), the
# interpreter the collection chose there (agent_python), and scripts shipped
# as text (host_script).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
WHEEL_DIR = os.path.join(ROOT, '.lab', 'wheels')
HOST_PYTHON = '/usr/bin/python3'


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


def playbook_argv(lab, forks, extra_vars, playbook='p2p.swarm.distribute', inventory=None, options=()):
    argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', inventory or lab.inventory,
            '-f', str(forks)] + list(options) + [playbook]
    for key, value in extra_vars.items():
        argv += ['-e', '%s=%s' % (key, value)]
    return argv


def run_playbook(lab, env, forks, extra_vars, timeout=900, playbook='p2p.swarm.distribute', inventory=None,
                 options=()):
    argv = playbook_argv(lab, forks, extra_vars, playbook, inventory, options)
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        # Keep what it printed: the assertion message must say where it hung.
        out = exc.stdout.decode('utf-8', 'replace') if isinstance(exc.stdout, bytes) else (exc.stdout or '')
        err = exc.stderr.decode('utf-8', 'replace') if isinstance(exc.stderr, bytes) else (exc.stderr or '')
        proc = subprocess.CompletedProcess(argv, None, out + '\n[killed after %d s]\n' % timeout, err)
    proc.recap = parse_recap(proc.stdout)
    return proc


def hosts_that_ran(stdout, task_name):
    """Hosts with a result of their own (ok, changed, failed; not skipping,
    not delegated) under each TASK header of that name in playbook output."""
    hosts = set()
    for section in stdout.split('TASK [')[1:]:
        header, dummy, body = section.partition('\n')
        if not header.split(']')[0].endswith(task_name):
            continue
        for match in re.finditer(r'^(?:ok|changed|failed|fatal): \[([^\]>]+)\]', body, re.M):
            hosts.add(match.group(1).strip())
    return hosts


class BackgroundPlaybook:
    """ansible-playbook running while a test breaks things; output to files.

    Its own session (process group), so a test can send it what a terminal
    sends on Ctrl-C: a signal to the whole group.
    """

    started = []      # every run, for the nothing_left_running fixture to stop

    def __init__(self, lab, env, forks, extra_vars, workdir, playbook='p2p.swarm.distribute', inventory=None):
        self.out_path = os.path.join(str(workdir), 'playbook.out')
        self.err_path = os.path.join(str(workdir), 'playbook.err')
        with open(self.out_path, 'w') as out, open(self.err_path, 'w') as err:
            self.proc = subprocess.Popen(playbook_argv(lab, forks, extra_vars, playbook, inventory), env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        BackgroundPlaybook.started.append(self)

    def output(self):
        with open(self.out_path) as out:
            return out.read()

    def signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill_all(self):
        """SIGKILL the playbook and its fork workers. The workers run in
        sessions of their own (Ansible calls setsid), so a signal to the
        playbook's group misses them, and once their parent is gone they
        block for ever."""
        workers = child_pids(self.proc.pid)
        self.signal_group(signal.SIGKILL)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return workers

    def stop(self):
        """Kill the run (playbook and workers) if it still runs; wait for it."""
        if self.proc.poll() is None:
            self.kill_all()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def finish(self, timeout=900):
        """Wait for the end; a CompletedProcess-like result with .recap."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            self.proc.wait(timeout=30)
        with open(self.err_path) as err:
            stderr = err.read()
        result = subprocess.CompletedProcess(self.proc.args, self.proc.returncode, self.output(), stderr)
        result.recap = parse_recap(result.stdout)
        return result


def child_pids(parent):
    """Pids of the live processes whose parent is parent (from /proc)."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


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


# --- the lab as the tests see it ----------------------------------------

def make_env(tmp_path_factory):
    """A built and installed collection and the environment to run it with."""
    base = tmp_path_factory.mktemp('ansible')
    os.makedirs(str(base / 'tmp'), exist_ok=True)
    return ansible_env(install_collection(str(base)), str(base))


def write_payload(lab, name, size):
    """A random file where the seed host can read it (the shared part of the
    tree); returns (path, sha256)."""
    data_dir = os.path.join(lab.workdir, 'data')
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, name)
    data = os.urandom(size)
    with open(path, 'wb') as handle:
        handle.write(data)
    return path, hashlib.sha256(data).hexdigest()


def peers(lab):
    return [h for h in lab.hosts if lab.group(h) == 'peers']


def host_sha256(lab, host, path):
    proc = lab.exec(host, ['sha256sum', path])
    return proc.stdout.split()[0] if proc.returncode == 0 else 'missing: ' + proc.stderr.strip()


def agent_statuses(lab, host, dest=None):
    """status.json of every job on the host (or only dest's), from its private state dir."""
    found = []
    root = lab.host_dir(host) + '/var/lib/p2p-swarm'
    for dirpath, _dirs, files in os.walk(root):
        if 'status.json' in files and 'job.json' in files:
            try:
                with open(os.path.join(dirpath, 'job.json')) as handle:
                    job = json.load(handle)
                with open(os.path.join(dirpath, 'status.json')) as handle:
                    status = json.load(handle)
            except (OSError, ValueError):
                continue     # being rewritten right now
            if dest is None or job.get('dest') == dest:
                status['job_dir'] = dirpath
                found.append(status)
    return found


def _netns_inode(pid):
    try:
        st = os.stat('/proc/%d/ns/net' % pid)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def swarm_ended(lab, within=30.0):
    """What is still running `within` seconds from now, [] as soon as nothing
    is. A run leaves its download agents to end by themselves: once the
    tracker is stopped they notice at their next announce (seconds)."""
    deadline = time.time() + within
    while True:
        left = swarm_processes(lab)
        if not left or time.time() >= deadline:
            return left
        time.sleep(0.5)


def swarm_processes(lab, controller=True):
    """Agents or trackers the collection started, on any lab host or on the
    controller (whose network namespace is ours; controller=False leaves it
    out). Processes of other labs running on the same machine (other
    namespaces) are not counted."""
    spaces = set()
    for host in lab.hosts:
        try:
            st = os.stat('/run/netns/' + lab.namespace(host))
            spaces.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    if controller:
        spaces.add(_netns_inode(os.getpid()))
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                args = handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
        except OSError:
            continue
        if '/var/lib/p2p-swarm/' in args and ('/agent.py ' in args or '/tracker.py ' in args) \
                and _netns_inode(int(entry)) in spaces:
            found.append('%s %s' % (entry, args.strip()))
    return found


def stop_swarm(lab, env=None, timeout=300):
    """End every agent and tracker still running on the lab's hosts: the
    collection's clean-up playbook (with env; on the lab's hosts only, never
    the controller, where other runs may own agents), then SIGKILL for any
    survivor. Returns what was running at the start."""
    left = swarm_processes(lab, controller=False)
    if not left:
        return []
    if env is not None:
        run_playbook(lab, env, 10, {'p2p_targets': 'all', 'p2p_seeder_host': 'seed'}, playbook='p2p.swarm.cleanup',
                     timeout=timeout)
    for line in swarm_processes(lab, controller=False):
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not swarm_processes(lab, controller=False), 30, 'the swarm processes left running to end')
    return left


def host_script(lab, host, name, text):
    """Ship a script's text to the host's private /tmp; returns its path
    there (what the host sees), for HOST_PYTHON or agent_python to run."""
    path = '/tmp/' + name
    with open(lab.host_dir(host) + path, 'w') as handle:
        handle.write(text)
    return path


AGENT_PYTHON_PLAY = """
- name: The peer role's libtorrent step, as a distribute run does it
  hosts: "{{ p2p_targets }}"
  gather_facts: false
  tasks:
    - name: Find or install libtorrent
      ansible.builtin.include_role:
        name: p2p.swarm.peer
        tasks_from: libtorrent
    - name: Name the interpreter
      ansible.builtin.debug:
        msg: "agent python: {{ p2p_agent_python }}"
"""


def agent_python(lab, env, host, workdir):
    """The interpreter the collection's agents run on host (it installs
    libtorrent there first if no interpreter imports it, as a distribute run
    would), and what libtorrent that interpreter imports:
    (python, {'file', 'version', 'prefix', 'base_prefix'})."""
    play = os.path.join(str(workdir), 'agent-python.yml')
    with open(play, 'w') as handle:
        handle.write(AGENT_PYTHON_PLAY)
    proc = run_playbook(lab, env, 1, {'p2p_targets': host, 'p2p_wheel_dir': WHEEL_DIR}, playbook=play, timeout=300)
    found = re.findall(r'"msg": "agent python: ([^"]+)"', proc.stdout)
    assert proc.returncode == 0 and len(found) == 1, describe(proc)
    probe = lab.exec(host, [found[0], '-c', 'import json, sys, libtorrent; print(json.dumps({"file": '
                            'libtorrent.__file__, "version": libtorrent.__version__, "prefix": sys.prefix, '
                            '"base_prefix": sys.base_prefix}))'], timeout=60)
    assert probe.returncode == 0, (host, found[0], probe.stderr)
    return found[0], json.loads(probe.stdout.strip().splitlines()[-1])


def loaded_libtorrent(pid):
    """The libtorrent extension module a running process (an agent) has
    loaded: its path as mapped, or None. Tells a wheel's libtorrent from a
    system one (Debian's python3-libtorrent in /usr/lib/python3/dist-packages)."""
    try:
        with open('/proc/%d/maps' % pid) as handle:
            for line in handle:
                path = line.split(None, 5)[-1].strip()
                if 'libtorrent' in path and '.cpython-' in path and path.endswith('.so'):
                    return path
    except OSError:
        pass
    return None


def wait_for(predicate, timeout, what, every=0.2):
    """Poll predicate until it returns something true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %d s waiting for %s' % (timeout, what))
        time.sleep(every)
