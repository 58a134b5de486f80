"""Hardware targets: shipped files load, every number cites its source, bad files fail clearly."""

from __future__ import annotations

import dataclasses
import re
import tomllib

import pytest

from inflor_deploy.targets import (
    TAGS,
    Target,
    TargetError,
    list_targets,
    load_target,
    targets_dir,
)

SHIPPED = ("loihi2", "loihi2-sim")
TARGET_FILES = [targets_dir() / f"{name}.toml" for name in SHIPPED]

# A single-line TOML assignment whose value is a number or an array of numbers.
_NUMBER = r"[+-]?(?:\d[\d_]*)(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?"
_NUMERIC_LINE = re.compile(
    rf"^\s*(?P<key>[A-Za-z0-9_-]+)\s*=\s*"
    rf"(?P<value>{_NUMBER}|\[\s*{_NUMBER}(?:\s*,\s*{_NUMBER})*\s*,?\s*\])"
    rf"\s*(?:#(?P<comment>.*))?$"
)
_HEADER = re.compile(r"^\s*\[(?P<table>[A-Za-z0-9_.-]+)\]\s*(?:#.*)?$")


def _numeric_leaves(table: dict, prefix: str = "") -> set[str]:
    """``"table.key"`` of every number or list of numbers in a parsed TOML document."""
    out = set()
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _numeric_leaves(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.add(name)
        elif isinstance(value, list) and value and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            out.add(name)
    return out


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"fixture text {old!r} must occur exactly once"
    return text.replace(old, new)


# --------------------------------------------------------------------------- shipped files


def test_shipped_targets_load_by_name_and_are_listed():
    hw, sim = load_target("loihi2"), load_target("loihi2-sim")
    assert (hw.kind, hw.lava_run_config, hw.runnable) == ("hardware", None, False)
    assert (sim.kind, sim.lava_run_config, sim.runnable) == ("simulator", "Loihi2SimCfg", True)
    assert hw.select_tag == sim.select_tag == "fixed_pt"
    assert hw.limits.enforce_resource_limits and not sim.limits.enforce_resource_limits
    assert [t.name for t in list_targets()] == sorted(SHIPPED)
    assert load_target(str(TARGET_FILES[0])) == hw  # by path too


def test_shipped_numbers_match_hardware_facts():
    """Spot checks against HARDWARE_FACTS.md / DESIGN.md §3, so a typo in a file fails here."""
    t = load_target("loihi2")
    n = t.numerics
    assert (n.weight_bits, n.state_bits_u, n.state_bits_v) == (8, 24, 24)
    assert (n.du_bits, n.dv_bits) == (12, 12)
    assert (n.vth_mant_bits, n.vth_shift, n.bias_mant_bits, n.bias_exp_bits) == (17, 6, 13, 3)
    assert (n.activation_shift, n.bias_exp, n.decay_unit, n.graded_spike_bits) == (6, 6, 4096, 32)
    assert (n.spike_compare, n.u_overflow, n.v_overflow) == ("strict_greater", "wrap", "saturate")
    assert (t.timing.max_synaptic_delay, t.timing.connection_latency_steps) == (62, 1)
    lim = t.limits
    assert (lim.cores_per_chip, lim.usable_cores_per_chip, lim.neurons_per_core) == (128, 120, 8192)
    assert (lim.neurons_per_chip, lim.memory_per_core_bytes) == (1_000_000, 192 * 1024)
    assert lim.chips_per_board == 8
    e = t.energy
    assert (e.horowitz_45nm.e_mac_pj, e.horowitz_45nm.e_ac_pj) == (4.6, 0.9)
    assert e.loihi1_per_op.synop_pj == 23.6
    assert e.loihi1_per_op.neuron_update_time_ns == (5.3, 8.4)
    pilot = e.loihi2_system.pilotnet_lif
    assert (pilot.cores, pilot.inferences_per_s, pilot.total_power_w) == (74, 408.9, 0.679)
    # The anchors agree with each other: 0.679 W / 408.9 inferences/s = 1.66 mJ.
    assert pilot.total_power_w / pilot.inferences_per_s * 1e3 == pytest.approx(
        pilot.energy_per_inference_mj, abs=0.005)
    assert "energy per synaptic op" in e.loihi2_system.not_published


def test_simulator_shares_numerics_limits_and_energy_with_hardware():
    hw, sim = load_target("loihi2"), load_target("loihi2-sim")
    assert sim.numerics == hw.numerics
    assert sim.energy == hw.energy
    assert sim.limits == dataclasses.replace(hw.limits, enforce_resource_limits=False)
    assert sim.timing == dataclasses.replace(hw.timing, reset_interval_power_of_two=False)


@pytest.mark.parametrize("path", TARGET_FILES, ids=SHIPPED)
def test_every_number_carries_a_tagged_source_comment(path):
    """Rule: every line assigning a number (or list of numbers) has a ``#`` comment with a tag.

    The line scan is cross-checked against tomllib so that no number escapes
    it (e.g. a multi-line array the regex would not see).
    """
    text = path.read_text(encoding="utf-8")
    seen, untagged, table = set(), [], ""
    for lineno, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = header.group("table")
            continue
        match = _NUMERIC_LINE.match(line)
        if not match:
            continue
        seen.add(f"{table}.{match.group('key')}")
        comment = match.group("comment") or ""
        if not any(tag in comment for tag in TAGS):
            untagged.append(f"{path.name}:{lineno}: {line.strip()}")
    assert seen == _numeric_leaves(tomllib.loads(text))
    assert not untagged, "numbers without a tagged source comment:\n" + "\n".join(untagged)


@pytest.mark.parametrize("name", SHIPPED)
def test_energy_tiers_carry_source_and_tag_as_data(name):
    energy = load_target(name).energy
    system = energy.loihi2_system
    for tier in (energy.horowitz_45nm, energy.loihi1_per_op,
                 system.static_power, system.pilotnet_lif, system.hala_point):
        assert tier.source.strip()
        assert tier.tag in TAGS


def test_source_of_returns_the_comment_beside_a_number():
    target = load_target("loihi2")
    assert "[T]" in target.source_of("limits.cores_per_chip")
    assert "[P]" in target.source_of("timing.max_synaptic_delay")
    assert target.source_of("limits.no_such_key") is None


# --------------------------------------------------------------------------- helpers


def test_reset_interval_rounds_to_a_power_of_two_only_on_hardware():
    hw, sim = load_target("loihi2").timing, load_target("loihi2-sim").timing
    assert [hw.reset_interval(w) for w in (1, 2, 5, 8, 9, 16, 17)] == [1, 2, 8, 8, 16, 16, 32]
    assert [sim.reset_interval(w) for w in (1, 5, 8, 9)] == [1, 5, 8, 9]
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="window"):
            hw.reset_interval(bad)


def test_dense_weight_values_are_the_even_values_in_range():
    n = load_target("loihi2-sim").numerics
    values = list(n.dense_weight_values)
    assert (values[0], values[-1], len(values)) == (-256, 254, 256)
    assert all(v % 2 == 0 for v in values) and 255 not in values
    assert list(n.conv_weight_values) == list(range(-128, 128))
    assert (n.v_max, n.u_max, n.vth_mant_max) == (2**23 - 1, 2**23, 2**17 - 1)
    assert (n.bias_mant_range.start, n.bias_mant_range.stop) == (-4096, 4096)


def test_summary_row_tells_targets_apart():
    rows = {t.name: t.summary_row() for t in list_targets()}
    assert rows["loihi2"]["reset_interval"] == "power of 2"
    assert rows["loihi2-sim"]["reset_interval"] == "any"
    assert rows["loihi2"]["run_config"] == "compile-only"
    assert rows["loihi2-sim"]["run_config"] == "Loihi2SimCfg"


# --------------------------------------------------------------------------- bad files

_GOOD = (targets_dir() / "loihi2.toml").read_text(encoding="utf-8")

BAD_FILES = {
    "missing key": (lambda t: _edit(t, "vth_shift = 6 ", "# removed "), "vth_shift"),
    "wrong type": (lambda t: _edit(t, "\nweight_bits = 8 ", '\nweight_bits = "8" '), "weight_bits"),
    "bool for int": (lambda t: _edit(t, "cores_per_chip = 128 ", "cores_per_chip = true "),
                     "cores_per_chip"),
    "unknown key": (lambda t: _edit(t, "[timing]\n", "[timing]\nmax_delay_steps = 3  # [D]\n"),
                    "max_delay_steps"),
    "unknown table": (lambda t: t + "\n[extras]\nfoo = 1  # [D]\n", "extras"),
    "min above max": (lambda t: _edit(t, "dense_weight_min = -256 ", "dense_weight_min = 300 "),
                      "dense_weight_min"),
    "zero bits": (lambda t: _edit(t, "state_bits_v = 24 ", "state_bits_v = 0 "), "state_bits_v"),
    "negative delay": (lambda t: _edit(t, "max_synaptic_delay = 62 ", "max_synaptic_delay = -1 "),
                       "max_synaptic_delay"),
    "usable above total": (lambda t: _edit(t, "usable_cores_per_chip = 120 ",
                                           "usable_cores_per_chip = 200 "),
                           "usable_cores_per_chip"),
    "bad kind": (lambda t: _edit(t, 'kind = "hardware"', 'kind = "fpga"'), "kind"),
    "bad tag": (lambda t: _edit(t, 'tag = "[2]"', 'tag = "[X]"'), "tag"),
    "missing tier source": (lambda t: _edit(t, 'source = "Horowitz', '# source = "Horowitz'),
                            "[energy.horowitz_45nm] missing required key 'source'"),
    "misspelled tier key": (lambda t: _edit(t, "e_ac_pj = 0.9", "e_ac_pJ = 0.9"), "e_ac_pJ"),
    "missing nested table": (lambda t: t.split("[energy.loihi2_system.hala_point]")[0],
                             "missing required key 'hala_point'"),
    "list item type": (lambda t: _edit(t, "[5.3, 8.4]", '[5.3, "fast"]'),
                       "neuron_update_time_ns"),
    "not toml": (lambda t: t + "\nthis is not = = toml\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_raises_target_error_naming_file_and_key(case, tmp_path):
    make, expected_in_message = BAD_FILES[case]
    path = tmp_path / "loihi2.toml"
    path.write_text(make(_GOOD), encoding="utf-8")
    with pytest.raises(TargetError) as info:
        load_target(str(path))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message
    assert expected_in_message in message


def test_missing_table_is_named(tmp_path):
    path = tmp_path / "loihi2.toml"
    text = _GOOD.split("[limits]")[0] + "[energy" + _GOOD.split("[energy", 1)[1]
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TargetError, match=r"missing required table '\[limits\]'"):
        load_target(path)


def test_name_must_match_file_name(tmp_path):
    path = tmp_path / "my-chip.toml"
    path.write_text(_GOOD, encoding="utf-8")
    with pytest.raises(TargetError, match="'name'.*'my-chip'"):
        load_target(path)


def test_unknown_target_name_lists_available_ones():
    with pytest.raises(TargetError) as info:
        load_target("loihi3")
    message = str(info.value)
    assert "'loihi3'" in message
    for name in SHIPPED:
        assert name in message


def test_missing_target_file_is_a_target_error(tmp_path):
    with pytest.raises(TargetError, match="does not exist"):
        load_target(tmp_path / "nowhere.toml")


def test_dataclasses_validate_when_built_in_code():
    good = load_target("loihi2-sim")
    with pytest.raises(TargetError, match="conv_weight_min"):
        dataclasses.replace(good.numerics, conv_weight_min=127, conv_weight_max=-128)
    with pytest.raises(TargetError, match="lava_run_config"):
        dataclasses.replace(good, lava_run_config=None)
    assert isinstance(dataclasses.replace(good, description="x"), Target)
