#!/usr/bin/env bash
# CI (issue 17): `pip install -e .` into an environment that already has torch (the usual cluster case)
# must not replace that torch. A fresh venv holds a stand-in torch 2.5.1 (its metadata only); pip
# resolves (--dry-run: nothing is installed) `.` as it is, and `.[train]` with the constraint
# scripts/install.sh passes for an environment's torch (torch==<its version>; without it pip would
# rather upgrade torch to the newest torchvision's). Neither may plan a torch.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
env=$(mktemp -d)/env
trap 'rm -rf "$(dirname "$env")"' EXIT
"$python" -m venv "$env"
# --dry-run --report need pip >= 22.2
"$env/bin/python" -c "import pip, sys; sys.exit(tuple(map(int, pip.__version__.split('.')[:2])) < (22, 2))" \
  || "$env/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
site=$("$env/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$site/torch-2.5.1.dist-info"
printf 'Metadata-Version: 2.1\nName: torch\nVersion: 2.5.1\n' > "$site/torch-2.5.1.dist-info/METADATA"
printf 'pip\n' > "$site/torch-2.5.1.dist-info/INSTALLER"
: > "$site/torch-2.5.1.dist-info/RECORD"
echo "torch==2.5.1" > "$env/constraints.txt"
for target in . ".[train]"; do
  constraint=()
  [ "$target" = . ] || constraint=(-c "$env/constraints.txt")
  "$env/bin/python" -m pip install -q --disable-pip-version-check --dry-run --report "$env/report.json" \
    "${constraint[@]}" -e "$target"
  "$env/bin/python" - "$env/report.json" "$target" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
planned = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
assert "torch" not in planned, f"pip install -e {sys.argv[2]} would replace torch 2.5.1 with {planned['torch']}"
tv = planned.get("torchvision")
print(f"[keeps-torch] pip install -e {sys.argv[2]}: torch 2.5.1 kept; {len(planned)} packages planned"
      + (f", torchvision {tv} (built for it)" if tv else ""))
PY
done
