"""docker-compose.yml, the Dockerfile and .env.example, read as files (Docker cannot run here).

What the containers run is started on this machine by the other tests in this folder.
"""

import pathlib
import re
import subprocess

import pytest

from tests.deploy.support import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    REPO_ROOT,
    WORKER_COMPOSE_FILE,
    compose,
    interpolate,
    service_command,
    settings_read_by_the_code,
)

LONG_RUNNING = ("postgres", "redis", "minio", "web", "proxy", "worker-gpu", "worker-cpu", "beat", "flower")
APP_SERVICES = ("migrate", "web", "worker-gpu", "worker-cpu", "beat", "flower")


def test_the_compose_file_names_every_service_each_with_a_healthcheck() -> None:
    services = compose()["services"]

    assert set(services) == {*LONG_RUNNING, "migrate", "minio-setup"}
    for name in LONG_RUNNING:
        healthcheck = services[name]["healthcheck"]
        assert healthcheck["test"][0] in ("CMD", "CMD-SHELL"), name
        assert {"interval", "timeout", "retries"} <= set(healthcheck), name


def test_data_lives_in_named_volumes_of_its_servers_only() -> None:
    document = compose()
    services = document["services"]

    def volume_of(service: str, target: str) -> str:
        mounts = [mount.split(":") for mount in services[service]["volumes"]]
        return next(source for source, mounted_at, *_ in mounts if mounted_at == target)

    assert set(document["volumes"]) == {"postgres-data", "redis-data", "minio-data", "caddy-data"}
    assert volume_of("postgres", "/var/lib/postgresql/data") == "postgres-data"
    assert volume_of("redis", "/data") == "redis-data"
    assert volume_of("minio", "/data") == "minio-data"
    # Web, workers and beat share nothing on disk: each may run on a host of its own.
    for name in APP_SERVICES:
        assert "volumes" not in services[name], name
        assert "DJANGO_MEDIA_ROOT" not in services[name]["environment"], name
    assert [mount.split(":")[0] for mount in services["proxy"]["volumes"]] == [
        "./docker/Caddyfile",
        "caddy-data",
    ]


def test_web_workers_and_beat_keep_photos_and_models_in_the_bucket() -> None:
    services = compose()["services"]
    environment = compose()["x-app-environment"]

    for name in APP_SERVICES:
        assert services[name]["environment"]["VITRINE_STORAGE"] == "s3", name
    assert interpolate(environment["AWS_S3_ENDPOINT_URL"], {}) == "http://minio:9000"
    assert interpolate(environment["AWS_STORAGE_BUCKET_NAME"], {}) == "vitrine"
    assert interpolate(environment["AWS_S3_REGION_NAME"], {}) == "us-east-1"
    # Photos through the proxy's /media/ on the shop's own domain, unless .env says otherwise.
    assert interpolate(environment["VITRINE_MEDIA_URLS"], {}) == "public"
    assert interpolate(environment["AWS_S3_CUSTOM_DOMAIN"], {"VITRINE_DOMAIN": "shop.example.com"}) == (
        "shop.example.com"
    )
    assert (
        services["proxy"]["environment"]["AWS_STORAGE_BUCKET_NAME"] == environment["AWS_STORAGE_BUCKET_NAME"]
    )
    # The credentials come from .env, never from the compose file.
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(environment)


def test_minio_is_pinned_healthy_and_set_up_once_before_the_app_starts() -> None:
    services = compose()["services"]
    setup = services["minio-setup"]

    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", services["minio"]["image"])
    assert re.fullmatch(r"minio/mc:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", setup["image"])
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert setup["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert setup["restart"] == "no"
    assert setup["volumes"] == ["./docker/minio:/setup:ro"]
    assert setup["entrypoint"] == ["sh", "/setup/minio-setup.sh"]
    assert (REPO_ROOT / "docker" / "minio" / "minio-setup.sh").is_file()
    for name in ("web", "worker-gpu", "worker-cpu", "beat"):
        assert services[name]["depends_on"]["minio-setup"] == {"condition": "service_completed_successfully"}
    assert services["proxy"]["depends_on"]["minio"] == {"condition": "service_healthy"}


def test_the_servers_are_published_on_the_private_address_only() -> None:
    services = compose()["services"]

    for name, port in (("postgres", 5432), ("redis", 6379), ("minio", 9000)):
        (published,) = services[name]["ports"]
        assert interpolate(published, {}) == f"127.0.0.1:{port}:{port}", name
        assert interpolate(published, {"VITRINE_PRIVATE_ADDRESS": "10.0.0.5"}) == f"10.0.0.5:{port}:{port}"


def test_the_gpu_worker_reserves_a_gpu_and_serves_only_the_inference_queue_in_one_process() -> None:
    worker = compose()["services"]["worker-gpu"]

    assert worker["build"]["target"] == "gpu"
    assert worker["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    command = service_command("worker-gpu")
    assert command[command.index("--pool") + 1] == "solo"
    assert command[command.index("-Q") + 1] == "inference"
    assert "inference-gpu@$HOSTNAME" in interpolate(worker["healthcheck"]["test"][1], {})


def test_the_cpu_worker_trains_runs_the_catalogs_jobs_and_falls_back_to_inference() -> None:
    command = service_command("worker-cpu")

    assert command[command.index("-Q") + 1].split(",") == ["training", "inference", "jobs"]
    assert command[command.index("--pool") + 1] == "prefork"
    assert (
        service_command("worker-cpu", {"WORKER_CPU_QUEUES": "training"})[command.index("-Q") + 1]
        == "training"
    )


def test_app_services_start_after_the_schema_is_migrated() -> None:
    services = compose()["services"]

    assert service_command("migrate") == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("web", "worker-gpu", "worker-cpu", "beat"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["minio-setup"]["condition"] == "service_completed_successfully", name
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["redis"]["condition"] == "service_healthy", name
    for name in APP_SERVICES:
        assert services[name]["environment"]["DJANGO_SETTINGS_MODULE"] == "config.settings.production", name
        assert services[name]["env_file"] == ".env", name


def test_the_database_and_broker_default_to_the_bundled_services_and_follow_env() -> None:
    environment = compose()["x-app-environment"]

    bundled = interpolate(environment["DATABASE_URL"].replace("${POSTGRES_PASSWORD:-}", "s3cret"), {})
    managed = interpolate(environment["DATABASE_URL"], {"DATABASE_URL": "postgres://u:p@db.example.com/shop"})

    assert bundled == "postgres://vitrine:s3cret@postgres:5432/vitrine"
    assert managed == "postgres://u:p@db.example.com/shop"
    assert interpolate(environment["CELERY_BROKER_URL"], {}) == "redis://redis:6379/0"


def test_every_setting_the_code_reads_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))

    missing = settings_read_by_the_code() - documented

    assert not missing, f".env.example lacks {sorted(missing)}"
    # Sanity: the scan does find what the settings read.
    assert {"DJANGO_SECRET_KEY", "VITRINE_CONFIDENCE_THRESHOLD", "DJANGO_SECURE_HSTS_SECONDS"} <= (
        settings_read_by_the_code()
    )


@pytest.mark.parametrize("compose_file", [COMPOSE_FILE, WORKER_COMPOSE_FILE], ids=lambda path: path.name)
def test_the_compose_variables_are_documented_in_env_example(compose_file: pathlib.Path) -> None:
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_file.read_text()))
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))

    assert used - documented == set()


def test_env_example_leaves_every_secret_blank() -> None:
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE))

    for secret in (
        "DJANGO_SECRET_KEY",
        "POSTGRES_PASSWORD",
        "FLOWER_BASIC_AUTH",
        "MINIO_ROOT_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
    ):
        assert values[secret] == "", secret


@pytest.mark.parametrize("target", ["cpu", "gpu", "flower"])
def test_every_image_the_compose_file_builds_is_a_dockerfile_target(target: str) -> None:
    targets = re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    built = {service["build"]["target"] for service in compose()["services"].values() if "build" in service}

    assert target in built
    assert target in targets


def test_the_gpu_image_installs_tensorflow_with_cuda_at_the_version_pinned_for_cpu() -> None:
    # The Dockerfile's own shell lines, run on requirements.txt.
    derived = subprocess.run(
        [
            "sh",
            "-c",
            "sed -n 's/^tensorflow-cpu==//p' requirements.txt; grep -v '^tensorflow-cpu==' requirements.txt",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    pinned = re.search(r"^tensorflow-cpu==(\S+)$", (REPO_ROOT / "requirements.txt").read_text(), re.MULTILINE)
    dockerfile = DOCKERFILE.read_text()

    assert derived[0] == pinned.group(1)
    assert not any(line.startswith("tensorflow") for line in derived[1:])
    assert "grep -v '^tensorflow-cpu==' requirements.txt" in dockerfile
    assert "sed -n 's/^tensorflow-cpu==//p' requirements.txt" in dockerfile
    assert 'pip install "tensorflow[and-cuda]==${tensorflow_version}"' in dockerfile


def test_flower_is_pinned_in_its_own_requirements_file_only() -> None:
    flower = (REPO_ROOT / "requirements-flower.txt").read_text()

    assert re.search(r"^flower==\d", flower, re.MULTILINE)
    assert "-r requirements.txt" in flower
    assert "flower" not in (REPO_ROOT / "requirements.txt").read_text()


def test_secrets_and_local_data_stay_out_of_the_images() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()

    assert {".env", ".git/", ".venv/", "var/"} <= set(ignored)
