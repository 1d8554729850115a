"""Copy the collection as it ships into DEST (an ansible_collections/NS/NAME dir).

    python tests/sanity/layout.py DEST

"As it ships": the files git tracks (what a clone, and so CI, has; staged
new files count, untracked ones do not), as they are in the work tree, less
what galaxy.yml's build_ignore leaves out of `ansible-galaxy collection
build` (development harness such as the test lab and the benchmark). The
patterns are matched the way ansible-galaxy matches them: against the path
of every directory and file below the collection root, with fnmatch.
"""
import fnmatch
import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shipped(path, patterns):
    parts = path.split('/')
    prefixes = ['/'.join(parts[:n]) for n in range(1, len(parts) + 1)]
    return not any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes for pattern in patterns)


def main(dest):
    with open(os.path.join(ROOT, 'galaxy.yml')) as handle:
        patterns = [os.path.normpath(p) for p in yaml.safe_load(handle).get('build_ignore') or []]
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached'], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode('utf-8').split('\0')
    copied = 0
    for path in filter(None, listed):
        source = os.path.join(ROOT, path)
        if not os.path.isfile(source) or not shipped(path, patterns):
            continue
        target = os.path.join(dest, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
        copied += 1
    print('laid out %d files in %s' % (copied, dest))


if __name__ == '__main__':
    main(sys.argv[1])
