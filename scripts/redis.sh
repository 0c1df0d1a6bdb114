#!/usr/bin/env bash
# Make sure a Redis answers on 127.0.0.1:6379 (the redis state backend's tests need one):
# use the running one, else start redis-server (installing it with apt-get when we are root
# and it is missing). Exits non-zero when none can be had.
set -euo pipefail
up() { python3 - <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", 6379), 0.5)
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}
if up; then echo "redis: answering on 127.0.0.1:6379"; exit 0; fi
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "redis: installing redis-server"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null; }
    else
        echo "redis: no Redis on 127.0.0.1:6379 and no redis-server to start" >&2
        exit 1
    fi
fi
redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no \
    --logfile "${TMPDIR:-/tmp}/fastgw-redis.log"
for _ in $(seq 1 50); do
    if up; then echo "redis: started on 127.0.0.1:6379"; exit 0; fi
    sleep 0.1
done
echo "redis: redis-server did not come up (see ${TMPDIR:-/tmp}/fastgw-redis.log)" >&2
exit 1
