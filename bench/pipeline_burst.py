"""Burst mode of bench/pipeline_latency.py: N worker processes, batched or one photo at a time, and the floor.

Runs inside pipeline_latency's process once Django is set up and a model version is active.
"""

import collections
import hashlib
import os
import pathlib
import re
import signal
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from pipeline_latency import percentile, sample_photos, start_worker

from catalog.models import WAITING_STATUSES, Product
from classifier.selectors import model_version_active, model_version_artifact_dir
from classifier.services.classification import classification_enqueue

APPLIED = re.compile(r"classification applied: product (\d+) ")
FORWARD_PASS = re.compile(
    r"classified (\d+) photo\(s\) in one forward pass: decoding (\d+) ms, model (\d+) ms"
)
# A burst that makes no progress for this long has lost what is left.
STALLED_AFTER_S = 180


@dataclass(frozen=True)
class BurstResult:
    images_per_s: float
    p50_s: float
    p95_s: float
    classified_once: int
    lost: int
    double_applied: int
    mean_batch: float
    # Seconds the workers spent decoding and in the model, all of them together.
    decoding_s: float
    model_s: float


def stored_photos() -> list[tuple[str, str]]:
    """The sample photos stored once through the storage API: (stored name, sha256 of the bytes)."""
    stored = []
    for name, content in sample_photos(pathlib.Path(settings.VITRINE_DATASETS_DIR)):
        stored.append(
            (
                default_storage.save(f"products/burst-{name}", ContentFile(content)),
                hashlib.sha256(content).hexdigest(),
            )
        )
    return stored


def products_make(*, count: int, photos: list[tuple[str, str]], tag: str) -> list[int]:
    """`count` pending products sharing the stored photos (sent to no queue yet); their ids."""
    now = timezone.now()
    products = [
        Product(
            name=f"Burst {tag} {number}",
            slug=f"burst-{tag}-{number}",
            sku=f"BURST-{tag}-{number}".upper(),
            price=Decimal("10"),
            image=photos[number % len(photos)][0],
            image_sha256=photos[number % len(photos)][1],
            status=Product.Status.PENDING,
            status_changed_at=now,
        )
        for number in range(count)
    ]
    return [product.pk for product in Product.objects.bulk_create(products, batch_size=500)]


def worker_cores(count: int) -> list[list[int]]:
    """This machine's cores dealt out to `count` workers (all of them to one)."""
    cores = sorted(os.sched_getaffinity(0))
    return [cores[index::count] for index in range(count)] if count <= len(cores) else [cores] * count


def burst_once(
    *,
    workers: int,
    batch_size: int,
    burst: int,
    photos: list,
    scratch: pathlib.Path,
    tag: str,
    kill_one: bool,
) -> BurstResult:
    env = {"VITRINE_INFERENCE_BATCH_SIZE": str(batch_size), "DJANGO_LOG_LEVEL": "INFO"}
    logs = [scratch / f"worker-{tag}-{index}.log" for index in range(workers)]
    processes = [
        start_worker(log_path=log, env=env, cores=cores, hostname=f"bench{index}-{tag}@%h")
        for index, (log, cores) in enumerate(zip(logs, worker_cores(workers), strict=True))
    ]
    try:
        product_ids = products_make(count=burst, photos=photos, tag=tag)
        sent_at = {}
        for product_id in product_ids:
            sent_at[product_id] = timezone.now()
            classification_enqueue(product_ids=[product_id])
        waiting = Product.objects.filter(pk__in=product_ids, status__in=WAITING_STATUSES)
        left, progress_at, killed = burst, time.monotonic(), False
        while left:
            time.sleep(0.5)
            now_left = waiting.count()
            if now_left < left:
                left, progress_at = now_left, time.monotonic()
            if kill_one and not killed and left <= burst // 2:
                os.kill(processes[0].pid, signal.SIGKILL)
                killed = True
                print(f"  SIGKILLed worker 0 with {left} products left")
            if time.monotonic() - progress_at > STALLED_AFTER_S:
                break
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
    changed_at = dict(
        Product.objects.filter(pk__in=product_ids)
        .exclude(status__in=WAITING_STATUSES)
        .values_list("pk", "status_changed_at")
    )
    latencies = [(changed_at[pk] - sent_at[pk]).total_seconds() for pk in changed_at]
    log_text = "\n".join(log.read_text(errors="replace") for log in logs)
    applied = collections.Counter(int(pk) for pk in APPLIED.findall(log_text))
    batches = [tuple(map(int, batch)) for batch in FORWARD_PASS.findall(log_text)]
    span_s = (
        (max(changed_at.values()) - min(sent_at.values())).total_seconds() if changed_at else float("inf")
    )
    return BurstResult(
        images_per_s=len(changed_at) / span_s,
        p50_s=percentile(latencies, 0.5) if latencies else float("nan"),
        p95_s=percentile(latencies, 0.95) if latencies else float("nan"),
        classified_once=sum(1 for pk in product_ids if applied[pk] == 1),
        lost=burst - len(changed_at),
        double_applied=sum(1 for pk in product_ids if applied[pk] > 1),
        mean_batch=statistics.mean(size for size, _, _ in batches) if batches else 0.0,
        decoding_s=sum(decoding for _, decoding, _ in batches) / 1000,
        model_s=sum(model for _, _, model in batches) / 1000,
    )


def floor(*, photos: list[tuple[str, str]], batch_size: int, images: int = 64) -> tuple[float, float]:
    """Images/s of this machine decoding (a pool, one thread per core) and running the model, no pipeline:
    (in batches of batch_size, one at a time). Measured here while no worker runs."""
    import numpy as np

    from classifier.ml.preprocess import open_image, to_array
    from classifier.ml.serving import Classifier, configure_tensorflow

    configure_tensorflow()
    classifier = Classifier.load(model_version_artifact_dir(model_version=model_version_active()))
    contents = []
    for number in range(images):
        with default_storage.open(photos[number % len(photos)][0], "rb") as photo:
            contents.append(photo.read())

    def pixels(content: bytes) -> np.ndarray:
        return to_array(open_image(content), input_shape=classifier.input_shape, style=classifier.style)

    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        list(pool.map(pixels, contents[:4]))  # warm
        started = time.perf_counter()
        arrays = list(pool.map(pixels, contents))
        decode_s = time.perf_counter() - started
    classifier.predict_arrays(np.stack(arrays[:batch_size]))  # warm
    started = time.perf_counter()
    for start in range(0, images, batch_size):
        classifier.predict_arrays(np.stack(arrays[start : start + batch_size]))
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    for array in arrays[:16]:
        classifier.predict_arrays(array[None])
    single_s = (time.perf_counter() - started) * images / 16
    print(
        f"floor ({images} photos, this process, all cores): decoding {decode_s / images * 1000:.1f} ms/photo"
        f" (pool of {len(os.sched_getaffinity(0))}), model {batched_s / images * 1000:.1f} ms/photo in"
        f" batches of {batch_size}, {single_s / images * 1000:.1f} ms/photo one at a time"
    )
    return images / (decode_s + batched_s), images / (decode_s + single_s)


def bursts(
    *,
    worker_counts: list[int],
    modes: list[str],
    burst: int,
    batch_size: int,
    kill_one: bool,
    scratch: pathlib.Path,
) -> None:
    photos = stored_photos()
    floor_batched, floor_single = floor(photos=photos, batch_size=batch_size)
    print(f"floor: {floor_batched:.1f} images/s batched, {floor_single:.1f} images/s one at a time")
    for workers in worker_counts:
        for mode in modes:
            size = batch_size if mode == "batched" else 1
            result = burst_once(
                workers=workers,
                batch_size=size,
                burst=burst,
                photos=photos,
                scratch=scratch,
                tag=f"{workers}w-{mode}",
                kill_one=kill_one,
            )
            goal = floor_batched if mode == "batched" else floor_single
            print(
                f"burst of {burst}, {workers} worker(s), {mode} (batch size {size}, mean batch "
                f"{result.mean_batch:.1f}): {result.images_per_s:.1f} images/s = "
                f"{result.images_per_s / goal:.2f} of the floor; send -> category p50 {result.p50_s:.1f} s, "
                f"p95 {result.p95_s:.1f} s; classified once {result.classified_once}, lost {result.lost}, "
                f"double-applied {result.double_applied}; workers' time decoding {result.decoding_s:.1f} s, "
                f"in the model {result.model_s:.1f} s"
            )
