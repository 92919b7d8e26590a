"""Does ONEDNN_MAX_CPU_ISA=AVX2 make an AVX-512 machine run oneDNN's AVX2 kernels, and how fast?

    python bench/onednn_isa.py                 # the machine's own kernels, then capped at AVX2
    python bench/onednn_isa.py --photos 64

Each setting runs in a child process (oneDNN reads the variable once, when it starts) with ONEDNN_VERBOSE=1;
it times the EfficientNet-Lite2 forward pass training computes activations with (float32, 260 px) and counts
the instruction sets named by the oneDNN kernels that ran. Runs without Django.
"""

import argparse
import collections
import os
import pathlib
import re
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
ISA_IN_KERNEL = re.compile(r"\b(avx512_core\w*|avx2\w*|avx\b|sse41)")
# None: the variable unset, oneDNN picks the best the CPU has.
ISA_CAPS = (None, "AVX2")


def child(photos: int, rounds: int) -> None:
    sys.path.insert(0, str(REPO))
    import numpy as np

    from classifier.ml.architectures import build_model
    from classifier.ml.serving import configure_tensorflow

    configure_tensorflow()
    model = build_model("effnet_lite2", num_classes=10, input_shape=(260, 260, 3))
    pixels = np.random.default_rng(0).integers(0, 256, size=(photos, 260, 260, 3)).astype(np.float32)
    model.predict_on_batch(pixels[:2])  # traced once, outside the timing
    best = float("inf")
    for _ in range(rounds):
        started = time.monotonic()
        model.predict_on_batch(pixels)
        best = min(best, time.monotonic() - started)
    print(f"RESULT {best:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.photos, args.rounds)
        return
    sys.path.insert(0, str(REPO))
    from classifier.ml.machine import machine_line

    print(machine_line())
    for isa in ISA_CAPS:
        env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if isa is not None:
            env["ONEDNN_MAX_CPU_ISA"] = isa
        done = subprocess.run(
            [sys.executable, __file__, "--child", f"--photos={args.photos}", f"--rounds={args.rounds}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        kernels = collections.Counter(
            match.group(1)
            for line in done.stdout.splitlines()
            if line.startswith("onednn_verbose") and ",exec," in line
            for match in [ISA_IN_KERNEL.search(line)]
            if match
        )
        seconds = float(
            next(line for line in done.stdout.splitlines() if line.startswith("RESULT")).split()[1]
        )
        names = ", ".join(f"{name} x{count}" for name, count in kernels.most_common(4)) or "no oneDNN kernel"
        print(
            f"ONEDNN_MAX_CPU_ISA={isa or '(unset)':<8} {args.photos} photos in {seconds:.2f}s "
            f"({args.photos / seconds:.1f}/s)  kernels: {names}",
            flush=True,
        )


if __name__ == "__main__":
    main()
