"""The HTML report: one self-contained file (figures inlined, PNGs beside it), every section present or
replaced by a note, published anchors marked as such, and a page that a real browser renders cleanly."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from genrec.report.anchors import PUBLISHED, anchors_for, dataset_key
from genrec.report.html import Run, headline_table, write_report
from genrec.report.recommendations import item_categories

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
URL_ATTR = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory) -> Path:
    return write_report([run_dir], tmp_path_factory.mktemp("report") / "report.html")


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', page)


def test_the_report_is_one_file_with_its_figures_inlined_and_written_beside_it(report):
    page = report.read_text()
    sources = _images(page)
    pngs = sorted(report.parent.glob("report-*.png"))
    assert len(sources) == len(pngs) >= 6
    inlined = {base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in sources}
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert inlined == {p.read_bytes() for p in pngs}


def test_the_report_loads_nothing_from_elsewhere(report):
    page = report.read_text()
    assert not URL_ATTR.search(page)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "default-src 'none'" in page  # the browser may load nothing but the inlined images


def test_the_url_check_catches_external_sources():
    assert URL_ATTR.search('<img src="https://cdn.example/x.png">')
    assert URL_ATTR.search("<script src='//cdn.example/x.js'>")
    assert not URL_ATTR.search('<a href="#gowalla">')


def test_every_section_is_there_for_a_run_with_a_torch_model(report):
    page = report.read_text()
    for heading in ("Results", "Training curves", "Metrics by user activity and item popularity", "Long tail",
                    "Latent space", "Example recommendations"):
        assert f">{heading}</h3>" in page
    assert "coloured by category" in page  # the synthetic items have a category attribute
    assert page.count("because of:") == 15  # 3 users x 5 recommendations, each explained
    assert "Configuration (config.yaml)" in page
    assert "skipped:" not in page


def test_a_single_run_folder_defaults_to_its_report_html(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert write_report(run) == run / "report.html"
    assert (run / "report.html").is_file()


def test_missing_pieces_become_notes_not_errors(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "metrics.json", bare / "metrics.json")
    page = write_report([bare], tmp_path / "out.html").read_text()
    assert "No training history in this run" in page
    assert "no bundle at" in page
    assert "No model bundle could be loaded, so there are no recommendations to plot." in page
    assert "No torch model in this run" in page
    assert ">Results</h3>" in page and len(_images(page)) == 3  # metrics, user and item buckets


def test_a_folder_without_metrics_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        write_report([tmp_path], tmp_path / "r.html")


def test_several_runs_share_one_page_with_links_to_each(run_dir, tmp_path):
    page = write_report([run_dir, run_dir], tmp_path / "both.html").read_text()
    assert '<a href="#tiny">' in page and '<a href="#tiny-2">' in page
    assert len(list(tmp_path.glob("both-tiny-2-*.png"))) >= 6


def _gowalla_run(run_dir: Path) -> Run:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["protocol"] = "fixed"
    config = {"data": {"format": "lightgcn", "path": "/data/lightgcn-gowalla"}, "evaluation": {"ks": [20]}}
    return Run(run_dir, metrics, config, {}, None)


def test_published_anchors_sit_beside_ours_and_are_marked(run_dir):
    run = _gowalla_run(run_dir)
    assert dataset_key(run.config) == "gowalla"
    table, published = headline_table(run)
    ours = table[~np.array(published)]
    theirs = table[np.array(published)]
    assert list(ours["model"]) == ["popularity", "ease", "multvae"]
    assert list(theirs["model"]) == ["Mult-VAE (published)", "EASE (published)", "LightGCN (published)"]
    assert theirs.set_index("model").loc["LightGCN (published)", "ndcg@20"] == 0.1554
    assert theirs.set_index("model").loc["Mult-VAE (published)", "recall@20"] == 0.1641
    assert all("He et al." in s or "Shen et al." in s for s in theirs["source"])
    assert set(ours["source"]) == {"this run"}


def test_anchors_need_the_same_protocol_and_data():
    run = Run(Path("."), {"protocol": "strong_generalization", "models": {}},
              {"data": {"format": "lightgcn", "path": "gowalla"}}, {}, None)
    assert anchors_for(run) == []
    assert dataset_key({"data": {"format": "movielens", "path": "/x/movielens-100k"}}) == "ml-100k"
    assert dataset_key({"data": {"format": "synthetic"}}) is None
    assert {a.dataset for a in PUBLISHED} >= {"gowalla"}


def test_published_rows_are_styled_apart_in_the_page(run_dir, tmp_path):
    run = tmp_path / "gowalla"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("model", "popularity", "ease", "multvae"))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["protocol"] = "fixed"
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.yaml").write_text(yaml.safe_dump(_gowalla_run(run_dir).config))
    page = write_report([run], tmp_path / "g.html").read_text()
    assert page.count('<tr class="published">') == 3
    assert "<b>published numbers</b>" in page


def test_item_categories_come_from_category_or_the_first_genre():
    import pandas as pd

    assert item_categories(None) == (None, "")
    labels, what = item_categories(pd.DataFrame({"genres": ["Drama|War", "", "Comedy"]}))
    assert list(labels) == ["Drama", "(none)", "Comedy"] and what == "first listed genre"
    labels, what = item_categories(pd.DataFrame({"category": ["a", "b"], "genres": ["x", "y"]}))
    assert list(labels) == ["a", "b"] and what == "category"


# in a real browser -----------------------------------------------------------------------------------------------
PROBE = """<script>
(function () {
  var errors = [];
  var original = console.error;
  console.error = function () { errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
                                original.apply(console, arguments); };
  window.addEventListener('error', function (e) {
    errors.push('error: ' + (e.message || (e.target && (e.target.src || e.target.tagName)))); }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('unhandled rejection: ' + e.reason); });
  document.addEventListener('securitypolicyviolation', function (e) { errors.push('CSP: ' + e.blockedURI); });
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var out = document.createElement('pre');
    out.id = 'probe';
    out.textContent = JSON.stringify({images: images.length, errors: errors,
      broken: images.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).map(function (i) {
        return i.alt; })});
    document.body.appendChild(out);
  });
})();
</script>"""


def render_in_chromium(page: Path) -> tuple[dict, list[str]]:
    """Load `page` with a probe script placed before the page's Content-Security-Policy (a meta policy
    governs only what follows it); return the probe's findings and the browser's console lines."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the browser check needs it")
    probed = page.with_name(f"probed-{page.name}")
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
             "--dump-dom", probed.as_uri()],
            capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"the probe did not report (exit {done.returncode}): {done.stderr[-2000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), console


def test_chromium_loads_every_image_with_no_console_errors(report):
    probe, console = render_in_chromium(report)
    assert probe["images"] == len(_images(report.read_text())) >= 6
    assert probe["broken"] == []
    assert probe["errors"] == []
    assert console == []


def test_the_browser_check_sees_a_broken_image_and_a_blocked_url(report, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(report.read_text().replace(
        "</body>", '<img src="data:image/png;base64,AAAA" alt="broken"><img src="http://x.invalid/a.png" alt="far">'
        "</body>"))
    probe, console = render_in_chromium(bad)
    assert sorted(probe["broken"]) == ["broken", "far"]
    assert any(e.startswith("CSP: http://x.invalid") for e in probe["errors"])
    assert console
