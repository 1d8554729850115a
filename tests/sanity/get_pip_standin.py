# p2p.swarm offline get-pip stand-in
"""Offline stand-in for the get-pip.py script that ansible-test downloads.

ansible-test bootstraps pip into each empty virtual environment it creates by
running a cached get-pip.py (~/.ansible/test/cache/get_pip_<version>.py) with
pip-install arguments such as ``--disable-pip-version-check pip==24.2
--no-setuptools --no-wheel``. The host serving that script is not reachable
from these machines, so this file takes its place: it installs the pip that
ships with the interpreter (ensurepip, no network) and then lets that pip
install the requested packages from the configured package index.
"""
import subprocess
import sys

# get-pip.py options that pip itself does not know.
GET_PIP_ONLY = ('--no-setuptools', '--no-wheel')


def main():
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'],
                          stdout=subprocess.DEVNULL)
    if args:
        subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)


if __name__ == '__main__':
    main()
