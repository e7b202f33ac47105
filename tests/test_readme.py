"""The README and docs/: the README's Python example runs as written on CSVs named like a
user's, and every relative link and #anchor of README.md and docs/*.md resolves."""

import json
import pathlib
import re
import tempfile

import pandas as pd
import pytest

import lstmae_jax
from lstmae_jax.synthetic import timeline

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLE_MARK = "<!-- api-example -->"  # the README's Python example is the block after it


def readme_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert EXAMPLE_MARK in readme, f"README.md lost its {EXAMPLE_MARK} marker"
    block = re.search(r"```python\n(.*?)```", readme.split(EXAMPLE_MARK, 1)[1], re.S)
    assert block, f"no ```python block after {EXAMPLE_MARK} in README.md"
    return block.group(1)


def test_the_readme_example_compiles():
    compile(readme_example(), "README.md (Python example)", "exec")


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    # The files the example reads, as CICFlowMeter writes them (the CICIDS2017 release's
    # header, Infinity/NaN rates, -1 sentinels): a benign day to train on, a day with
    # attacks to score, and benign traffic to calibrate on.
    days = {
        "monday.csv": timeline.generate(3000, seed=1, attack_fraction=0.0),
        "tuesday.csv": timeline.generate(2000, seed=7),
        "quiet_day.csv": timeline.generate(1500, seed=11, attack_fraction=0.0),
    }
    for name, flows in days.items():
        timeline.write(flows, str(tmp_path / name), style="cicids2017")
    temp = tmp_path / "tmp"  # the Detector's temporary workdir goes here
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.chdir(tmp_path)

    scope = {"__name__": "readme"}
    exec(compile(readme_example(), "README.md (Python example)", "exec"), scope)

    assert not list(temp.iterdir()), "the with block left its temporary workdir behind"
    threshold = json.loads((tmp_path / "detector" / "scorer.json").read_text())["threshold"]
    assert threshold["value"] == pytest.approx(scope["threshold"])  # calibrate's, shipped
    assert (
        "quiet_day.csv" in threshold["calibrated_on"]
        and str(temp) not in threshold["calibrated_on"]
    )

    tuesday = pd.read_csv(tmp_path / "tuesday.csv")
    result = lstmae_jax.load(str(tmp_path / "detector")).score(tuesday)
    assert len(result) == len(tuesday) and (result.index == tuesday.index).all()
    assert (result.status == "scored").mean() > 0.95
    alert = result.alert.fillna(False).astype(bool)
    attack = tuesday[" Label"] != "BENIGN"
    assert attack.any() and alert[attack].mean() > 5 * alert[~attack].mean()


# -- links

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target): images too


def _prose(text: str) -> str:
    """The Markdown without fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: pathlib.Path) -> set[str]:
    """The #anchors GitHub gives the headings of ``page`` (duplicates get -1, -2, ...)."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
        slug = re.sub(r"[^\w\- ]", "", plain.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(
                f"{target}: no {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}"
            )
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_readme_is_a_start_not_a_reference():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 500, "README.md is a start: move reference text to docs/"
    assert "../shared" not in readme, "README.md names a path a user does not have"
