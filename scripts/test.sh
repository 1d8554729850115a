#!/usr/bin/env bash
# Run the whole test suite: unit tests, then the integration tests on a lab of
# real sshd hosts in network namespaces (needs root). Extra arguments go to
# pytest, e.g. `bash scripts/test.sh tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# pytest exits 5 when it collected no test: that is a failure here, as any non-zero.
exec .venv/bin/pytest -ra -p no:cacheprovider "${@:-tests}"
