"""compiler: the XLA options the project's jits compile with."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmae_jax import compiler


@pytest.fixture
def fresh_options():
    compiler.options.cache_clear()
    yield
    compiler.options.cache_clear()


def _optimised_hlo(jitted, *args) -> str:
    return jitted.lower(*args).compile().as_text()


def test_cpu_dots_leave_ynnpack():
    if not compiler.options():
        pytest.skip("this XLA has no YNNPACK fusion option, or XLA_FLAGS sets it")
    a_64x64 = jnp.asarray(np.random.default_rng(0).normal(size=(64, 64)), jnp.float32)
    matmul = lambda a, b: a @ b  # noqa: E731
    assert "__ynn_fusion" not in _optimised_hlo(compiler.jit(matmul), a_64x64, a_64x64)
    # another dot emitter, the same product up to rounding
    ours = np.asarray(compiler.jit(matmul)(a_64x64, a_64x64))
    np.testing.assert_allclose(ours, np.asarray(jax.jit(matmul)(a_64x64, a_64x64)), rtol=1e-4)


def test_jit_keeps_jax_jit_arguments():
    f = compiler.jit(lambda x, n: x * n, static_argnums=1, donate_argnums=0)
    assert float(f(jnp.ones(()), 3)) == 3.0


def test_users_xla_flags_decide(monkeypatch, fresh_options):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=DOT")
    assert compiler.options() == {}


def test_unknown_option_means_none(monkeypatch, fresh_options):
    monkeypatch.setattr(compiler, "CPU_OPTIONS", {"xla_cpu_no_such_option_here": ""})
    assert compiler.options() == {}


def test_every_jit_of_the_package_goes_through_compiler_jit():
    """One compiler configuration: a bare ``jax.jit`` would compile a pass that is no
    longer bit-identical with the trainer's or the scorer's. ``jobs/export.py`` only
    traces for `jax.export` (the scorer compiles the exported function itself)."""
    package = pathlib.Path(compiler.__file__).parent
    bare = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"\bjax\.jit\b|\bnnx\.jit\b|from jax import jit", path.read_text())
    }
    assert bare == {"compiler.py", "jobs/export.py"}
