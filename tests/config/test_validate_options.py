"""Each option is written once, in the signature of the class its config node builds: the YAML keys are
that signature's parameters, and bad values are refused from its markers with one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from airlab.config import validate_config
from airlab.config.validate import BUILD_TIME_ARGUMENTS, EXTRA_KEYS, options_of, signature_options
from airlab.errors import EXIT_USER_ERROR, ConfigError, report_user_errors
from tests.conftest import CONFIG_DIR, REPO_ROOT

#: Groups whose options build one object (model, ...) or several (one per callback or logger).
TARGET_GROUPS = ("model", "data", "elbo", "optim", "trainer", "callbacks", "logger")
GROUP_OPTIONS = [
    (group, path.stem)
    for group in TARGET_GROUPS
    for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
]


def composed_target_nodes(make_cfg) -> Iterator[tuple[str, str, DictConfig]]:
    """(group=option, path, node) for every node with a ``_target_`` that a group option composes."""
    for group, option in GROUP_OPTIONS:
        node = make_cfg([f"{group}={option}"]).get(group)
        if node is None:
            continue
        children = {group: node} if "_target_" in node else {f"{group}.{k}": v for k, v in node.items()}
        for path, child in children.items():
            if isinstance(child, DictConfig) and "_target_" in child:
                yield f"{group}={option}", path, child


def yaml_keys(node: DictConfig) -> set[str]:
    return {str(k) for k in node if not str(k).startswith("_")}


def test_every_yaml_key_is_a_parameter_of_its_target(make_cfg):
    problems, targets = [], set()
    for choice, path, node in composed_target_nodes(make_cfg):
        targets.add(node._target_)
        unknown = yaml_keys(node) - set(options_of(path, get_object(node._target_)))
        if unknown:
            problems.append(f"{choice}: {path}: {sorted(unknown)} not in {node._target_}")
    assert not problems, problems
    assert {"airlab.models.air.AIR", "airlab.data.multimnist.MultiMNISTDataModule"} <= targets
    assert {"torch.optim.RMSprop", "pyro.optim.clipped_adam.ClippedAdam"} <= targets
    assert {"airlab.estimators.JitTraceGraphEstimator", "pytorch_lightning.Trainer"} <= targets
    assert {
        "airlab.callbacks.latent_space.LatentSpaceLogger",
        "pytorch_lightning.loggers.CSVLogger",
    } <= targets


def test_every_airlab_parameter_is_in_the_yaml_with_the_signature_default(make_cfg):
    """What --cfg job lists is what the class takes, and the YAML's value is the signature's default (a
    library user and a config user get the same object)."""
    problems, checked = [], 0
    for choice, path, node in composed_target_nodes(make_cfg):
        if not node._target_.startswith("airlab."):
            continue
        injected = BUILD_TIME_ARGUMENTS.get(path, ())
        raw = OmegaConf.to_container(node, resolve=False)
        for name, parameter in signature_options(get_object(node._target_)).items():
            if not parameter.declared_in.startswith("airlab.") or name in injected:
                continue  # Lightning's own (the checkpoint callback), or filled by the builder
            checked += 1
            default = list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
            if name not in raw:
                problems.append(f"{choice}: {path}.{name} is missing from the YAML")
            elif parameter.required and raw[name] != "???":
                problems.append(f"{choice}: {path}.{name} has no default: its YAML value must be ???")
            elif parameter.required:
                continue
            elif not (isinstance(raw[name], str) and "${" in raw[name]) and raw[name] != default:
                problems.append(f"{choice}: {path}.{name}: {raw[name]!r} != default {default!r}")
    assert not problems, problems
    assert checked > 60


def test_declared_extra_keys_are_parameters_of_the_named_class():
    for path, extras in EXTRA_KEYS.items():
        for name, owner in extras.items():
            assert name in signature_options(get_object(owner)), (path, name, owner)
    assert "baseline_lr" in options_of("optim", get_object("torch.optim.Adam"))
    assert "params" not in options_of("optim", get_object("torch.optim.Adam"))
    assert "image_shape" not in options_of("model", get_object("airlab.models.air.AIR"))


AIR = ["model=air", "data=multimnist"]

BAD_VALUES = [
    # (overrides, key, what the message says after "key: ")
    (["+model.zdim=3"], "model.zdim", "unknown key; valid keys: z_dim, hidden_dim, scale_to_dataset"),
    (["model.z_dim=abc"], "model.z_dim", "'abc' has the wrong type; expected int"),
    (["model.z_dim=0"], "model.z_dim", "0 is out of range; must be in [1, 65536]"),
    (["model.scale_to_dataset=maybe"], "model.scale_to_dataset", "'maybe' has the wrong type; expected bool"),
    ([*AIR, "model.baseline=maybe"], "model.baseline", "'maybe' is not valid; choose one of: none, deca"),
    ([*AIR, "model.z_pres_prior=1.0"], "model.z_pres_prior", "1.0 is out of range; must be in (0, 1)"),
    (
        [*AIR, "model.encoder_hidden=[16,0]"],
        "model.encoder_hidden",
        "0 is out of range; must be in [1, 65536]",
    ),
    ([*AIR, "model.decoder_hidden=16"], "model.decoder_hidden", "16 has the wrong type; expected a list of"),
    (["+data.shuffle=true"], "data.shuffle", "unknown key; valid keys: source, data_dir, batch_size"),
    (["data.batch_size=1.5"], "data.batch_size", "1.5 has the wrong type; expected int"),
    (["data.eval_batch_size=0"], "data.eval_batch_size", "0 is out of range; must be >= 1"),
    (["data.binarize=sometimes"], "data.binarize", "'sometimes' is not valid; choose one of: none, fix"),
    (["data.val_fraction=0.5", "data.test_fraction=0.5"], "data.val_fraction", "leaves no training digits"),
    (["data=multimnist", "data.val_fraction=0"], "data.val_fraction", "0 is out of range; must be in (0, 1)"),
    (["data=multimnist", "data.seed=null"], "data.seed", "null has the wrong type; expected int"),
    (["+elbo.alpha=0.5"], "elbo.alpha", "unknown key; valid keys: num_particles, vectorize_particles"),
    (["elbo.num_particles=two"], "elbo.num_particles", "'two' has the wrong type; expected int"),
    (["elbo.max_plate_nesting=-1"], "elbo.max_plate_nesting", "-1 is out of range; must be >= 0"),
    (["elbo=tracegraph", "elbo.dependencies=guess"], "elbo.dependencies", "one of: declared, provenance"),
    (["elbo=jit_tracegraph", "elbo.ignore_jit_warnings=1"], "elbo.ignore_jit_warnings", "expected bool"),
    (["elbo=renyi", "elbo.alpha=1.0"], "elbo.alpha", "1.0 is the ELBO itself; use elbo=trace, or alpha != 1"),
    (["elbo=iwae", "+elbo.alpha=0.5"], "elbo.alpha", "unknown key"),  # IWAE is alpha = 0
    (["+optim.momentum=0.9"], "optim.momentum", "unknown key; valid keys: lr, betas, eps, weight_decay"),
    (["optim.lr=fast"], "optim.lr", "'fast' has the wrong type; expected float"),
    (["optim.lr=0"], "optim.lr", "0 is out of range; must be > 0"),
    (["optim.betas=[0.9,1.5]"], "optim.betas", "1.5 is out of range; must be in [0, 1)"),
    (["optim.betas=[0.9]"], "optim.betas", "has the wrong type; expected a list of 2 values"),
    (["optim.fused=sometimes"], "optim.fused", "'sometimes' has the wrong type; expected bool or null"),
    (["optim.baseline_lr=-0.1"], "optim.baseline_lr", "-0.1 is out of range; must be > 0"),
    (["optim=clipped_adam", "optim.lrd=1.5"], "optim.lrd", "1.5 is out of range; must be in (0, 1]"),
    (["optim=rmsprop", "optim.alpha=2"], "optim.alpha", "2 is out of range; must be in [0, 1]"),
    (["+callbacks.throughput.every=3"], "callbacks.throughput.every", "valid keys: log_every_n_steps"),
    (["callbacks.latent_tsne.perplexity=high"], "callbacks.latent_tsne.perplexity", "expected float"),
    (["seed=abc"], "seed", "'abc' has the wrong type; expected int or null"),
    (["seed=-3"], "seed", "-3 is out of range; must be in [0, 4294967295]"),
    (["model._target_=airlab.models.nope.Nope"], "model._target_", "cannot be imported"),
]


@pytest.mark.parametrize(("overrides", "key", "message"), BAD_VALUES)
def test_bad_values_stop_with_one_line_naming_the_key(make_cfg, capsys, overrides, key, message):
    cfg = make_cfg(overrides)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert err.value.key == key
    assert str(err.value).startswith(f"{key}: ") and message in str(err.value), str(err.value)
    # What the scripts do with it: that line on stderr, exit code 2.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        report_user_errors(validate_config, cfg)
    assert exit_info.value.code == EXIT_USER_ERROR == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"airlab error: {err.value}"]


def test_good_values_of_every_kind_pass(make_cfg):
    validate_config(make_cfg([*AIR, "model.encoder_hidden=[8,4]", "model.baseline=decaying_avg", "seed=0"]))
    validate_config(make_cfg(["optim.lr=1", "optim.fused=null", "optim.baseline_lr=0.5"]))
    validate_config(make_cfg(["data.eval_batch_size=8", "data.subset_size=8", "data.binarize=dynamic"]))
    validate_config(make_cfg(["elbo=renyi", "elbo.alpha=0", "elbo.max_plate_nesting=1"]))


def test_config_imports_no_data_or_model_module():
    """The markers and the validator know nothing of the classes they check: no import cycle."""
    code = (
        "import sys, airlab.config, airlab.contracts.options, airlab.config.validate\n"
        "prefixes = ('airlab.data', 'airlab.models', 'airlab.estimators')\n"
        "bad = [m for m in sys.modules if m.startswith(prefixes)]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
