"""A person's view of the admin: Debian's Chromium driven by Playwright against pytest-django's live server,
with a real `celery worker` (tests.e2e.support) reading the same test database, broker and MEDIA_ROOT.

Chromium comes from Debian (`apt-get install chromium`, done by `make test` when missing); Playwright never
downloads a browser of its own here. The live server also serves MEDIA_ROOT (Django's LiveServerThread does),
so the browser loads the stored photos. Screenshots of each step land in test-artifacts/browser/.
"""

import pathlib
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from playwright.sync_api import Browser, Page, sync_playwright

from classifier.models import ModelVersion
from classifier.services.model_versions import model_version_register
from tests.e2e.support import (
    REPO_ROOT,
    BrokerQueues,
    CeleryWorker,
    Workers,
    database_url_of_tests,
    worker_environment,
)

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS_DIR = REPO_ROOT / "test-artifacts" / "browser"
STAFF_USERNAME = "shopkeeper"
STAFF_PASSWORD = "linen-shirt-42"
# What a staff member of the shop may do: everything on products, categories, model versions and runs.
STAFF_APPS = ("catalog", "classifier")

Screenshot = Callable[[Page, str], pathlib.Path]
CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="module")
def browser_media_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("browser-media")


@pytest.fixture(scope="module")
def browser_models_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("browser-models")


@pytest.fixture(autouse=True)
def shared_media_and_models(
    settings, media_root: pathlib.Path, browser_media_dir: pathlib.Path, browser_models_dir: pathlib.Path
) -> None:
    """The live server stores photos and finds trained models where the worker process does."""
    settings.MEDIA_ROOT = str(browser_media_dir)
    settings.VITRINE_MODELS_DIR = browser_models_dir


@pytest.fixture(autouse=True)
def empty_queues() -> Iterator[None]:
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queues.clear()
    yield
    queues.clear()


@pytest.fixture(scope="module")
def browser_workers(
    django_db_setup: None,
    django_db_blocker,
    browser_media_dir: pathlib.Path,
    browser_models_dir: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Workers]:
    """Workers of this module only: stopped before other modules' workers start on the same queues."""
    with django_db_blocker.unblock():
        env = worker_environment(database_url=database_url_of_tests(), media_dir=browser_media_dir)
    env["VITRINE_MODELS_DIR"] = str(browser_models_dir)
    module_workers = Workers(env=env, log_dir=tmp_path_factory.mktemp("browser-worker-logs"))
    yield module_workers
    module_workers.stop_all()


@pytest.fixture
def celery_worker(browser_workers: Workers) -> CeleryWorker:
    return browser_workers.running()


@pytest.fixture
def active_model_version(tiny_model: pathlib.Path, transactional_db: None) -> ModelVersion:
    """The tiny model, active, and never sure enough to file a product by itself: a person reviews."""
    model_version = model_version_register(artifact_dir=tiny_model, activate=True)
    model_version.threshold = 1.0
    model_version.save(update_fields=["threshold"])
    return model_version


@pytest.fixture
def staff_user(django_user_model, transactional_db: None):
    user = django_user_model.objects.create_user(
        username=STAFF_USERNAME, password=STAFF_PASSWORD, is_staff=True
    )
    user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=STAFF_APPS))
    return user


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)"
        )
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        # Playwright keeps an event loop in this thread; Django refuses ORM calls beside one unless told.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        # A plain launch starts from a fresh temporary profile and removes it on close.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture
def page(chromium: Browser, live_server, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser tab on the live server; on a failed test, what it showed last is saved too."""
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    if request.node.stash.get(CALL_FAILED, False):
        SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(SCREENSHOTS_DIR / f"failed-{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture
def screenshot() -> Screenshot:
    """screenshot(page, "logged-in") -> test-artifacts/browser/01-logged-in.png, numbered in step order."""
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS_DIR.glob("*.png"):
        old.unlink()
    taken: list[pathlib.Path] = []

    def take(page: Page, step: str) -> pathlib.Path:
        path = SCREENSHOTS_DIR / f"{len(taken) + 1:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    return take
