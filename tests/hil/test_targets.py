"""The target files load in labgrid, and each binds the one strategy to a power driver of its kind
(the lab example too: without its hardware, only the binding is checked, nothing is powered)."""

from __future__ import annotations

from pathlib import Path

import pytest
from labgrid import Environment
from labgrid.protocol import PowerProtocol

from tests.hil.conftest import TARGETS, _kind


@pytest.mark.parametrize(("name", "kind", "power"), [("sim", "sim", "LocalBoxPowerDriver"),
                                                     ("vm", "vm", "BoxVmPowerDriver"),
                                                     ("lab.example", "lab", "NetworkPowerDriver")])
def test_each_target_file_binds_the_strategy_to_its_power(name: str, kind: str, power: str) -> None:
    env = Environment(config_file=str(TARGETS / f"{name}.yaml"))
    try:
        target = env.get_target("main")
        strategy = target.get_driver("BoxStrategy", activate=False)
        assert _kind(env) == kind
        assert isinstance(strategy.power, PowerProtocol) and type(strategy.power).__name__ == power
    finally:
        env.cleanup()


def test_a_target_file_without_a_box_is_refused_in_words(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("imports: [tests.hil.boxlab]\ntargets:\n  main:\n    resources:\n      BoxPlatform: {}\n")
    with pytest.raises(pytest.UsageError, match="names no LocalBox, BoxVM or LabBox"):
        _kind(Environment(config_file=str(f)))


def test_the_vm_target_says_what_it_lacks_for_each_scenario_it_skips() -> None:
    """QA reads a skip's reason: on the vm target, each feature a scenario needs and the VM has not comes with
    what it would take (`lacks:` in targets/vm.yaml, said by `Hil.need`)."""
    import re
    from typing import Any, cast

    from tests.hil.conftest import Hil

    env = Environment(config_file=str(TARGETS / "vm.yaml"))
    main = env.config.data["targets"]["main"]
    needed = {f for path in Path(__file__).parent.glob("test_*.py")
              for call in re.findall(r"hil\.need\(([^)]*)\)", path.read_text())
              for f in re.findall(r'"(\w+)"', call)}
    missing = needed - set(main["features"])
    assert missing and missing <= set(main["lacks"]), (missing, main["lacks"])
    none = cast(Any, None)
    hil = Hil("vm", "vm", set(main["features"]), none, none, none, "BOX", None, "", lacks=dict(main["lacks"]))
    for feature in missing:
        said = re.escape(main["lacks"][feature][:30])
        with pytest.raises(pytest.skip.Exception, match=f"has no {feature}; {feature}: {said}"):
            hil.need("power", feature)
