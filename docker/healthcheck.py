"""Health probes of the containers (docker-compose.yml); exit 0 when healthy, else 1 with the reason.

    python docker/healthcheck.py url URL [--host-from ENV] [--basic-auth-from ENV]
        healthy when GET URL answers 200 (web: /healthz, flower: /healthcheck)
    python docker/healthcheck.py recent-file GLOB --max-age-s N
        healthy when a file matching GLOB changed in the last N seconds (beat saves its schedule file)

No Django here: a probe runs every half minute and must start in milliseconds.
"""

import argparse
import base64
import glob
import os
import sys
import time
import urllib.error
import urllib.request


def host_header(allowed_hosts: str) -> str | None:
    """A Host that Django's ALLOWED_HOSTS accepts: the first name listed (".example.com" -> "example.com")."""
    first = next((host.strip() for host in allowed_hosts.split(",") if host.strip()), "")
    if not first or first == "*":
        return None
    return first.lstrip(".")


def probe_url(*, url: str, host: str | None, basic_auth: str | None, timeout_s: float) -> str | None:
    """None when GET url answers 200; otherwise why not, in one line."""
    request = urllib.request.Request(url)
    if host:
        request.add_header("Host", host)
    if basic_auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(basic_auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as error:
        body = error.read(500).decode(errors="replace")
        return f"{url}: HTTP {error.code} {' '.join(body.split())}"
    except (urllib.error.URLError, OSError) as error:
        return f"{url}: {getattr(error, 'reason', error)}"


def probe_recent_file(*, pattern: str, max_age_s: float) -> str | None:
    """None when a file matching pattern changed within max_age_s; otherwise why not."""
    matches = glob.glob(pattern)
    if not matches:
        return f"no file matches {pattern}"
    age_s = time.time() - max(os.path.getmtime(path) for path in matches)
    if age_s > max_age_s:
        return f"{pattern}: last written {age_s:.0f} s ago (more than {max_age_s:.0f} s)"
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probes = parser.add_subparsers(dest="probe", required=True)
    url = probes.add_parser("url")
    url.add_argument("url")
    url.add_argument("--host-from", metavar="ENV", help="send the first host of this variable as Host")
    url.add_argument(
        "--basic-auth-from", metavar="ENV", help="user:password (first of a list) from this variable"
    )
    url.add_argument("--timeout-s", type=float, default=10.0)
    recent = probes.add_parser("recent-file")
    recent.add_argument("pattern")
    recent.add_argument("--max-age-s", type=float, required=True)
    options = parser.parse_args(argv)
    if options.probe == "url":
        host = host_header(os.environ.get(options.host_from, "")) if options.host_from else None
        auth = os.environ.get(options.basic_auth_from, "") if options.basic_auth_from else ""
        problem = probe_url(
            url=options.url, host=host, basic_auth=auth.split(",")[0] or None, timeout_s=options.timeout_s
        )
    else:
        problem = probe_recent_file(pattern=options.pattern, max_age_s=options.max_age_s)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
