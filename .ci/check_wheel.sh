#!/usr/bin/env bash
# The package as users get it: builds the sdist and the wheel, checks their metadata, then
# installs the wheel into two fresh environments, beside the oldest supported TensorFlow
# (.ci/oldest.txt) and beside the newest that setup.cfg admits, and runs from outside the
# repository (so that only the installed files are importable):
#   - the wheel holds the package alone: not the examples' harness (examples/vae_harness);
#   - both: the README quickstart (examples/quickstart.py);
#   - the oldest, with the core dependencies alone: `tfp_iaf.vae` imports (no extra needed);
#   - the newest, with the [examples] extra: every public module imports;
#   - the oldest: the core tests (the conformance suite, the property checklist, masks, planar
#     flows, the Keras 3 layer). The main suite (`make test`) runs on the newest set.
# Usage: bash .ci/check_wheel.sh   (after `make .venv/bin/activate`; about 5-10 minutes)
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

echo "== the wheel holds tfp_iaf alone"
"$venv_python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
modules = [n for n in names if n.endswith(".py")]
outside = [n for n in modules if not n.startswith("tfp_iaf/")]
harness = [n for n in modules if n.rsplit("/", 1)[-1] in ("experiment.py", "training.py", "trained.py", "checkpoints.py", "experiment_flags.py", "cli.py", "presets.py")]
assert not outside and not harness, f"the wheel holds more than tfp_iaf: {outside + harness}"
print(len(modules), "modules, all under tfp_iaf/; none of the examples' harness")
PY

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
    else  # the core dependencies alone: no tensorflow_datasets, no matplotlib
        "$work/$set/bin/python" - <<'PY'
import importlib.util
import tfp_iaf.vae
missing = [m for m in ("tensorflow_datasets", "matplotlib") if importlib.util.find_spec(m) is None]
assert missing == ["tensorflow_datasets", "matplotlib"], f"an extra is installed: {missing}"
print("tfp_iaf.vae imports without tensorflow_datasets and matplotlib:",
      len(tfp_iaf.vae.__all__), "public names")
PY
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
