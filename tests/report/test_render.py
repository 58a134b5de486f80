"""report.json validates against its schema; report.html is self-contained with valid PNGs; report.md has the tables."""

import base64
import copy
import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image

from inflor_deploy.report import short_summary, write_report
from inflor_deploy.report.schema import SCHEMA, SCHEMA_VERSION, validate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def written(digits_report, digits_artifact):
    paths = write_report(digits_report, digits_artifact.path)
    return paths


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []
        self.external = []  # anything that would make the page not self-contained

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs.get("src", ""))
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.external.append(tag)


def test_files_land_in_the_artifact(written, digits_artifact):
    assert set(written) == {"json", "markdown", "html"}
    for path in written.values():
        assert path.parent == digits_artifact.path / "report" and path.stat().st_size > 0


def test_json_validates_against_the_schema(written):
    data = json.loads(written["json"].read_text())
    assert data["schema"] == "inflor-deploy-report" and data["schema_version"] == SCHEMA_VERSION
    assert validate(data) == []


def test_the_validator_catches_what_breaks_the_schema(written):
    good = json.loads(written["json"].read_text())

    def broken(change):
        data = copy.deepcopy(good)
        change(data)
        return validate(data)

    assert any("missing required key 'energy'" in e for e in broken(lambda d: d.pop("energy")))
    assert any("unexpected key 'extra'" in e for e in broken(lambda d: d.update(extra=1)))
    assert any("maximum" in e for e in broken(lambda d: d["activity"]["layers"][0]["rate_per_step"].__setitem__(0, 1.5)))
    assert any("is not one of" in e for e in broken(lambda d: d["energy"]["tiers"][1]["figures"][0].update(tag="[guess]")))
    assert any("expected integer" in e for e in broken(lambda d: d["activity"]["totals"].update(spikes="many")))
    assert any("schema_version" in e for e in broken(lambda d: d.update(schema_version=99)))
    assert any("source" in e for e in broken(lambda d: d["energy"]["tiers"][2]["figures"][0].update(source="")))
    with pytest.raises(ValueError, match="unsupported"):
        validate({}, {"type": "object", "patternProperties": {}})


def test_schema_is_plain_json():
    assert json.loads(json.dumps(SCHEMA)) == SCHEMA


def test_html_is_self_contained_and_every_image_is_a_valid_png(written):
    text = written["html"].read_text()
    parser = _Images()
    parser.feed(text)
    assert not parser.external and "http://" not in text and "https://" not in text.replace(SCHEMA["$id"], "")
    assert len(parser.sources) == 4  # firing rates, raster, energy, occupancy
    for src in parser.sources:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        png = base64.b64decode(src[len(prefix):], validate=True)
        assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
        Image.open(io.BytesIO(png)).verify()
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 200


def test_markdown_and_html_label_every_tier(written):
    md = written["markdown"].read_text()
    html = written["html"].read_text()
    for text in (md, html):
        for tier in (1, 2, 3, 4):
            assert f"Tier {tier}:" in text
        assert "not published" in text and "Horowitz" in text and "Davies" in text and "PilotNet" in text
        assert "routing reserve" in text  # the memory model is stated
    assert md.count("\n| ") > 20


def test_short_summary_names_tiers_and_sources(digits_report):
    text = short_summary(digits_report)
    assert "tier 1" in text and "tier 2" in text and "tier 3" in text and "tier 4" in text
    assert "Horowitz" in text and "Davies" in text and "not published" in text
    assert "cores" in text and "status ok" in text


def test_title_names_the_model_once_and_the_tags_are_explained_in_every_format(written):
    from inflor_deploy.targets import TAG_MEANINGS

    data = json.loads(written["json"].read_text())
    md, html = written["markdown"].read_text(), written["html"].read_text()
    assert data["tags"] == TAG_MEANINGS and set(data["tags"]) == {"exact", "[P]", "[T]", "[2]", "[D]"}
    assert md.splitlines()[0] == "# Report: digits_srif_t4 (digits_cnn, T = 4) on loihi2-sim"
    assert "<h1>Report: digits_srif_t4 (digits_cnn, T = 4) on loihi2-sim</h1>" in html
    for text in (md, html):
        assert "digits_cnn (digits_cnn)" not in text and "How to read the tags" in text
        for meaning in TAG_MEANINGS.values():
            assert meaning.split(" (")[0].replace("'", "&#x27;") in text or meaning.split(" (")[0] in text


@pytest.mark.parametrize("readout, label", [("mean_membrane", "mean membrane over T"), ("spike_count", "spike count")])
def test_the_readout_row_names_the_readout(readout, label):
    from inflor_deploy.report import report_from_graph
    from inflor_deploy.report.render import render_markdown
    from inflor_deploy.targets import load_target
    from tests.neuron_cases import compile_graph, conv_images, conv_per_channel_graph

    fixed = compile_graph(conv_per_channel_graph(readout), conv_images(4))[0].graph
    d = report_from_graph(fixed, conv_images(4), load_target("loihi2-sim")).to_dict()
    assert validate(d) == []
    layers = {x["name"]: x for x in d["activity"]["layers"]}
    assert layers["out"]["readout"] == readout and layers["hard_pc"]["readout"] is None
    assert f"| out (readout: {label}) |" in render_markdown(d)
