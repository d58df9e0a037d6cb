"""train.schedule: the learning rate each epoch of a stage trains with, as history.csv records it."""
import math

import pytest

from ssl_bench.config import ConfigError, build_config
from ssl_bench.registry import TRANSFERS
from ssl_bench.testing import tiny_fit_context


def fitted_history(schedule: str, epochs: int) -> list[dict]:
    ctx = tiny_fit_context("none", train__epochs=epochs, train__lr=0.01, train__schedule=schedule)
    TRANSFERS.get("finetune")().fit(ctx)
    return [row for row in ctx.history if row["stage"] == "finetune"]


def test_cosine_schedule_follows_half_cosine_per_epoch():
    rows = fitted_history("cosine", epochs=4)
    # epoch e of E trains at lr * (1 + cos(pi * e / E)) / 2: 0.01, 0.008536, 0.005, 0.001464
    expected = [0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [r["lr"] for r in rows] == pytest.approx(expected, rel=1e-9)
    assert rows[-1]["lr"] == pytest.approx(0.0014645, rel=1e-4)


def test_constant_schedule_keeps_the_rate():
    assert [r["lr"] for r in fitted_history("constant", epochs=3)] == [0.01, 0.01, 0.01]


def test_quick_profile_is_cosine_and_paper_constant():
    assert build_config("quick").train.schedule == "cosine"
    assert build_config("paper").train.schedule == "constant"


def test_unknown_schedule_is_one_config_error():
    with pytest.raises(ConfigError, match="train.schedule must be constant or cosine"):
        build_config("smoke", flags={"train.schedule": "step"})
