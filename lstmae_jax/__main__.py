"""``python -m lstmae_jax JOB [flags]``: run one job, with the flags of ``lstmae-JOB``.

Only the chosen job's module is imported: each defines its own absl flags, and several
share a name (``--output``), so two jobs cannot live in one process.
"""

from __future__ import annotations

import importlib
import os
import sys

# The jobs in the order a run uses them, each with its line of help.
JOBS = {
    "synth": "write generated flows (CICFlowMeter schema, attack episodes) to Parquet or CSV",
    "convert": "CICFlowMeter CSV / CSV.gz / Parquet -> canonical Parquet and a cleaning report",
    "train": "train the LSTM-AE (stage 1), its latent classifier (stage 2) or a baseline",
    "export": "a trained workdir -> a self-contained detector artifact (no Flax needed)",
    "evaluate": "score data with every run in a workdir -> REPORT.json and REPORT.md",
    "score": "score flows (files or a live log) with an artifact, or recalibrate it",
}
_HELP = ("-h", "-?", "--help", "--helpshort", "--helpfull", "help")


def usage() -> str:
    from lstmae_jax import __version__

    lines = [
        f"lstmae-jax {__version__}: LSTM-autoencoder intrusion detection on CICFlowMeter flows",
        "",
        "usage: python -m lstmae_jax JOB [flags]   (or the installed command lstmae-JOB)",
        "",
        "jobs:",
        *(f"  {job:10s}{line}" for job, line in JOBS.items()),
        "",
        "python -m lstmae_jax JOB --help lists every option of JOB.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Runs ``argv[1]``'s job on the rest of ``argv`` (default ``sys.argv``)."""
    argv = sys.argv if argv is None else argv
    if len(argv) > 1 and argv[1] in _HELP:
        print(usage())
        sys.exit(0)
    if len(argv) > 1 and argv[1] == "--version":
        from lstmae_jax import __version__

        print(__version__)
        sys.exit(0)
    if len(argv) < 2 or argv[1] not in JOBS:
        problem = "no job given" if len(argv) < 2 else f"unknown job {argv[1]!r}"
        print(f"error: {problem}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    job = importlib.import_module(f"lstmae_jax.cli.{argv[1]}")
    # absl names the main module (and --help's flags) by argv[0]; this one reads as typed.
    sys.argv = [f"{os.path.basename(sys.executable)} -m lstmae_jax {argv[1]}", *argv[2:]]
    job.run()


if __name__ == "__main__":
    main()
