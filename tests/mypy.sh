#!/usr/bin/env bash
# Type-check the package as it is installed (training/ and deploy/ as streamrnn.training and
# streamrnn.deploy) from a tree of links to this checkout; rules in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/streamrnn"
ln -s "$root"/streamrnn/* "$tree/streamrnn/"
ln -s "$root/training" "$tree/streamrnn/training"
ln -s "$root/deploy" "$tree/streamrnn/deploy"
cd "$tree"
"$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" "$@"
