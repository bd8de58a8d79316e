"""Every command in the README composes and passes the start-up checks, with the options it names (a
command that trains is not run here: its config is what could silently break when code moves)."""

from __future__ import annotations

import re
import shlex

import pytest

from airlab.config import validate_config
from tests.conftest import REPO_ROOT, compose_config

#: Placeholders in the README's commands, and what stands in for them here.
PLACEHOLDERS = {"N": "10", "[<VAE_RUN>,<AIR_RUN>]": "[outputs/a,outputs/b]"}


def readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("python scripts/")]


def as_overrides(command: str) -> tuple[str, list[str]]:
    """(config name, overrides) of a ``python scripts/<task>.py ...`` line; a sweep's first value."""
    words = shlex.split(command)
    config = words[1].removeprefix("scripts/").removesuffix(".py")
    overrides = []
    for word in words[2:]:
        if word in ("-m", "--cfg", "job") or word.startswith("ckpt_path="):
            continue  # flags, and a checkpoint the test does not have
        key, value = word.split("=", 1)
        value = PLACEHOLDERS.get(value, value)
        value = value if value.startswith("[") else value.split(",")[0]  # a list is one value
        overrides.append(f"{key}={value}")
    return config, overrides


def test_the_readme_has_its_everyday_commands():
    commands = readme_commands()
    assert len(commands) >= 10
    assert {as_overrides(c)[0] for c in commands} >= {"train", "evaluate", "study", "benchmark"}


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_composes_and_validates(command, tmp_path):
    config, overrides = as_overrides(command)
    if config == "evaluate":
        pytest.skip("evaluate reads its config from the checkpoint (tests/tasks/test_evaluate.py runs it)")
    cfg = compose_config(config, overrides, tmp_path)
    validate_config(cfg)
