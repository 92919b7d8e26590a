"""docker/kubernetes/, read as files (no cluster here): valid for Kubernetes, and the same containers as the
compose files, whose commands and probes the other tests in this folder run on this machine."""

import re
import shlex

import kubernetes_validate
import pytest
from django.conf import settings

from tests.deploy.support import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    KUBERNETES_DIR,
    WORKER_COMPOSE_FILE,
    compose,
    healthcheck_command,
    kubernetes_manifests,
    kubernetes_resources,
    service_command,
)

# The oldest Kubernetes still supported upstream when this was written; the schemas ship with the package.
KUBERNETES_VERSION = "1.33"
# Deployment -> the compose service it runs as: (file, service, values for its ${...}).
COMPOSE_SERVICE_OF = {
    "vitrine-migrate": (COMPOSE_FILE, "migrate", {}),
    "vitrine-web": (COMPOSE_FILE, "web", {}),
    "vitrine-inference-gpu": (COMPOSE_FILE, "worker-gpu", {}),
    "vitrine-inference-cpu": (WORKER_COMPOSE_FILE, "worker-cpu", {}),
    "vitrine-training": (COMPOSE_FILE, "worker-cpu", {"WORKER_CPU_QUEUES": "training,jobs"}),
    "vitrine-beat": (COMPOSE_FILE, "beat", {}),
}
INFERENCE = ("vitrine-inference-gpu", "vitrine-inference-cpu")
WORKERS = (*INFERENCE, "vitrine-training")


def by_name(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in kubernetes_manifests() if doc["kind"] == kind}


def pod_spec(name: str) -> dict:
    return {**by_name("Deployment"), **by_name("Job")}[name]["spec"]["template"]["spec"]


def container(name: str) -> dict:
    (only,) = pod_spec(name)["containers"]
    return only


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def settings_map() -> dict[str, str]:
    return by_name("ConfigMap")["vitrine-settings"]["data"]


def test_the_kustomization_names_every_manifest_in_the_folder() -> None:
    listed = kubernetes_resources()

    assert sorted(listed) == sorted(
        path.name for path in KUBERNETES_DIR.glob("*.yaml") if path.name != "kustomization.yaml"
    )


@pytest.mark.parametrize(
    "document",
    [doc for doc in kubernetes_manifests() if not doc["apiVersion"].startswith("keda.sh/")],
    ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}",
)
def test_every_manifest_is_valid_for_kubernetes(document: dict) -> None:
    # strict: a misspelt or misplaced field is an error, not silently dropped by the API server.
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_misspelt_field() -> None:
    deployment = by_name("Deployment")["vitrine-beat"]
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 1}}

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)


def test_every_container_runs_its_compose_services_command_and_image() -> None:
    for name, (path, service, values) in COMPOSE_SERVICE_OF.items():
        compose_service = compose(path)["services"][service]
        image = compose_service.get("image") or compose(path)["x-app"]["image"]

        assert container(name)["command"] == service_command(service, values, path=path), name
        assert container(name)["image"] == image, name
    assert {
        doc["metadata"]["name"] for doc in kubernetes_manifests() if doc["kind"] in ("Deployment", "Job")
    } == set(COMPOSE_SERVICE_OF)


def test_the_probes_are_the_compose_healthchecks() -> None:
    for name in (*WORKERS, "vitrine-beat"):
        path, service, values = COMPOSE_SERVICE_OF[name]
        probes = [
            container(name)[probe] for probe in ("startupProbe", "livenessProbe") if probe in container(name)
        ]

        assert probes, name
        for probe in probes:
            assert probe["exec"]["command"] == healthcheck_command(service, values, path=path), name
    # The web pod takes traffic while /healthz is 200; it is restarted only when gunicorn stops listening.
    web = container("vitrine-web")
    assert web["readinessProbe"]["exec"]["command"] == healthcheck_command("web")
    assert "http://127.0.0.1:8000/healthz" in web["readinessProbe"]["exec"]["command"]
    assert web["livenessProbe"]["tcpSocket"]["port"] == web["ports"][0]["name"]
    assert web["ports"][0]["containerPort"] == 8000


def test_inference_workers_take_the_inference_queue_in_one_process_each_on_a_gpu_or_not() -> None:
    for name in INFERENCE:
        command = container(name)["command"]
        assert option(command, "--pool") == "solo", name
        assert option(command, "-Q") == settings_map()["VITRINE_INFERENCE_QUEUE"] == "inference", name
    training = container("vitrine-training")["command"]

    assert container("vitrine-inference-gpu")["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in str(container("vitrine-inference-cpu")["resources"])
    assert "nvidia.com/gpu" not in str(container("vitrine-training")["resources"])
    assert option(training, "-Q").split(",") == [
        settings_map()["VITRINE_TRAINING_QUEUE"],
        settings_map()["VITRINE_JOBS_QUEUE"],
    ]
    # The prefetch follows the settings (one batch per worker): never pinned in a manifest.
    for name in COMPOSE_SERVICE_OF:
        pinned = [
            *container(name)["command"],
            *(variable["name"] for variable in container(name).get("env", [])),
        ]
        assert not [word for word in pinned if "prefetch" in word.lower()], name
    assert not [key for key in settings_map() if "PREFETCH" in key]


def test_exactly_one_beat_and_never_two_at_once() -> None:
    beats = [
        name
        for name, deployment in by_name("Deployment").items()
        if container(name)["command"][3:4] == ["beat"]
    ]

    assert beats == ["vitrine-beat"]
    assert by_name("Deployment")["vitrine-beat"]["spec"]["replicas"] == 1
    assert by_name("Deployment")["vitrine-beat"]["spec"]["strategy"] == {"type": "Recreate"}


def test_pods_share_no_volume_only_their_own_empty_dirs() -> None:
    kinds = {doc["kind"] for doc in kubernetes_manifests()}

    assert not kinds & {"PersistentVolumeClaim", "PersistentVolume", "StatefulSet"}
    for name in COMPOSE_SERVICE_OF:
        for volume in pod_spec(name).get("volumes", []):
            assert set(volume) <= {"name", "emptyDir"} and "emptyDir" in volume, (name, volume)
        mounts = {mount["mountPath"] for mount in container(name).get("volumeMounts", [])}
        assert mounts <= {"/data/models", "/data/beat"}, name
    for name in WORKERS:
        mounts = {mount["mountPath"] for mount in container(name)["volumeMounts"]}
        assert mounts == {settings_map()["VITRINE_MODELS_DIR"]}, name
    assert "volumes" not in pod_spec("vitrine-web")


def test_a_stopping_worker_finishes_its_task_within_the_grace_period() -> None:
    inference_limit = max(settings.CELERY_TASK_TIME_LIMIT, settings.VITRINE_INFERENCE_DEADLINE_S)
    for name in WORKERS:
        grace = pod_spec(name)["terminationGracePeriodSeconds"]
        waits = sum(int(option(pre_stop, "--timeout")) for pre_stop in prestop_commands(name))
        limit = settings.VITRINE_TRAINING_TIME_LIMIT_S if name == "vitrine-training" else inference_limit

        assert grace > limit, name
        # The preStop's waits leave time for the warm shutdown after them.
        assert waits + 30 <= grace, name


def prestop_commands(name: str) -> list[list[str]]:
    """The preStop's commands, one per queue the worker consumes, run one after the other (&&)."""
    shell, flag, line = container(name)["lifecycle"]["preStop"]["exec"]["command"]
    assert [shell, flag] == ["sh", "-c"]
    return [shlex.split(part) for part in line.split("&&")]


def test_the_prestop_stops_the_worker_consuming_each_of_its_queues() -> None:
    for name in WORKERS:
        command = container(name)["command"]
        cancelled = []
        for pre_stop in prestop_commands(name):
            assert pre_stop[:5] == ["celery", "-A", "config.celery_app", "control", "cancel_consumer"], name
            cancelled.append(pre_stop[5])
            # %h is the pod's name, which is $HOSTNAME inside it.
            node = option(command, "--hostname").replace("%h", "$HOSTNAME")
            assert option(pre_stop, "--destination") == node, name
        assert cancelled == option(command, "-Q").split(","), name


def test_the_keda_scaled_object_scales_the_gpu_workers_on_the_inference_list() -> None:
    (scaled,) = [doc for doc in kubernetes_manifests() if doc["kind"] == "ScaledObject"]
    spec = scaled["spec"]
    (trigger,) = spec["triggers"]

    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    # Fields of KEDA 2.x's ScaledObject; the CRD is not in the validator's schemas.
    assert set(spec) <= {
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    }
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "vitrine-inference-gpu",
    }
    assert "replicas" not in by_name("Deployment")["vitrine-inference-gpu"]["spec"]
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert all(isinstance(spec[key], int) for key in ("pollingInterval", "cooldownPeriod"))
    assert trigger["type"] == "redis"
    assert set(trigger["metadata"]) <= {
        "address",
        "addressFromEnv",
        "host",
        "port",
        "passwordFromEnv",
        "usernameFromEnv",
        "listName",
        "listLength",
        "activationListLength",
        "enableTLS",
        "unsafeSsl",
        "databaseIndex",
    }
    assert trigger["metadata"]["listName"] == settings_map()["VITRINE_INFERENCE_QUEUE"]
    assert all(isinstance(value, str) for value in trigger["metadata"].values())
    assert int(trigger["metadata"]["listLength"]) >= 1
    assert re.fullmatch(r"[\w.-]+:\d+", settings_map()[trigger["metadata"]["addressFromEnv"]])


def test_secrets_come_only_from_the_secret_by_env_from() -> None:
    example = (KUBERNETES_DIR / "secrets.env.example").read_text()
    secrets = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", example, re.MULTILINE))

    assert set(secrets) == {
        "DJANGO_SECRET_KEY",
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert set(secrets.values()) == {""}
    assert not set(secrets) & set(settings_map())
    assert not [doc for doc in kubernetes_manifests() if doc["kind"] == "Secret"]
    for name in COMPOSE_SERVICE_OF:
        assert container(name)["envFrom"] == [
            {"configMapRef": {"name": "vitrine-settings"}},
            {"secretRef": {"name": "vitrine-secrets"}},
        ], name
        assert not {variable["name"] for variable in container(name).get("env", [])} & set(secrets), name


def test_the_settings_map_names_only_documented_settings() -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))

    # VITRINE_REDIS_ADDRESS is KEDA's, not vitrine's; the images and compose set DJANGO_SETTINGS_MODULE.
    assert set(settings_map()) - documented == {"VITRINE_REDIS_ADDRESS", "DJANGO_SETTINGS_MODULE"}
    assert settings_map()["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    assert settings_map()["VITRINE_STORAGE"] == "s3"
