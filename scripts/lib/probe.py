"""Small probes for scripts/start_all.sh (stdlib only, psutil / huggingface_hub when installed):

    probe.py http URL [--timeout S] [--bearer KEY]   exit 0 on a 2xx answer; prints the status or why not
    probe.py port HOST PORT                          exit 0 if the port can be bound; else prints its owner
    probe.py hub REPO_ID                             prints cached | reachable | unavailable: <why>

Kept out of the shell script because each is a few lines of Python and a page of bash.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request


def http(url: str, timeout: float, bearer: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            print(resp.status)
            return 0
    except urllib.error.HTTPError as exc:
        print(f"HTTP {exc.code}")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"unreachable ({reason})")
        return 1


def port_owner(port: int) -> str:
    try:
        import psutil
    except ImportError:
        return "another process"
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return "another process"
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            try:
                cmd = " ".join(psutil.Process(conn.pid).cmdline())[:120]
            except psutil.Error:
                cmd = "?"
            return f"pid {conn.pid} ({cmd})"
    return "another process (or a socket that is bound but not listening)"


def port(host: str, number: int) -> int:
    # the services bind with SO_REUSEADDR (aiohttp does), so a TIME_WAIT leftover is not "in use"
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, number))
    except OSError:
        print(port_owner(number))
        return 1
    finally:
        sock.close()
    return 0


def _cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # no hub client: nothing can be cached either
        return False
    files = [try_to_load_from_cache(repo_id, name) for name in ("config.json", "model.safetensors")]
    return all(isinstance(f, str) for f in files)


def hub(repo_id: str) -> int:
    if _cached(repo_id):
        print("cached")
        return 0
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        print("unavailable: not in the Hugging Face cache and HF_HUB_OFFLINE is set")
        return 1
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/models/{repo_id}", method="HEAD"), timeout=5)
    except urllib.error.HTTPError as exc:
        print(f"unavailable: {endpoint} answered HTTP {exc.code} for {repo_id}")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"unavailable: not in the Hugging Face cache and {endpoint} is unreachable "
              f"({getattr(exc, 'reason', exc)})")
        return 1
    print("reachable")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("http")
    h.add_argument("url")
    h.add_argument("--timeout", type=float, default=3.0)
    h.add_argument("--bearer")
    p = sub.add_parser("port")
    p.add_argument("host")
    p.add_argument("port", type=int)
    hb = sub.add_parser("hub")
    hb.add_argument("repo_id")
    args = ap.parse_args()
    if args.cmd == "http":
        return http(args.url, args.timeout, args.bearer)
    if args.cmd == "port":
        return port(args.host, args.port)
    return hub(args.repo_id)


if __name__ == "__main__":
    sys.exit(main())
