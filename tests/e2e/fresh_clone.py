"""The README's first command, run as a newcomer runs it: in a fresh clone, with nothing prepared.

Used by tests/e2e/test_first_command.py and bench/first_run.py; no Django here (the clone has its own).
"""

import contextlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import requests

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# Settings of the developer's or the test session's environment that a newcomer would not have set.
NOT_A_NEWCOMERS = ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONPATH")
ADMIN_PASSWORD = "first-run-password"


def readme_commands() -> list[str]:
    """The commands of the README's first code block (comments stripped): what a newcomer types first."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.DOTALL)
    assert block, "README.md has no code block"
    return [
        line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_under(folder: pathlib.Path) -> list[str]:
    """Command lines of running processes started from `folder` (its virtual environment, its manage.py)."""
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(folder) in command or cwd == str(folder):
            found.append(f"{proc.name}: {command}")
    return found


class FreshClone:
    """A `git clone` of the repository's HEAD in `parent`, where the README's first command runs."""

    def __init__(self, parent: pathlib.Path, *, datasets_dir: pathlib.Path) -> None:
        self.path = parent / "vitrine"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = parent / "first-command.log"
        self.process: subprocess.Popen | None = None
        self.timings: dict[str, float] = {}
        subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(self.path)], check=True)
        self.env = {key: value for key, value in os.environ.items() if key not in NOT_A_NEWCOMERS}
        self.env.update(
            {
                # The port is the Makefile's ADDRPORT; the password is what `manage.py run` gives the admin.
                "ADDRPORT": f"127.0.0.1:{self.port}",
                "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
                "VITRINE_DATASETS_DIR": str(datasets_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )

    def start(self, command: str) -> None:
        self._started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", command],
                cwd=self.path,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _mark(self, name: str, condition: Callable[[], bool]) -> bool:
        if name not in self.timings and condition():
            self.timings[name] = time.monotonic() - self._started
        return name in self.timings

    def wait_until_serving(self, *, timeout_s: float) -> None:
        """Until /healthz says the database, the broker and the active model are fine; records the times."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the first command exited with {self.process.returncode}:\n{self.log()[-4000:]}"
                )
            self._mark("installed", lambda: (self.path / ".venv" / ".installed").exists())
            self._mark("model active", lambda: "is active" in self.log())
            if self._mark("serving", self._healthy):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not serving after {timeout_s} s:\n{self.log()[-4000:]}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def manage(self, *args: str) -> str:
        """python manage.py ARGS with the clone's own environment, as the newcomer would run it there."""
        result = subprocess.run(
            [str(self.path / ".venv" / "bin" / "python"), "manage.py", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def stop(self) -> int:
        """Ctrl-C, as in the terminal: the whole foreground group gets SIGINT; returns the exit code."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=60)

    def kill_leftovers(self) -> None:
        for line in processes_under(self.path):
            pid = int(line.split(":", 1)[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
