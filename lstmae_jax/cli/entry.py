"""What every job's ``run()`` does: its own ``--help``, a quiet start, then ``absl.app.run``.

``--help`` (``-h``, ``--helpshort``) prints the job's docstring, its flags grouped by
purpose (the config's options by the sections of ``lstmae_jax.config``) and a footer
naming ``--verbosity``, ``--helpfull`` and the docs, and exits 0, so that
``lstmae-train --help && ...`` works in a script (absl's exits 1). ``--helpfull`` is
absl's full listing, also exiting 0.

absl's ``--helpfull`` names the main module by ``sys.argv[0]``; the flags live in
``lstmae_jax.cli.<job>`` (and ``lstmae_jax.config``), and the main module is
``launch/<job>.py``, the ``lstmae-<job>`` script pip writes, or ``lstmae_jax/__main__.py``.
So ``run`` registers the job's key flags for ``sys.argv[0]`` and shows the job's
docstring as the usage text, whichever of the three it is.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable

from absl import app, flags
from absl import logging as absl_logging

_HELP = ("-h", "-?", "--help", "--helpshort")
FOOTER = """\
Log level: --verbosity=1 adds debug lines, --verbosity=-1 shows warnings and errors only
(default 0: progress). --helpfull lists every flag, absl's and JAX's included. The
documentation: README.md and docs/ in the lstmae-jax source tree."""


def run(main: Callable[[list[str]], None], job: types.ModuleType) -> None:
    """``absl.app.run(main)``, with ``job``'s grouped flags and docstring as ``--help``."""
    for flag in flags.FLAGS.get_key_flags_for_module(job.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    sys.modules["__main__"].__doc__ = job.__doc__
    args = sys.argv[1 : sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
    if any(a in _HELP for a in args):
        print(help_text(job))
        sys.exit(0)
    if "--helpfull" in args:
        app.define_help_flags()
        app.usage(writeto_stdout=True)
        sys.exit(0)
    logging.getLogger("jax._src.xla_bridge").addFilter(_backend_probe)
    app.run(main)


def help_text(job: types.ModuleType) -> str:
    """The job's docstring, its flags by purpose, and the footer."""
    from lstmae_jax import config  # here: the scorer's command imports no more than it needs

    key = {f.name: f for f in flags.FLAGS.get_key_flags_for_module(job.__name__)}
    # The config's options by its sections; the job's own (some share a config option's
    # name, as score's --model) first.
    ours = {n for n in key if flags.FLAGS.find_module_defining_flag(n) != config.__name__}
    adopted = key.keys() - ours
    sections = [(t, [n for n in names if n in adopted]) for t, names in config.sections()]
    groups = [("options", sorted(ours)), *sections]
    lines = [job.__doc__.strip(), ""]
    for title, names in groups:
        if names:
            lines += [f"{title}:", *(_describe(key[n]) for n in names), ""]
    return "\n".join([*lines, FOOTER])


def _describe(flag: flags.Flag) -> str:
    """One flag as absl's ``--help`` shows it."""
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text = flags.text_wrap(f"{name}: {flag.help}", indent="    ", firstline_indent="  ")
    default = flag.default_as_str and f"default: {flag.default_as_str}"
    if notes := "; ".join(n for n in (default, flag.parser.syntactic_help) if n):
        text += "\n" + flags.text_wrap(f"({notes})", indent="    ")
    return text


def _backend_probe(record: logging.LogRecord) -> bool:
    """JAX's INFO line that a platform it probed is absent (``Unable to initialize backend
    'tpu' ... libtpu.so``) on every start without a TPU: a debug line here, shown at
    ``--verbosity=1``."""
    if record.levelno == logging.INFO and record.getMessage().startswith("Unable to initialize"):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return absl_logging.level_debug()
    return True
