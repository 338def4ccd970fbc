"""One device rule (pvd_core.device): the syntax auto | cpu | cuda | cuda:N is checked the same way by
the config schema, every command's --device and the node parameter; resolve_device also checks
that the GPU exists. The node's side is in test_node_params.py and test_segment_node.py."""
from __future__ import annotations

import argparse
import importlib
import re

import pytest
import torch

from pvd_core.cli import COMMANDS
from pvd_core.config import ConfigError, config_from_dict
from pvd_core.device import DEVICE_SYNTAX, check_device, device_argument, resolve_device

WELL_FORMED = ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:12", " CUDA:1 "]
MALFORMED = ["gpu", "cuda:x", "cuda:", "cuda:-1", "cuda1", "cpu:0", "", "auto cpu"]
#: Every program that takes --device (module, how a user names it).
DEVICE_COMMANDS = {
    "pvd_core.commands.eval": "pvd eval", "pvd_core.commands.predict": "pvd predict",
    "pvd_core.commands.profile": "pvd profile", "pvd_core.commands.train": "pvd train",
    "pvd_core.commands.distill": "pvd distill", "pvd_ros.commands.eval": "pvd_bag eval",
    "pvd_ros.commands.replay": "pvd_bag replay", "pvd_ros.commands.demo": "pvd_demo",
}


@pytest.mark.parametrize("name", WELL_FORMED)
def test_well_formed_devices_pass_the_syntax_check(name):
    assert check_device(name) == name.strip().lower()


@pytest.mark.parametrize("name", [*MALFORMED, None, 1])
def test_malformed_devices_are_refused_with_the_syntax_in_the_message(name):
    with pytest.raises(ValueError, match=re.escape(DEVICE_SYNTAX)):
        check_device(name)


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="cuda:1 exists here")
def test_resolve_device_refuses_a_gpu_that_is_not_there():
    expected = "sees no CUDA GPU" if not torch.cuda.is_available() else "CUDA device(s) are visible"
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        resolve_device("cuda:1")
    assert "'cuda:1'" in str(info.value)
    with pytest.raises(ValueError, match=r"^device must be one of"):
        resolve_device("cuda:x")  # the syntax rule comes first, naming what it checks


def test_config_accepts_cuda_n_and_refuses_malformed_devices_naming_the_field():
    assert config_from_dict({"train": {"device": "cuda:1"}}).train.device == "cuda:1"
    for name in ("gpu", "cuda:x"):
        with pytest.raises(ConfigError, match=r"train\.device must be one of auto \| cpu \| cuda \| cuda:N"):
            config_from_dict({"train": {"device": name}})


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command module's real parser, with its required arguments made optional so that --device
    can be parsed alone."""
    ros_modules = []
    if importlib.util.find_spec("rclpy") is not None:
        from pvd_ros.cli import BAG_COMMANDS

        ros_modules = [command.module for command in BAG_COMMANDS.values()] + ["pvd_ros.commands.demo"]
    parsers = {}
    for module in [command.module for command in COMMANDS.values()] + ros_modules:
        parser = argparse.ArgumentParser(prog=DEVICE_COMMANDS.get(module, module), exit_on_error=False)
        importlib.import_module(module).add_arguments(parser)
        for action in parser._actions:
            action.required = False
        parsers[module] = parser
    return parsers


def test_every_device_option_uses_the_one_rule():
    parsers = _command_parsers()
    with_device = {module for module, parser in parsers.items() if "--device" in parser._option_string_actions}
    assert with_device == set(DEVICE_COMMANDS) & set(parsers)
    for module in with_device:
        parser = parsers[module]
        assert parser._option_string_actions["--device"].type is device_argument, module
        assert parser.parse_args(["--device", "cuda:1"]).device == "cuda:1", module
        for name in ("gpu", "cuda:x"):
            with pytest.raises(argparse.ArgumentError, match=re.escape(f"argument --device: must be one of "
                                                                       f"{DEVICE_SYNTAX}")):
                parser.parse_args(["--device", name])


def test_pvd_refuses_a_malformed_device_naming_the_option(capsys):
    from pvd_core.cli import main

    with pytest.raises(SystemExit) as info:
        main(["predict", "--checkpoint", "x.pt", "--scan", "x.bin", "--out", "x.label", "--device", "gpu"])
    assert info.value.code == 2
    assert "argument --device: must be one of auto | cpu | cuda | cuda:N" in capsys.readouterr().err
