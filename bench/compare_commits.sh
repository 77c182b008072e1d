#!/usr/bin/env bash
# Runs one benchmark script at two commits, alternately (A B A B ...), on this machine, so a
# change in machine load hits both alike; prints each run's table under a header naming the
# commit. Each commit runs from a temporary worktree with its own tfp_iaf first on PYTHONPATH;
# a commit whose bench/ is a package runs the script as a module (`python -m bench.<name>`),
# an older one as a file.
#
#   bench/compare_commits.sh OLD_COMMIT NEW_COMMIT ROUNDS bench_conv.py [script flags...]
set -euo pipefail
old=$1 new=$2 rounds=$3 script=$4
shift 4
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/a" >/dev/null 2>&1 || true;
      git -C "$root" worktree remove --force "$work/b" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach -q "$work/a" "$old"
git -C "$root" worktree add --detach -q "$work/b" "$new"
for round in $(seq 1 "$rounds"); do
  for side in a b; do
    commit=$([ "$side" = a ] && echo "$old" || echo "$new")
    echo "=== round $round, commit $(git -C "$root" rev-parse --short "$commit") ==="
    if [ -f "$work/$side/bench/__init__.py" ]; then
      module=bench.${script%.py}
      (cd "$work/$side" && PYTHONPATH="$work/$side" "$python" -m "${module//\//.}" "$@" 2>/dev/null)
    else
      (cd "$work/$side" && PYTHONPATH="$work/$side" "$python" "bench/$script" "$@" 2>/dev/null)
    fi
  done
done
