#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs them all.
# Builds, sdists, models and ccache live in $HWMATRIX_CACHE (default ~/.cache/hwmatrix),
# shared between test runs and with `hwmatrix run`, so only the first run compiles.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian packages; only the packages of missing tools are installed, after one apt-get update.
# chromium: the browser tests drive Debian's /usr/bin/chromium through Playwright (never its downloads).
# strace: test_loopback records every connect() and bind() of a run, not a sample of its sockets.
need=(); packages=()
for pair in "git:git" "cmake:cmake" "c++:g++ make" "ccache:ccache" "bwrap:bubblewrap" \
            "/usr/bin/chromium:chromium" "chromedriver:chromium-driver" \
            "strace:strace"; do
  tool="${pair%%:*}"
  command -v "$tool" >/dev/null 2>&1 || { need+=("$tool"); packages+=(${pair#*:}); }
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages for: ${need[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]"

set +e
python3 -m pytest -ra "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests - treating that as a failure" >&2
  exit 1
fi
exit "$rc"
