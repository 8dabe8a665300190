"""The run report: figures as valid PNGs, one self-contained HTML page embedding them, escaped record text,
skipped phases and judge failures said plainly, and the page rendering in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA as SHARED
from PIL import Image

from lift_local.judge.protocol import DIMENSIONS, Verdict
from lift_local.manifest import Manifest, PhaseEntry
from lift_local.phases.quality import uniformity_warnings
from lift_local.records import InputError, Record, read_records, write_records
from lift_local.report import write_report

ROOT = Path(__file__).resolve().parents[1]
ALL_FIGURES = {"funnel", "pca_variance", "row_variance", "judge_dimensions", "scores"}
INJECTION = '<script>document.title="pwned"</script><img src="x" onerror="document.title=\'pwned\'">'


# --- a synthetic but realistic run folder, written through the manifest's own types ---


def make_run(
    tmp_path: Path,
    *,
    skip: tuple[str, ...] = (),
    judge_failures: int = 0,
    uniform_judge: bool = False,
    first_instruction: str | None = None,
    n: int = 120,
    top: int = 12,
) -> Path:
    """Records from the shared Code Alpaca file pushed through made-up but plausible phase results.

    `first_instruction` replaces the first record's instruction and gives that record the highest row
    variance, so that the report shows it among the kept examples (and first among judge failures).
    """
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    run.mkdir()
    records = read_records(SHARED / "code_alpaca_2k.json")[:n]
    if first_instruction is not None:
        records[0] = records[0].replace(instruction=first_instruction)
    phases: dict[str, PhaseEntry] = {}

    def done(number, phase, records_in, output, stats, params, **side):
        entry = PhaseEntry(
            "done", output=f"{number}-{phase}.jsonl", output_sha256="0" * 64, records_in=len(records_in),
            records_out=len(output), seconds=float(rng.uniform(1, 200)), finished="2025-01-01T00:00:00+00:00",
            fingerprint="f" * 64, params=params, stats=stats,
        )
        write_records(run / entry.output, output)
        for key, side_records in side.items():
            entry.side[key] = f"{number}-{phase}-{key}.jsonl"
            write_records(run / entry.side[key], side_records)
        phases[phase] = entry

    current = records
    if "enhance" in skip:
        phases["enhance"] = PhaseEntry("skipped")
    else:
        enhanced = [
            r.replace(output=r.output + "\n\nThis works because each step is checked.").with_meta(
                original_output=r.output, enhance_status="ok"
            )
            for r in current
        ]
        done(
            1, "enhance", current, enhanced, {"unchanged": {"empty": 0, "truncated": 1}}, {"max_tokens": 512}
        )
        current = enhanced
    if "expand" in skip:
        phases["expand"] = PhaseEntry("skipped")
    else:
        new = [
            Record(
                instruction=f"{r.instruction} Handle invalid input and explain the time complexity.",
                input=r.input,
                output=r.output + "\nComplexity: O(n).",
                id=f"{r.id}-r1",
                meta={"origin": "expanded", "round": 1, "parent": r.id, "source": r.meta["source"]},
            )
            for r in current[: n // 2]
        ]
        done(
            2,
            "expand",
            current,
            current + new,
            {"rounds": [{"round": 1, "new": len(new), "unusable": {"empty": 2, "same_as_parent": 1}}]},
            {"rounds": 1, "task": "code"},
        )
        current = current + new
    if "variety" in skip:
        phases["variety"] = PhaseEntry("skipped")
    else:
        row_variance = rng.lognormal(0, 0.4, len(current))
        if first_instruction is not None:
            row_variance[0] = 10.0
        threshold = float(np.quantile(row_variance, 0.8))
        marked = [r.with_meta(row_variance=float(v)) for r, v in zip(current, row_variance, strict=True)]
        kept = [r for r in marked if r.meta["row_variance"] > threshold]
        dropped = [r for r in marked if r.meta["row_variance"] <= threshold]
        spectrum = 1 / np.arange(1, 385) ** 0.9
        cumulative = np.cumsum(spectrum) / spectrum.sum()
        k = int(np.searchsorted(cumulative, 0.95) + 1)
        done(
            3,
            "variety",
            current,
            kept,
            {
                "n_components": k,
                "variance_target": 0.95,
                "explained_variance_cumulative": cumulative.round(4).tolist(),
                "threshold": threshold,
                "keep": 0.2,
            },
            {"variance": 0.95, "keep": 0.2},
            dropped=dropped,
        )
        current = kept
    if "quality" in skip:
        phases["quality"] = PhaseEntry("skipped")
    else:
        lengths = np.array([len(re.sub(r"[\t\n]", "", r.instruction + r.input + r.output)) for r in current])
        length_t = float(np.percentile(lengths, 98))
        scored, failures = [], {}
        for i, (record, length) in enumerate(zip(current, lengths, strict=True)):
            length_score = 100.0 if length >= length_t else 100 * length / length_t
            if i < judge_failures:
                judge = Verdict("invalid_json", f"I rate this <b>{i}</b> out of ten", 2, "judge")
                scored.append(record.with_meta(judge=judge.to_json(), length_score=length_score))
                failures["invalid_json"] = failures.get("invalid_json", 0) + 1
                continue
            scores = (
                {"clarity": 13, "difficulty": 20, "explanation": 20, "accuracy": 30}
                if uniform_judge
                else {dim: int(rng.integers(top_ // 3, top_ + 1)) for dim, top_ in DIMENSIONS.items()}
            )
            total = sum(scores.values())
            judge = Verdict("ok", json.dumps(scores), 0, "judge", scores, total)
            scored.append(
                record.with_meta(
                    judge=judge.to_json(), length_score=length_score, quality=0.9 * total + 0.1 * length_score
                )
            )
        ranked = sorted(scored, key=lambda r: r.meta.get("quality", -1), reverse=True)
        kept = [ranked[i] for i in rng.permutation(top)]
        baseline = [current[i] for i in rng.choice(len(current), top, replace=False)]
        done(
            4,
            "quality",
            current,
            kept,
            {
                "records": len(current),
                "ok": len(current) - judge_failures,
                "failed": failures,
                "kept": top,
                "length_T": length_t,
                "uniform_warning": uniform_judge,
                "warnings": uniformity_warnings(
                    [Verdict.of(r).total for r in ranked if "quality" in r.meta]
                ),
            },
            {"top": top, "judge_weight": 0.9, "length_weight": 0.1},
            scores=ranked,
            baseline=baseline,
        )
        current = kept
    write_records(run / "curated.jsonl", current)
    Manifest(
        lift_local_version="0.1.0",
        input={"path": str(SHARED / "code_alpaca_2k.json"), "sha256": "a" * 64, "records": n, "limit": n, "seed": 0},
        models={"rewriter": "smollm2-135m-instruct", "judge": "smollm2-135m-instruct", "embedder": "all-minilm-l6-v2"},
        phases=phases,
        curated="curated.jsonl",
    ).save(run)
    return run


class ImageCollector(HTMLParser):
    """Collects every <img> and <script> the page really contains (not text that merely looks like them)."""

    def __init__(self):
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "script":
            self.scripts += 1


def parse(report: Path) -> ImageCollector:
    collector = ImageCollector()
    collector.feed(report.read_text(encoding="utf-8"))
    return collector


def figure_files(run: Path) -> set[str]:
    return {path.stem for path in (run / "figures").glob("*.png")}


# --- tests ---


def test_full_run_writes_every_figure_as_a_valid_png(tmp_path):
    run = make_run(tmp_path)
    report = write_report(run)
    assert report == run / "report.html"
    assert figure_files(run) == ALL_FIGURES
    for name in ALL_FIGURES:
        with Image.open(run / "figures" / f"{name}.png") as image:
            image.verify()
            assert image.format == "PNG"
            assert image.width > 300 and image.height > 100


def test_html_embeds_each_figure_as_the_same_png_with_alt_text(tmp_path):
    run = make_run(tmp_path)
    page = parse(write_report(run))
    assert len(page.images) == len(ALL_FIGURES)
    embedded = set()
    for image in page.images:
        assert image["alt"].strip()
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        png = base64.b64decode(image["src"][len(prefix) :], validate=True)
        Image.open(io.BytesIO(png)).verify()
        embedded.add(png)
    assert embedded == {(run / "figures" / f"{name}.png").read_bytes() for name in ALL_FIGURES}


def test_record_text_is_escaped_not_injected(tmp_path):
    run = make_run(tmp_path, first_instruction=INJECTION, judge_failures=1)
    text = write_report(run).read_text(encoding="utf-8")
    page = parse(run / "report.html")
    shown = "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;&lt;img src=&quot;x&quot;"
    assert text.count(shown) == 2  # a kept example of variety, and the first judge failure
    assert page.scripts == 1  # only the report's own
    assert len(page.images) == len(ALL_FIGURES)


def test_long_text_is_truncated(tmp_path):
    run = make_run(tmp_path, first_instruction="x" * 5000)
    text = write_report(run).read_text(encoding="utf-8")
    assert "x" * 400 + "… [4600 more characters]" in text
    assert "x" * 401 not in text


def test_skipped_phases_are_named_and_their_figures_left_out(tmp_path):
    run = make_run(tmp_path, skip=("enhance", "expand", "quality"))
    text = write_report(run).read_text(encoding="utf-8")
    assert figure_files(run) == {"funnel", "pca_variance", "row_variance"}
    assert len(parse(run / "report.html").images) == 3
    assert "Skipped or not finished: enhance, expand, quality." in text
    assert "Quality compression skipped: nothing to show." in text
    assert re.search(r"<th>enhance</th><td[^>]*>skipped</td>", text)


def test_figures_of_a_phase_no_longer_in_the_run_are_removed(tmp_path):
    run = make_run(tmp_path)
    write_report(run)
    manifest = Manifest.load(run)
    manifest.phases["quality"] = PhaseEntry("skipped")
    manifest.save(run)
    write_report(run)
    assert figure_files(run) == {"funnel", "pca_variance", "row_variance"}


def test_phase_missing_from_the_manifest_reads_as_not_run(tmp_path):
    run = make_run(tmp_path)
    manifest = Manifest.load(run)
    del manifest.phases["variety"], manifest.phases["quality"]  # an interrupted run
    manifest.curated = None
    manifest.save(run)
    text = write_report(run).read_text(encoding="utf-8")
    assert "Variety compression not run: nothing to show." in text
    assert "not written (the run did not finish)" in text
    assert figure_files(run) == {"funnel"}


def test_judge_failures_are_warned_about_and_shown_raw(tmp_path):
    run = make_run(tmp_path, judge_failures=4)
    text = write_report(run).read_text(encoding="utf-8")
    scored = Manifest.load(run).phases["quality"].records_in
    assert f"The judge's reply could not be used for 4 of {scored} records</b> (invalid_json=4)" in text
    assert "Judge failures (4: invalid_json=4)" in text
    assert "I rate this &lt;b&gt;0&lt;/b&gt; out of ten" in text  # the raw reply, escaped
    assert figure_files(run) == ALL_FIGURES


def test_a_judge_that_always_failed_leaves_no_score_figures(tmp_path):
    run = make_run(tmp_path, judge_failures=36)
    text = write_report(run).read_text(encoding="utf-8")
    assert "could not be used for 36 of 36 records" in text
    assert figure_files(run) == {"funnel", "pca_variance", "row_variance"}


def test_no_warnings_for_a_healthy_judge(tmp_path):
    text = write_report(make_run(tmp_path)).read_text(encoding="utf-8")
    assert 'class="warning"' not in text


def test_uniform_judge_is_warned_about_in_the_phases_words(tmp_path):
    run = make_run(tmp_path, uniform_judge=True)
    text = write_report(run).read_text(encoding="utf-8")
    assert (
        "<b>Quality compression:</b> the judge&#x27;s totals are nearly uniform (sd 0.0 points, 100%" in text
    )
    assert "random subset of the same size in <code>4-quality-baseline.jsonl</code>" in text
    assert text.count('class="warning"') == 1


def test_uniform_flag_alone_is_warned_about(tmp_path):
    run = make_run(tmp_path, uniform_judge=True)
    manifest = Manifest.load(run)
    del manifest.phases["quality"].stats["warnings"]
    manifest.save(run)
    text = write_report(run).read_text(encoding="utf-8")
    assert "<b>Quality compression:</b> the judge&#x27;s totals are nearly uniform. Compare" in text


def test_examples_are_the_extremes_of_each_selection(tmp_path):
    run = make_run(tmp_path)
    text = write_report(run).read_text(encoding="utf-8")
    phases = Manifest.load(run).phases
    kept = sorted(read_records(run / phases["variety"].output), key=lambda r: -r.meta["row_variance"])
    dropped = sorted(read_records(run / phases["variety"].side["dropped"]), key=lambda r: r.meta["row_variance"])
    scored = read_records(run / phases["quality"].side["scores"])
    shown = re.findall(r"class=\"muted\">id ([^\s<]+)", text)
    assert shown[:12] == [r.id for r in kept[:3] + dropped[:3] + scored[:3] + scored[::-1][:3]]
    assert f"every kept record scores at least {scored[11].meta['quality']:.1f}" in text


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"manifest.json: no such file; is this a folder written by"):
        write_report(tmp_path)


def test_malformed_manifest_names_the_line(tmp_path):
    (tmp_path / "manifest.json").write_text('{\n  "phases": {,}\n}')
    with pytest.raises(InputError, match=r"manifest.json:line 2 column 14: malformed JSON"):
        write_report(tmp_path)


def test_missing_record_file_names_it(tmp_path):
    run = make_run(tmp_path)
    (run / "3-variety-dropped.jsonl").unlink()
    with pytest.raises(InputError, match=r"3-variety-dropped.jsonl: no such file"):
        write_report(run)


def test_manifest_entry_without_its_file_names_the_phase(tmp_path):
    run = make_run(tmp_path)
    manifest = Manifest.load(run)
    del manifest.phases["quality"].side["scores"]
    manifest.save(run)
    with pytest.raises(InputError, match=r"manifest.json:phases.quality: names no 'scores' file"):
        write_report(run)


# --- in a real browser ---


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed by the project's own script; failing to install it fails the test."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_chromium.sh")], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(
            f"scripts/install_chromium.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return "/usr/bin/chromium"


def headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
    ]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=180, check=True)


@pytest.mark.browser
def test_report_renders_every_figure_in_chromium(chromium, tmp_path):
    run = make_run(tmp_path, judge_failures=3, first_instruction=INJECTION)
    report = write_report(run)
    url = report.resolve().as_uri()
    dom = headless(chromium, tmp_path / "profile", "--dump-dom", url).stdout
    body = re.search(r"<body ([^>]*)>", dom).group(1)
    assert 'data-figures="5"' in body
    assert 'data-figures-loaded="5"' in body  # every <img> decoded, with non-zero natural width
    assert "<title>lift-local report: run</title>" in dom  # the injected record changed nothing

    screenshot = tmp_path / "report.png"
    headless(
        chromium,
        tmp_path / "profile",
        "--hide-scrollbars",
        "--window-size=1200,4000",
        f"--screenshot={screenshot}",
        url,
    )
    with Image.open(screenshot) as image:
        assert image.size == (1200, 4000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # The figures' blue is on screen, not just in the DOM: ~160k pixels of it with the figures, ~13k from the
    # kept examples' borders alone when the images fail to decode.
    assert sum(count for count, rgb in colours if rgb == (0x00, 0x72, 0xB2)) > 50_000


@pytest.mark.browser
def test_install_chromium_is_a_no_op_once_installed(chromium):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_chromium.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == ""  # returned before apt-get and before printing the version
