#!/bin/sh
# Each attack of http_attacks.py against a fresh `twistd -n chat` (the default store,
# sqlite:chat.db, in a scratch directory; the publish API on), one JSON line per attack.
#
#   bench/attacks/run.sh [PORT]                       # this checkout
#   CHAT_CODE=/tmp/old bench/attacks/run.sh 18081     # another checkout's chat/ (e.g. a
#                                                     # `git archive 84b5a6d chat twistd_plugin`)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-$here/../../.venv}
port=${1:-18080}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "an-api-key-for-the-attacks" > "$work/keys" && chmod 600 "$work/keys"
if [ -n "${CHAT_CODE:-}" ]; then
    export PYTHONPATH="$CHAT_CODE:$CHAT_CODE/twistd_plugin"
fi
for attack in "post --size 300M" "chunked --size 300M" "slowloris --connections 500 --duration 30"; do
    (cd "$work" && exec "$venv/bin/twistd" -n --pidfile= chat --api-key-file "$work/keys" \
        --listen "tcp:$port:interface=127.0.0.1" > "$work/log" 2>&1) &
    pid=$!
    until "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
        sleep 0.2  # waiting for the port to open
    done
    sleep 2  # let start-up allocations settle before the "before" sample
    # shellcheck disable=SC2086
    "$venv/bin/python" "$here/http_attacks.py" --port "$port" --pid "$pid" $attack
    kill "$pid" && wait "$pid" || true
    rm -f "$work"/chat.db*
done
