"""What every job's ``run()`` does: make its flags the ``--help`` of whatever started it.

absl's ``--help`` lists the key flags of the main module, which it names by
``sys.argv[0]``; the flags live in ``lstmae_jax.cli.<job>`` (and ``lstmae_jax.config``),
and the main module is ``launch/<job>.py``, the ``lstmae-<job>`` script pip writes, or
``lstmae_jax/__main__.py``. So ``run`` registers the job's key flags for ``sys.argv[0]``
and shows the job's docstring as the usage text, whichever of the three it is.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

from absl import app, flags


def run(main: Callable[[list[str]], None], job: types.ModuleType) -> None:
    """``absl.app.run(main)``, with ``job``'s key flags and docstring as ``--help``."""
    for flag in flags.FLAGS.get_key_flags_for_module(job.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    main_module = sys.modules["__main__"]
    main_module.__doc__ = job.__doc__
    app.run(main)
