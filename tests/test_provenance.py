"""run.json says which code, command, plugins and learner settings made a run."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reengage.cli import main
from reengage.provenance import IMPORTED_PLUGINS, source_revision
from reengage.registry import METHODS

REPO = Path(__file__).resolve().parent.parent

PLUGIN = '''
from dataclasses import replace

from reengage.registry import Method, build_ddpg, register_method


def build(spec):
    return build_ddpg(replace(spec, extra={**spec.extra, "hidden": (32, 24)}))


register_method(Method(name="provenance_small_ddpg", build=build, takes_c=False, her=True,
                       label=lambda c: "SmallDDPG+HER"), replace=True)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "provenance_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "provenance_plugin"
    METHODS.pop("provenance_small_ddpg", None)
    sys.modules.pop("provenance_plugin", None)
    if "provenance_plugin" in IMPORTED_PLUGINS:  # the record is per process
        IMPORTED_PLUGINS.remove("provenance_plugin")


def _train(out: Path, method: str, *extra: str) -> dict:
    argv = ["train", "--env", "ContinuousSeek", "--dim", "2", "--method", method,
            "--seeds", "0", "--steps", "200", "--learning-starts", "100", "--eval-every", "100",
            "--eval-episodes", "2", "--batch-size", "16", "--buffer-size", "1000",
            "--threads", "1", "--checkpoint-every", "0", "--set", "compile=false",
            "--out", str(out), "--quiet", *extra]
    sys.argv = ["reengage", *argv]  # what a console-script call would see
    assert main(argv) == 0
    return json.loads((out / "seed0" / "run.json").read_text())["provenance"]


def test_a_plugin_method_records_its_module_and_the_settings_it_chose(tmp_path, plugin,
                                                                      monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # restored after the test
    record = _train(tmp_path / "run", "provenance_small_ddpg", "--plugin", plugin)
    assert record["plugins"] == [plugin]
    assert record["method_module"] == plugin
    assert record["command"][:2] == ["reengage", "train"]
    assert record["command"][record["command"].index("--plugin") + 1] == plugin
    learner = record["learner"]
    assert learner["class"] == "reengage.agents.ddpg.DDPG"
    # The plugin's own choice (not a --set override) and the defaults it left alone.
    assert learner["settings"]["hidden"] == [32, 24]
    assert learner["settings"]["compile"] is False
    assert learner["settings"]["hand_gradients"] is True
    assert learner["settings"]["goal_gradient_coef"] == 0.0


def test_a_built_in_method_records_its_settings_and_no_plugins(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    record = _train(tmp_path / "run", "reengage_her", "--c", "0.3")
    assert record["plugins"] == []
    assert record["method_module"] == "reengage.registry"
    assert record["learner"]["settings"]["goal_gradient_coef"] == pytest.approx(0.3)


def test_the_git_revision_is_the_checkouts_when_run_from_one():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    revision = source_revision()
    assert revision is not None and revision["commit"] == head.stdout.strip()
    assert isinstance(revision["dirty"], bool)
