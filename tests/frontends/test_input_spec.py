"""The declared input: options resolved into an InputSpec, written into the float IR, recorded for the manifest."""

import numpy as np
import pytest

from inflor_deploy.frontends.input_spec import (
    NORMALIZE_NAME,
    InputSpecError,
    apply_input_spec,
    input_spec_of,
    resolve_input_spec,
)
from inflor_deploy.frontends.fx import trace as model_to_ir
from inflor_deploy.ir import nodes as n
from inflor_deploy.nn import ModelConfig, build_model

CIFAR = ModelConfig(arch="digits_cnn", in_channels=3, image_size=8, timesteps=2)


def test_the_four_declarations():
    assert resolve_input_spec().kind == "pixels" and resolve_input_spec().value_range == (0.0, 1.0)
    raw = resolve_input_spec("0,255")
    assert raw.kind == "raw_pixels" and raw.pixel_levels == 1
    signed = resolve_input_spec((-2.5, 2.5))
    assert signed.kind == "range" and signed.pixel_levels is None
    normalized = resolve_input_spec(None, "0.49,0.48,0.45", "0.25,0.24,0.26")
    assert normalized.kind == "pixels" and normalized.mean == (0.49, 0.48, 0.45)
    assert resolve_input_spec(input_encoding="sequence").encoding == "sequence"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_range="1,0"), "LO must be below HI"),
        (dict(input_range="0,1,2"), "expected 2 numbers"),
        (dict(input_range="a,b"), "comma-separated numbers"),
        (dict(input_range="0,inf"), "finite"),
        (dict(input_mean="0.5"), "together"),
        (dict(input_mean="0.5,0.5", input_std="0.2"), "one per channel"),
        (dict(input_mean="0.5", input_std="0"), "std must be > 0"),
        (dict(input_encoding="rate"), "--input-encoding 'rate'"),
    ],
)
def test_bad_declarations_name_the_option(kwargs, message):
    with pytest.raises(InputSpecError, match=message):
        resolve_input_spec(**kwargs)


def test_apply_inserts_the_normalization_after_the_input():
    graph = model_to_ir(build_model(CIFAR).eval())
    spec = resolve_input_spec(None, "0.49,0.48,0.45", "0.25,0.24,0.26")
    declared = apply_input_spec(graph, spec)
    assert isinstance(declared.nodes[1], n.Normalize) and declared.nodes[1].name == NORMALIZE_NAME
    first = declared.consumers(NORMALIZE_NAME)
    assert [x.name for x in first] == ["unit1.conv"] and not declared.consumers(declared.input.name)[1:]
    assert np.array_equal(declared.nodes[1].std, np.array([0.25, 0.24, 0.26], np.float32))
    record = input_spec_of(declared, grade_scale=255.0)
    assert record["normalization"]["mean"] == pytest.approx([0.49, 0.48, 0.45])
    assert record["chip_receives"] == "round(x * 255)" and record["kind"] == "pixels"
    with pytest.raises(InputSpecError, match="3 channels"):
        apply_input_spec(graph, resolve_input_spec(None, "0.5,0.5", "0.2,0.2"))


def test_apply_declares_range_and_encoding():
    graph = model_to_ir(build_model(CIFAR).eval())
    declared = apply_input_spec(graph, resolve_input_spec("-0.5,1", input_encoding="sequence"))
    source = declared.input
    assert (source.value_range, source.pixel_levels, source.encoding) == ((-0.5, 1.0), None, "sequence")
    events = resolve_input_spec(input_encoding="sequence")
    assert (events.kind, events.value_range, events.pixel_levels) == ("events", (0.0, 1.0), 1)
    assert resolve_input_spec("0,3", input_encoding="sequence").pixel_levels == 1  # counts, one unit per event
    assert not declared.of_type(n.Normalize)
