"""Names the user chooses (methods, runs, pretexts, paths) are shown as the text they are: never
read as rich markup (a ``[/x]`` in a name was a MarkupError traceback, after the bench's training)
nor as markdown in leaderboard.md (a ``|`` must not split the table, a ``*`` not make emphasis)."""
from __future__ import annotations

import html
import re

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from ssl_bench.cli import main
from ssl_bench.report.render import markdown_text

#: markdown as GitHub reads it, as far as it matters here: CommonMark with GFM tables and strikethrough
MARKDOWN = MarkdownIt("commonmark").enable("table").enable("strikethrough")

ODD = "[/x] |odd"
BOLD = "[bold]*b* |_two_"
NAMES = [ODD, BOLD, "_x_", "a_b", "__init__", "**x**", "`c`", "[a](http://x)", "![i](y.png)", "[r][1]",
         "<b>x</b>", "<http://x>", "~~s~~", "&amp;", "&#42;", "a\\b", "\\*", "1. one", "2) two", "- dash",
         "+ plus", "# hash", "x #", "> quote", "[ ] task", "[x] done", "=", "---", "x]: y", "x\ny"]


def _texts(rendered: str, tag: str) -> list[str]:
    """The contents of every ``<tag>`` of rendered HTML; they must hold no markup of their own."""
    cells = re.findall(rf"<{tag}(?:\s[^>]*)?>(.*?)</{tag}>", rendered, flags=re.S)
    assert all("<" not in c for c in cells), rendered
    return [html.unescape(c) for c in cells]


@pytest.mark.parametrize("name", NAMES)
def test_markdown_text_renders_as_the_text_itself(name):
    shown = " ".join(name.split())  # one line: a newline becomes a space
    cell = MARKDOWN.render(f"| Method | n |\n|:---|---:|\n| {markdown_text(name)} | 1 |\n")
    assert _texts(cell, "td") == [shown, "1"]
    assert _texts(MARKDOWN.render("### " + markdown_text(name, block=True)), "h3") == [shown]
    assert _texts(MARKDOWN.render("- " + markdown_text(name, block=True) + "\n- next"), "li") == [shown, "next"]


def test_our_own_text_is_left_as_it_is():
    for text in ("Pooled AUC [95% CI]", "paper (INbreast)", "#", "p AUC [Holm]", "Δ AUC vs Raw-kNN (pts)",
                 "cbis_ddsm", "bench-runs/ssl_zoo/SimCLR-knn"):
        assert markdown_text(text) == text


BENCH = f"""\
description: names that look like markup
baseline: "{ODD}"
defaults:
  data: {{dataset: synthetic}}
methods:
  "{ODD}": {{pretext: none, transfer: knn, name: odd-run}}
  "{BOLD}": {{pretext: none, transfer: knn}}
"""


@pytest.fixture(scope="module")
def odd_bench(tmp_path_factory):
    """A smoke bench (2 folds, no pretext, k-NN) of two methods named like rich markup and
    markdown (a name with '/' cannot be a folder name, so that one names its run directory)."""
    base = tmp_path_factory.mktemp("odd")
    (base / "b.yaml").write_text(BENCH)
    result = CliRunner().invoke(main, ["bench", str(base / "b.yaml"), "--profile", "smoke", "--explain", "0", "--folds", "2",
                                       "--out", str(base / "out")])
    return base / "out", result


def test_bench_with_markup_names_runs_and_prints_them(odd_bench):
    out, result = odd_bench
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert ODD in result.stdout and BOLD in result.stdout  # in the leaderboard, as written


def test_leaderboard_md_keeps_its_tables(odd_bench):
    out, result = odd_bench
    assert result.exit_code == 0, result.output
    rendered = MARKDOWN.render((out / "leaderboard.md").read_text())
    tables = re.findall(r"<table>.*?</table>", rendered, flags=re.S)
    assert tables
    for table in tables:  # every row has as many cells as the header
        header = len(_texts(table, "th"))
        rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], flags=re.S)
        assert rows and all(len(_texts(row, "td")) == header for row in rows)
    leaderboard = tables[0]
    assert {ODD, BOLD} <= set(_texts(leaderboard, "td"))  # the names as cells, not emphasis or split
    assert f"p AUC vs {ODD}" in _texts(leaderboard, "th")
    per_fold = rendered.split("<h2>Per-fold results</h2>")[1].split("<h2>")[0]
    assert sorted(_texts(per_fold, "h3")) == sorted([ODD, BOLD])  # the per-fold headings


def test_report_on_markup_names(odd_bench):
    out, result = odd_bench
    assert result.exit_code == 0, result.output
    report = CliRunner().invoke(main, ["report", str(out), "--n-boot", "100"])
    assert report.exit_code == 0, report.output
    assert ODD in report.stdout and BOLD in report.stdout
    md = CliRunner().invoke(main, ["report", str(out), "--n-boot", "100", "--out", str(out / "again.md")])
    assert md.exit_code == 0, md.output


def test_unknown_pretext_with_markup_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["run", "--pretext", "[/x]", "--profile", "smoke", "--folds", "2",
                                       "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "error: unknown pretext '[/x]'. Run 'ssl-bench list pretexts' to see all."]


def test_run_named_like_markup_shows_the_name(tmp_path):
    result = CliRunner().invoke(main, ["run", "--name", "[bold]x", "--pretext", "none", "--transfer", "knn",
                                       "--profile", "smoke", "--folds", "2", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "[bold]x" in result.stdout  # the metrics table's title and the run directory line
    assert f"run directory: {tmp_path / 'runs' / '[bold]x'}" in result.stdout.replace("\n", "")
