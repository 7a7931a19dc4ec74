#!/usr/bin/env bash
# PyJAMA exposure manager.
#   ./manager.sh install pyjama          install the Python dependencies (requirements.txt)
#   ./manager.sh create MY_EXPO [--partition day|week|month]  configs/MY_EXPO/ from templates + data/MY_EXPO/00_raw/
#   ./manager.sh archive MY_EXPO         move configs + data to ARCHIVES/MY_EXPO/ (never overwrites)
#   ./manager.sh delete MY_EXPO [--force]  remove an archived exposure (--force: even if not archived)
#   ./manager.sh demo                    write the DEMO raw files (deterministic) if data/DEMO/00_raw is empty
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }

cmd="${1:-}"
case "$cmd" in
  install)
    what="${2:-}"
    if [[ "$what" != "pyjama" ]]; then
      echo "Error: install takes 'pyjama' (./manager.sh install pyjama); got '${what}'" >&2; exit 2
    fi
    "$py" -m pip install -r "$here/requirements.txt"
    echo "installed PyJAMA's dependencies into $("$py" -c 'import sys; print(sys.prefix)')"
    ;;
  create|archive|delete|demo)
    shift
    PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m pyjama.manage "$cmd" "$@"
    ;;
  ""|-h|--help|help)
    usage ;;
  *)
    echo "Error: unknown command '$cmd'; allowed: install, create, archive, delete, demo" >&2; exit 2 ;;
esac
