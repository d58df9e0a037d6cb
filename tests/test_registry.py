"""Registry behaviour: decorator registration, wildcard listing, duplicate and unknown names."""
import pytest

from ssl_bench.registry import PRETEXTS, DuplicateNameError, Registry, UnknownNameError


def test_register_get_create_and_wildcards():
    reg = Registry("widgets")

    @reg.register("round_widget")
    class Round:
        def __init__(self, size=1):
            self.size = size

    reg.register("square_widget", lambda size=2: ("square", size))
    assert reg.get("round_widget") is Round
    assert reg.create("round_widget", size=5).size == 5
    assert reg.create("square_widget") == ("square", 2)
    assert reg.names() == ["round_widget", "square_widget"]
    assert reg.names("round*") == ["round_widget"]
    assert reg.entry("round_widget").origin == "built-in"


def test_duplicate_name_raises():
    reg = Registry("widgets")
    reg.register("a", object)
    with pytest.raises(DuplicateNameError, match="already registered"):
        reg.register("a", object)


def test_unknown_name_suggests_close_matches_and_list_command():
    with pytest.raises(UnknownNameError) as info:
        PRETEXTS.get("gsmi")
    message = str(info.value)
    assert "'gsim'" in message
    assert "ssl-bench list pretexts" in message


def test_builtins_registered():
    assert {"gsim", "none", "context_restoration", "simclr"} <= set(PRETEXTS.names())
    assert PRETEXTS.names("*restor*") == ["context_restoration"]
