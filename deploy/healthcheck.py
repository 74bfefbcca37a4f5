"""Container health check: exit 0 when texas answers GET /healthz with 200, else 1.

The Dockerfile's HEALTHCHECK runs it; the slim image has no curl, so it is standard-library
Python. It asks PROBE_BIND_ADDRESS when set, else BIND_ADDRESS, from inside the container.
"""

import collections.abc
import os
import sys
import urllib.request

_DEFAULT_ADDRESS = "127.0.0.1:3000"
# A wildcard bind is reached through loopback.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def probe_url(environ: collections.abc.Mapping[str, str]) -> str:
    address = environ.get("PROBE_BIND_ADDRESS") or environ.get("BIND_ADDRESS") or _DEFAULT_ADDRESS
    host, _, port = address.rpartition(":")
    host = _LOOPBACK.get(host, host)
    return f"http://{host}:{port}/healthz"


def main(environ: collections.abc.Mapping[str, str]) -> int:
    # No proxies: an HTTP_PROXY meant for the app's outbound calls must not carry the probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(probe_url(environ), timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (OSError, ValueError):  # refused, timed out, non-2xx (HTTPError), bad address
        return 1


if __name__ == "__main__":
    sys.exit(main(os.environ))
