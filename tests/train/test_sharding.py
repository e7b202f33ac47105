"""The table goes to the devices once, from an aligned host buffer."""

import jax
import numpy as np

from lstmae_jax.data import dataset
from lstmae_jax.detect import inference
from lstmae_jax.train import sharding


def test_aligned_empty_starts_on_the_boundary():
    for n in (1, 3, 1000, 100_000):
        x = dataset.aligned_empty((n, 7))
        assert x.ctypes.data % dataset.ALIGN == 0 and x.flags.c_contiguous and x.flags.writeable
        assert x.dtype == np.float32 and x.shape == (n, 7)
    y = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # float64, not contiguous
    a = dataset.as_aligned(y)
    np.testing.assert_array_equal(a, y)
    assert a.ctypes.data % dataset.ALIGN == 0 and a.dtype == np.float32
    assert dataset.as_aligned(a) is a


def test_put_table_replicates_and_aliases_an_aligned_table_on_cpu():
    """On CPU an aligned float32 table is not copied (the device buffer is the host's);
    elsewhere this only checks the values. A jax array is passed through."""
    x = dataset.aligned_empty((4096, 5))
    x[...] = np.arange(x.size, dtype=np.float32).reshape(x.shape)
    mesh = sharding.make_mesh()
    t = sharding.put_table(x, mesh)
    assert t.sharding == sharding.replicated(mesh)
    np.testing.assert_array_equal(np.asarray(t), x)
    assert sharding.put_table(t, mesh) is t
    assert inference.on_device(t) is t
    if jax.devices()[0].platform == "cpu":
        ptrs = {s.data.unsafe_buffer_pointer() for s in t.addressable_shards}
        assert ptrs == {x.ctypes.data}, "the replicated table should alias the host buffer"
        one = inference.on_device(x)
        assert one.addressable_shards[0].data.unsafe_buffer_pointer() == x.ctypes.data
