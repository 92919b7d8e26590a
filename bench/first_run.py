"""What a newcomer waits for: the README's first command on a fresh clone, timed, and the starter model's
accuracy on clothing-small/validation.

    python bench/first_run.py              # clones HEAD into a temporary folder, runs `make run` there

Prints the time until the virtual environment is installed, until a model version is active and until
/healthz answers 200 (time to first serve), then the starter model's recorded validation figures, with the
CPU they were measured on. Stops everything it started.
"""

import argparse
import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import datasets_dir  # noqa: E402
from classifier.ml.machine import machine_line  # noqa: E402
from classifier.ml.starter import read_starter_summary  # noqa: E402
from tests.e2e.fresh_clone import FreshClone, processes_under, readme_commands  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for /healthz")
    args = parser.parse_args()
    command = readme_commands()[0]
    print(f"machine        {machine_line()}")
    print(f"command        {command} (in a fresh clone of HEAD)")
    with tempfile.TemporaryDirectory(prefix="vitrine-first-run-") as parent:
        clone = FreshClone(pathlib.Path(parent), datasets_dir=datasets_dir())
        clone.start(command)
        try:
            clone.wait_until_serving(timeout_s=args.timeout)
            for stage in ("installed", "model active", "serving"):
                print(f"{stage:<14} {clone.timings.get(stage, float('nan')):.0f} s after the command started")
            print(next(line for line in clone.log().splitlines() if " is active: " in line))
            code = clone.stop()
            print(f"stopped        exit code {code}, leftover processes: {len(processes_under(clone.path))}")
        finally:
            clone.kill_leftovers()
    metrics = read_starter_summary()["metrics"]
    print(
        "starter model  "
        + json.dumps(
            {
                "validation_top1": round(metrics["test_accuracy"], 4),
                "threshold": round(metrics["suggested_threshold"], 4),
                "coverage_at_threshold_with_ood": round(metrics["threshold_coverage_with_ood"], 4),
                "precision_at_threshold_with_ood": round(metrics["threshold_precision_with_ood"], 4),
            }
        )
    )


if __name__ == "__main__":
    main()
