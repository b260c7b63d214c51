"""What a new user reads first: ``tdbn presets`` (with each preset's time on a CPU), the program in a pipe, a thread
count that cannot be, and README figures that agree with each other, with the presets and with the stored results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_run import cli_env
from cli_run import tdbn as run_tdbn
from tdbn.cli import _DEMO, main
from tdbn.train import preset_names, preset_path

REPO = Path(__file__).resolve().parents[1]
DOCS = {"README": REPO / "README.md", **{f"docs/{p.name}": p for p in (REPO / "docs").glob("*.md")}}


def test_a_closed_pipe_ends_quietly():
    """``tdbn presets | head -3``: the reader is gone before the first line is written."""
    proc = subprocess.Popen([sys.executable, "-m", "tdbn.cli", "presets"], env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # as `head` exits
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == ""  # no BrokenPipeError traceback


def test_presets_give_the_time_each_takes_on_a_cpu():
    proc = run_tdbn("presets")
    assert proc.returncode == 0, proc.stderr
    for name in ["(none)", *preset_names()]:
        block = re.search(rf"^{re.escape(name)} .*\n((?: +.*\n)*)", proc.stdout, re.MULTILINE)
        assert block, (name, proc.stdout)
        assert re.search(r"\bCPU\b.*\b(\d+ s|\d+ min|\d+(\.\d+)? h|not timed)", block[0]), (name, block[0])


def test_the_readme_quotes_one_nmnist_accuracy():
    """The README's headline table, the accuracy table and the streaming section of the full record quote the same
    run, as stored in its latency result."""
    readme = (REPO / "README.md").read_text()
    record = (REPO / "docs" / "benchmarks.md").read_text()
    stored = json.loads((REPO / "docs" / "figures" / "latency_nmnist.json").read_text())["top1"][-1]
    headline = re.search(r"([\d.]+) %", next(line for line in readme.splitlines() if line.startswith("| N-MNIST")))
    row = next(line for line in record.splitlines() if line.startswith("| N-MNIST"))
    in_table = re.search(r"\*\*([\d.]+) %\*\*", row)
    in_stream = re.search(r"gives ([\d.]+) % top-1 on the 100 real test recordings", record)
    assert headline and in_table and in_stream
    assert float(headline[1]) == float(in_table[1]) == float(in_stream[1]) == pytest.approx(100 * stored)


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_a_thread_count_below_one_is_one_error_line_in_every_command(threads, tmp_path, capsys):
    """``threads=0`` (train) and ``--threads 0`` (stream, analyze): one line naming the option, exit code 2, before
    anything is read or written (the run folder, the event file and the data named here do not exist)."""
    runs = tmp_path / "runs"
    commands = {
        "train": (["train", "mnist", f"data.root={tmp_path / 'none'}", f"out_dir={runs}", f"threads={threads}"],
                  f"config key 'threads' must be >= 1 (torch CPU threads) or null (torch's default), got {threads}"),
        "stream": (["stream", str(runs / "none"), "--events", str(tmp_path / "none.bs2"), "--threads", threads],
                   f"--threads must be >= 1 (torch CPU threads; omit it for torch's choice), got {threads}"),
        "analyze": (["analyze", "ops", "--model", "resnet19", "--data-root", str(tmp_path / "none"), "--no-plot",
                     "--out", str(runs / "ops"), "--threads", threads],
                    f"--threads must be >= 1 (torch CPU threads; omit it for torch's choice), got {threads}"),
    }
    for command, (argv, message) in commands.items():
        assert main(argv) == 2, command
        out, err = capsys.readouterr()
        assert err == f"tdbn {command}: error: {message}\n" and out == "", (command, err)
    assert main(["analyze", "depth", "--jobs", threads, "--out", str(runs / "depth"), "--no-plot"]) == 2
    assert capsys.readouterr().err == f"tdbn analyze: error: --jobs must be >= 1, got {threads}\n"
    assert not runs.exists()


def _headings(preset: str) -> list[str]:
    """What ``tdbn presets`` prints of a preset: its heading comment lines (the demo's from the CLI)."""
    if preset == "(none)":
        return list(_DEMO)
    return [line for line in preset_path(preset).read_text().splitlines() if line.startswith("#")]


def test_presets_cite_documents_that_hold_their_figures():
    """A preset's "(..., README)" or "(..., docs/X.md)" quotes figures that the document it names does hold."""
    cited = []
    for preset in ["(none)", *preset_names()]:
        for line in _headings(preset):
            for inner in re.findall(r"\(([^()]*)\)", line):
                doc = next((d for d in DOCS if inner.rstrip().endswith(d)), None)
                if doc is None:
                    continue
                text = " ".join(DOCS[doc].read_text().split())
                for figure in re.findall(r"\d+(?:\.\d+)? ?(?:%|(?:s|min|h)\b)", inner):
                    assert figure in text, (preset, doc, figure)
                    cited.append((preset, figure))
    assert {p for p, _ in cited} >= {"(none)", "mnist", "nmnist", "cifar10_resnet19_cpu"}, cited


def test_the_readme_quotes_the_mnist_preset_time():
    """The README, ``tdbn presets`` and the record give the same time per epoch and epochs for the ``mnist``
    preset, on one core."""
    readme = " ".join((REPO / "README.md").read_text().split())
    said = re.search(r"the `mnist` preset: about (\d+) min per epoch x (\d+) epochs on one core", readme)
    preset = re.search(r"about (\d+) min per epoch x (\d+) epochs = \d+ min on one core", _headings("mnist")[1])
    record = " ".join((REPO / "docs" / "benchmarks.md").read_text().split())
    recorded = re.search(r"quote about (\d+) min per epoch x (\d+) = \d+ min on one core", record)
    assert said and preset and recorded
    assert said.groups() == preset.groups() == recorded.groups()


def _anchor(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_documents_reach_a_section():
    """``[...](other.md#section)`` in the README and docs/ names a heading of that document (sections move)."""
    links = 0
    for source in DOCS.values():
        for target, anchor in re.findall(r"\]\(([\w./-]+\.md)#([^)]+)\)", source.read_text()):
            path = (source.parent / target).resolve()
            headings = [line.lstrip("#") for line in path.read_text().splitlines() if line.startswith("#")]
            assert anchor in {_anchor(h) for h in headings}, (source.name, target, anchor)
            links += 1
    assert links >= 5


def test_sections_named_in_words_exist():
    """``(README, "Section")`` or ``(docs/X.md, "Section")`` in the docs, the benchmarks and the package names a
    heading that document has."""
    sources = [*DOCS.values(), *(REPO / "bench").glob("*.py"), *(REPO / "src" / "tdbn").rglob("*.py")]
    for source in sources:
        for doc, section in re.findall(r'\((README|docs/[\w-]+\.md), "([^"]+)"\)', source.read_text()):
            headings = [line.lstrip("#").strip() for line in DOCS[doc].read_text().splitlines() if line.startswith("#")]
            assert any(h == section or h.startswith(section + " ") for h in headings), (source.name, doc, section)
