#!/usr/bin/env bash
# On a GPU machine without network, where torch, triton, pluggy and pytest are already present:
# install hatchling from wheels in .whl/ (if any) and this repository's packages (not editable).
set -euo pipefail
cd "$(dirname "$0")/.."
pip=(python3 -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --no-index)
if compgen -G ".whl/*.whl" >/dev/null; then
  "${pip[@]}" .whl/*.whl
fi
# One by one: a package that fails to build is reported and the others still install.
for project in packages/gems-core/ packages/*/ examples/gems-example-plugin/ tests/plugins/gems-test-plugins/; do
  [ -f "$project/pyproject.toml" ] || continue
  "${pip[@]}" "$project" >/tmp/gems-install.log 2>&1 || { echo "failed to install $project:"; tail -5 /tmp/gems-install.log; }
done
python3 -c "import flag_gems, torch, triton; print('flag_gems', flag_gems.__version__, 'torch', torch.__version__, 'triton', triton.__version__, 'device', flag_gems.device)"
# Build the replay module now (once per machine and torch), so that no process pays for it on a first call.
python3 -c "from flag_gems import native; print('replayed launches:', 'on' if native.module() is not None else 'off')"
