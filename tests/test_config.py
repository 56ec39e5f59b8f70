import pytest

from edgead.core.config import (
    ExperimentConfig,
    apply_overrides,
    from_dict,
    load_config,
    to_dict,
)
from edgead.core.errors import ConfigError


def test_defaults_are_the_papers():
    c = load_config()
    assert (c.diffusionad.t_s, c.diffusionad.t_b, c.diffusionad.tau) == (200, 400, 300)
    assert c.diffusionad.top_k == 50 and c.diffusionad.focal_weight == 5.0
    assert c.diffusionad.schedule.num_train_timesteps == 1000 and c.diffusionad.schedule.beta_schedule == "linear"
    assert c.model.preset == "s"


def test_round_trip_through_dict():
    c = load_config(None, ["model.block_out_channels=[8, 16]", "train.max_minutes=2"])
    again = from_dict(ExperimentConfig, to_dict(c))
    assert again == c and again.model.block_out_channels == (8, 16)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", r"unknown key 'train.stepz'.*valid keys of train:.*steps"),
        ("model.preset=huge", r"model.preset must be one of 'tiny', 's', 'm', 'paper'; got 'huge'"),
        ("train.steps=many", r"train.steps must be an integer, got 'many'"),
        ("data.image_size=100", r"multiple of 32"),
        ("diffusionad.t_s=500", r"t_s < t_b"),
        ("train.batch_size=1", r"batch_size must be >= 2"),
        ("data.foreground=yes please", r"data.foreground must be true or false"),
        ("noequals", r"must look like section.key=value"),
    ],
)
def test_invalid_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_float_accepts_exponent_strings():
    assert load_config(None, ["train.learning_rate=2e-4"]).train.learning_rate == pytest.approx(2e-4)


def test_yaml_file_and_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  steps: 7\nmodel:\n  preset: tiny\n")
    c = load_config(f, ["train.steps=9"])
    assert c.train.steps == 9 and c.model.preset == "tiny"
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    f.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)


def test_overrides_build_nested_sections():
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}
