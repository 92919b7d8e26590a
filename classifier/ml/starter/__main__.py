"""python -m classifier.ml.starter build | assemble: rebuild the starter head, or assemble its artifact."""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classifier.ml.starter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="rebuild head.npz and starter.json from clothing-small")
    build.add_argument("--datasets-dir", type=pathlib.Path, required=True, help="holds clothing-small/")
    build.add_argument("--out-dir", type=pathlib.Path, help="default: classifier/ml/starter/")
    build.add_argument(
        "--cache-dir", type=pathlib.Path, default=REPO_ROOT / "var" / "cache" / "starter-features"
    )
    build.add_argument("--seed", type=int)
    assemble = commands.add_parser("assemble", help="write the starter model as an artifact directory")
    assemble.add_argument("--out", type=pathlib.Path, required=True, help="the artifact directory to write")
    args = parser.parse_args(argv)

    # TensorFlow comes in only now, so --help stays instant; its pools are sized before the first op.
    from classifier.ml.machine import cpu_flags_line
    from classifier.ml.serving import configure_tensorflow
    from classifier.ml.starter import STARTER_DIR, StarterError

    print(configure_tensorflow(), "|", cpu_flags_line())
    started = time.monotonic()
    try:
        if args.command == "build":
            from classifier.ml.starter.build import SEED, build_starter

            summary = build_starter(
                datasets_dir=args.datasets_dir,
                out_dir=args.out_dir or STARTER_DIR,
                cache_dir=args.cache_dir,
                seed=SEED if args.seed is None else args.seed,
            )
            _print_summary(summary)
        else:
            from classifier.ml.starter.assemble import assemble_starter_artifact

            out = assemble_starter_artifact(out_dir=args.out)
            print(f"assembled {out} in {time.monotonic() - started:.1f}s")
    except StarterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _print_summary(summary: dict) -> None:
    metrics, calibration, timings = summary["metrics"], summary["calibration"], summary["timings"]
    chosen, compared = summary["selection"]["chosen"], summary["selection"]["compared"]
    lines = [
        f"chosen of {compared} settings: side {chosen['side']}, mirror {chosen['mirror']}, "
        f"{chosen['transform']} features, l2 {chosen['l2']:g}",
        f"validation top-1 {metrics['test_accuracy']:.4f} ({metrics['test_images']} photos)",
        f"temperature {calibration['temperature']:.3f}: validation ECE {metrics['test_ece_before']:.4f} -> "
        f"{metrics['test_ece_after']:.4f} (out-of-fold {calibration['ece_before']:.4f} -> "
        f"{calibration['ece_after']:.4f})",
        f"threshold {metrics['suggested_threshold']:.4f}: coverage {metrics['threshold_coverage']:.4f}, "
        f"precision {metrics['threshold_precision']:.4f}",
        f"with the OOD check: coverage {metrics['threshold_coverage_with_ood']:.4f}, precision "
        f"{metrics['threshold_precision_with_ood']:.4f}, unfamiliar {metrics['test_unfamiliar_share']:.4f} "
        f"(OOD threshold {summary['ood']['threshold']:.1f}, "
        f"keeps {summary['ood']['keep_rate']:.0%} of held-out known photos)",
        f"features {timings['features_s']}s for {timings['photos_computed']} photos (x2 views), "
        f"fitting {timings['fitting_s']}s, total {timings['total_s']}s",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
