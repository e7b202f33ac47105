"""The one config system: flags from the dataclass, JSON round trip, the option table of
docs/training.md in sync."""

import pathlib

import pytest

from lstmae_jax import config


def test_config_flags_round_trip():
    from absl import flags

    fv = flags.FlagValues()  # a private registry, not the global FLAGS
    config.define_flags(flag_values=fv)
    fv(
        [
            "prog",
            "--window=7",
            "--encoder_sizes=32,16",
            "--split_fractions=0.5,0.25,0.25",
            "--nostage1_benign_only",
        ]
    )
    cfg = config.from_flags(flag_values=fv)
    assert cfg.window == 7 and cfg.encoder_sizes == (32, 16)
    assert cfg.split_fractions == (0.5, 0.25, 0.25) and cfg.stage1_benign_only is False
    assert config.Config.from_json(cfg.to_json()) == cfg


def test_the_training_doc_lists_every_option():
    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    section = doc.split("<!-- config:start -->\n")[1].split("\n<!-- config:end -->")[0]
    assert section == config.markdown_table(), (
        "docs/training.md's option table is stale: paste the output of "
        "`python -c 'from lstmae_jax import config; print(config.markdown_table())'`"
    )


def test_bad_values_are_rejected_up_front():
    import pytest

    with pytest.raises(ValueError, match="--threshold='FPR': expected one of"):
        config.Config(threshold="FPR")
    with pytest.raises(ValueError, match="--target_fpr=1.5 is out of range"):
        config.Config(target_fpr=1.5)
    with pytest.raises(ValueError, match="--split_fractions"):
        config.Config(split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="--lstm_backward='cudnn': expected one of"):
        config.Config(lstm_backward="cudnn")
    with pytest.raises(ValueError, match="--dtype='float16': expected one of"):
        config.Config(dtype="float16")
    with pytest.raises(ValueError, match="--unroll=-1 is out of range"):
        config.Config(unroll=-1)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--split_fractions=a,b,c", "--split_fractions=a,b,c: expected comma-separated numbers"),
        ("--encoder_sizes=64,x", "--encoder_sizes=64,x: expected comma-separated integers"),
    ],
)
def test_unparsable_list_flags_name_the_flag(flag, message):
    from absl import flags

    fv = flags.FlagValues()
    config.define_flags(flag_values=fv)
    fv(["prog", flag])
    with pytest.raises(ValueError, match=message):
        config.from_flags(flag_values=fv)


def test_launcher_bad_flag_is_one_line(tmp_path):
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    for flag, message in [
        ("--batch_size=0", "error: --batch_size=0 is out of range"),
        ("--model=transformer", "error: --model='transformer': expected one of"),
        ("--learning_rate=nan", "error: --learning_rate=nan is out of range"),
    ]:
        proc = subprocess.run(
            [sys.executable, str(repo / "launch" / "train.py"), f"--workdir={tmp_path}", flag],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"},
        )
        assert proc.returncode == 1, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_stage1_members_networks_and_representations():
    """``auto`` resolves by the window; the --scaler network's --score comes first; one
    network per representation a reconstruction or latent member reads; rarity needs a
    scaler, not a network."""
    per_flow = config.Config(window=1)
    assert per_flow.stage1_members() == ("quantile:sse", "log:latent", "log:rarity")
    assert per_flow.stage1_networks() == ("quantile", "log")
    assert config.Config().stage1_members() == ("quantile:sse", "log:sse")
    one = config.Config(members=())
    assert one.stage1_members() == ("quantile:sse",) and one.stage1_networks() == ("quantile",)
    mixed = config.Config(scaler="log", score="zscore", members=("robust:rarity", "log:latent"))
    assert mixed.stage1_members() == ("log:zscore", "robust:rarity", "log:latent")
    assert mixed.stage1_networks() == ("log",)
    assert mixed.representations() == ("log", "robust")
    assert config.Config(model="dnn", scaler="robust").representations() == ("robust",)
    for bad in (("quantile",), ("quantile:l2",), ("auto", "log:sse"), ("ranks:sse",)):
        with pytest.raises(ValueError, match="--members"):
            config.Config(members=bad)


def test_a_config_saved_before_members_reads_as_one_network():
    saved = config.Config(members=()).to_json()
    del saved["members"], saved["fusion"]
    assert config.Config.from_json({**saved, "ensemble": 1, "ensemble_score": "mean"}).members == ()
    with pytest.raises(ValueError, match="ensemble of seeds"):
        config.Config.from_json({**saved, "ensemble": 3, "ensemble_score": "mean"})


def test_an_error_model_saved_before_members_reads_as_one_member():
    from lstmae_jax.detect import calibration

    old = {"kind": "zscore", "combine": "mean", "num_features": 2, "fitted_on": 7,
           "mean_KxF": [[0.1, 0.2]], "precision_KxFxF": [[[1.0, 0.0], [0.0, 2.0]]],
           "shrinkage_K": [0.0]}  # fmt: skip
    det = calibration.from_record(old)
    (member,) = det.members
    assert member.kind == "zscore" and member.mean_F == (0.1, 0.2) and not det.fused
    assert member.precision_FxF == ((1.0, 0.0), (0.0, 2.0)) and member.fitted_on == 7
    with pytest.raises(ValueError, match="ensemble of seeds"):
        calibration.from_record({**old, "mean_KxF": [[0.1, 0.2]] * 2})
