"""Executors that run benchmark jobs; importing this package registers them in ``EXECUTORS``.

``ray`` is registered here too, but imports Ray only when it runs (an optional dependency).
"""
from ... import components
from ...errors import ConfigError
from ...registry import EXECUTORS
from . import local, ray_executor  # noqa: F401


def build_executor(name: str, cfg, **flags):
    """The executor ``name`` built like every other component: ``flags`` (its options as the
    command line gives them, ``None`` = not given), then ``params.<name>.<option>`` of ``cfg``
    over them; a flag that the executor does not take is one error line naming the executors
    that do."""
    given = {k: v for k, v in flags.items() if v is not None}
    accepted = components.user_options("executors", EXECUTORS.get(name))
    for option in given:
        if option not in accepted:
            flag = "--ray-address" if option == "address" else "--" + option.replace("_", "-")
            owners = [e for e in EXECUTORS.names() if option in components.user_options("executors", EXECUTORS.get(e))]
            hint = f"; it is for --executor {' or '.join(owners)}" if owners else ""
            raise ConfigError(f"{flag} does not apply to the '{name}' executor (its options: "
                              f"{', '.join(accepted) or 'none'}){hint}")
    return components.build(EXECUTORS, name, {**given, **cfg.component_params(name)})
