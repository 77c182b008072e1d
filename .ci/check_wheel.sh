#!/usr/bin/env bash
# The package as users get it: builds the sdist and the wheel, checks their metadata, then
# installs the wheel into two fresh environments, beside the oldest supported TensorFlow
# (.ci/oldest.txt) and beside the newest that setup.cfg admits, and runs from outside the
# repository (so that only the installed files are importable):
#   - both: the README quickstart (examples/quickstart.py);
#   - the newest, with the [examples] extra: every public module imports;
#   - the oldest: the core tests (the conformance suite, the property checklist, masks, planar
#     flows, the Keras 3 layer). The main suite (`make test`) runs on the newest set.
# Usage: bash .ci/check_wheel.sh   (after `make .venv/bin/activate`; about 5-8 minutes)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv_python="$repo/.venv/bin/python"
base_python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== build and check the sdist and the wheel"
"$venv_python" -m build --quiet --outdir "$work/dist" "$repo" > "$work/build.log" 2>&1 ||
    { cat "$work/build.log"; exit 1; }
"$venv_python" -m twine check --strict "$work"/dist/*
wheel=$(ls "$work"/dist/*.whl)

core_tests=(test_conformance.py test_iaf.py test_masks.py test_planar.py test_keras3.py)

for set in oldest newest; do
    echo "== the wheel beside the $set supported TensorFlow"
    "$base_python" -m venv "$work/$set"
    if [[ $set == oldest ]]; then
        requirements=(-c "$repo/.ci/oldest.txt" "$wheel" pytest pytest-xdist)
    else
        requirements=("$wheel[examples]")
    fi
    "$work/$set/bin/pip" install --quiet --upgrade pip
    "$work/$set/bin/pip" install --quiet "${requirements[@]}"
    cd "$work"
    "$work/$set/bin/python" - <<'PY'
import importlib.metadata as md
import tfp_iaf
assert "site-packages" in tfp_iaf.__file__, f"tfp_iaf imported from {tfp_iaf.__file__}"
print("tfp_iaf", tfp_iaf.__version__, "beside tensorflow", md.version("tensorflow"),
      "tf-keras", md.version("tf-keras"), "tensorflow-probability",
      md.version("tensorflow-probability"))
PY
    if [[ $set == newest ]]; then
        "$work/$set/bin/python" -c "import tfp_iaf.keras3, tfp_iaf.mcmc, tfp_iaf.vae, tfp_iaf.vi"
    fi
    "$work/$set/bin/python" "$repo/examples/quickstart.py" 2> "$work/quickstart.err" ||
        { cat "$work/quickstart.err"; exit 1; }
    if [[ $set == oldest ]]; then
        # The tests import `tests.flow_checks` and `tests.configs`: a copy of tests/ beside a
        # minimal pytest configuration, outside the repository.
        mkdir -p "$work/core/tests"
        for f in "$repo"/tests/*.py; do  # the helpers (every module not named test_*)
            [[ $(basename "$f") == test_* ]] || cp "$f" "$work/core/tests/"
        done
        for t in "${core_tests[@]}"; do cp "$repo/tests/$t" "$work/core/tests/"; done
        printf '[pytest]\nmarkers =\n    slow: statistical checks\nfilterwarnings =\n    ignore::DeprecationWarning\n' \
            > "$work/core/pytest.ini"
        (cd "$work/core" && "$work/$set/bin/python" -m pytest -q -n auto -p no:cacheprovider tests)
    fi
    cd "$repo"
done
