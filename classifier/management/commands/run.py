"""python manage.py run: the web server, the Celery workers and beat side by side; Ctrl-C stops them all.

Uses whatever the settings name: SQLite and the filesystem broker by default, PostgreSQL / Redis when
DATABASE_URL / CELERY_BROKER_URL are set. Creates a superuser first when there is none.
"""

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

# Celery workers finish the task in hand on SIGTERM; after this long they are killed.
STOP_GRACE_S = 20


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    # runserver's reloader leaves its serving child running when only the parent is told to stop.
    stop_whole_group: bool = False


class Command(BaseCommand):
    help = "Run the web server, the inference, training and jobs workers and beat; Ctrl-C stops them all."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args: object, **options: object) -> None:
        self._superuser_ensure()
        celery = [sys.executable, "-m", "celery", "-A", "config.celery_app"]
        worker = [*celery, "worker", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
        commands = {
            # Solo pool: the model is loaded in the one process that serves, never in a parent that forks.
            "inference worker": [
                *worker,
                "--pool",
                "solo",
                "--queues",
                settings.VITRINE_INFERENCE_QUEUE,
                "--hostname",
                "inference@%h",
            ],
            # Prefork, one child: time limits are enforced and a crash in training leaves the worker up.
            "training worker": [
                *worker,
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--queues",
                settings.VITRINE_TRAINING_QUEUE,
                "--hostname",
                "training@%h",
            ],
            # Threads: webhook deliveries and imports wait on the network and files, not on the cores.
            "jobs worker": [
                *worker,
                "--pool",
                "threads",
                "--concurrency",
                "4",
                "--queues",
                settings.VITRINE_JOBS_QUEUE,
                "--hostname",
                "jobs@%h",
            ],
            "sweep scheduler": [
                *celery,
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                settings.CELERY_BEAT_SCHEDULE_FILENAME,
            ],
            "web server": [sys.executable, "manage.py", "runserver", str(options["addrport"])],
        }
        os.makedirs(os.path.dirname(settings.CELERY_BEAT_SCHEDULE_FILENAME), exist_ok=True)
        self.stdout.write(
            f"broker {settings.CELERY_BROKER_URL}, database {settings.DATABASES['default']['ENGINE']}; "
            f"admin at http://{options['addrport']}/admin/ (Ctrl-C stops everything)"
        )
        children: list[Child] = []
        stop_requested = False

        def request_stop(signum: int, frame: object) -> None:
            nonlocal stop_requested
            stop_requested = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        exit_code = 0
        try:
            for name, command in commands.items():
                # Own process group each: Ctrl-C reaches this command only, which stops them in order.
                process = subprocess.Popen(command, start_new_session=True)
                children.append(Child(name, process, stop_whole_group=name == "web server"))
            while not stop_requested:
                ended = [child for child in children if child.process.poll() is not None]
                if ended:
                    self.stderr.write(
                        f"{ended[0].name} exited with code {ended[0].process.returncode}; stopping"
                    )
                    exit_code = 1
                    break
                time.sleep(0.5)
        finally:
            self._stop(children)
        if exit_code:
            sys.exit(exit_code)

    def _stop(self, children: list[Child]) -> None:
        for child in children:
            # A Celery worker stops its own pool; signalling the pool too would cut its task short.
            with contextlib.suppress(ProcessLookupError):
                if child.stop_whole_group:
                    os.killpg(child.process.pid, signal.SIGTERM)
                else:
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{child.name} did not stop in {STOP_GRACE_S} s; killing it")
            # Whatever is left of its group (a stuck pool process) goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
        self.stdout.write("stopped")

    def _superuser_ensure(self) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "admin@example.com")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email=email, password=password)
        shown = "from DJANGO_SUPERUSER_PASSWORD" if "DJANGO_SUPERUSER_PASSWORD" in os.environ else password
        self.stdout.write(
            f"Created superuser {username!r} with password {shown} "
            f"(change it: python manage.py changepassword {username})"
        )
