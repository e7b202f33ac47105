"""Train a model: lstmae-train --data=PATH --workdir=DIR [--model=...] [--stage=...].

The same as ``python -m lstmae_jax train`` and ``python launch/train.py``. Every option
but --workdir is a field of lstmae_jax.config.Config; --flagfile works. Re-running the
same command with the same --workdir resumes from the latest checkpoint (refused if an
input file changed since the run started, unless --allow_data_change). Several hosts: the
same command on each, with --distributed (docs/training.md, "Several hosts").
"""

import json
import sys

import jax
from absl import flags, logging

from lstmae_jax import config, console
from lstmae_jax.cli import entry
from lstmae_jax.jobs import training
from lstmae_jax.train import peers, sharding

flags.DEFINE_string("workdir", None, "Experiment directory (checkpoints, metrics, summaries).")
flags.mark_flag_as_required("workdir")
config.define_flags()
flags.adopt_module_key_flags(config)  # --help lists the config's options too


# Exit status of a run stopped by SIGTERM (128 + 15, as a shell reports it): the
# checkpoint is saved, but the stage did not finish, so nothing downstream may run.
EXIT_PREEMPTED = 143
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C, the checkpoint saved


def main(argv: list[str]) -> None:
    del argv
    try:
        cfg = config.from_flags()
    except ValueError as e:  # a bad flag value: one line naming the flag, no traceback
        sys.exit(f"error: {e}")
    try:  # before any computation: it decides which devices this process sees
        sharding.maybe_initialize_distributed(
            cfg.distributed, cfg.coordinator_address, cfg.num_processes, cfg.process_id
        )
    except ValueError as e:  # e.g. nothing to auto-detect the coordinator from
        sys.exit(
            f"error: --distributed: {e} (give --coordinator_address, --num_processes and"
            " --process_id where JAX cannot detect them: it can on TPU, SLURM, Open MPI)"
        )
    sharding.log_devices(sharding.make_mesh())
    # The whole config only at --verbosity=1: training writes it to the run's config.json
    # and names that file in one line.
    logging.debug("config:\n%s", cfg.dumps())
    try:
        summary = training.train_job(cfg, flags.FLAGS.workdir)
    except (ValueError, OSError) as e:  # bad input, an unwritable output: one line, no traceback
        sys.exit(f"error: {e}")
    except jax.errors.JaxRuntimeError as e:  # a collective failed: a lost peer says so
        peers.explain(e)
        raise
    except console.Interrupted as e:  # Ctrl-C: the checkpoint is saved
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    peers.done()  # the other processes must not take this one's end for a loss
    print(json.dumps({k: v for k, v in summary.items() if k != "data"}, indent=1))
    if summary["preempted"]:
        logging.warning("preempted at step %d: re-run the same command to resume", summary["steps"])
        sys.exit(EXIT_PREEMPTED)


def run() -> None:
    """The ``lstmae-train`` command."""
    entry.run(main, sys.modules[__name__])
