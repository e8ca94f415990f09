"""The conditioning-text rules (schemas.text): normalisation, bad text, controls as text, domain prefix."""

import numpy as np
import pytest

from unisim.schemas import text as tx


def test_normalisation_is_nfc_with_single_spaces():
    assert tx.normalize_text("  push\tthe\n\nre\u0301d  block\x00 left ") == "push the r\u00e9d block left"


@pytest.mark.parametrize("raw", [b"\xff\xfe push", b"push \xc3"])
def test_bytes_that_are_not_utf8_are_rejected_with_a_reason(raw):
    with pytest.raises(tx.TextError) as err:
        tx.decode_text(raw)
    assert err.value.reason == "invalid_text_encoding"


def test_lone_surrogates_and_over_long_text_are_rejected():
    leniently_decoded = b"push \xff".decode("utf-8", errors="surrogateescape")
    with pytest.raises(tx.TextError) as err:
        tx.normalize_text(leniently_decoded)
    assert err.value.reason == "invalid_text_encoding"
    with pytest.raises(tx.TextError) as err:
        tx.normalize_text("a" * 41, max_chars=40)
    assert err.value.reason == "text_too_long"
    assert tx.normalize_text("a" * 40, max_chars=40) == "a" * 40


def test_action_rows_are_the_controls_that_produce_the_target_frames():
    assert tx.action_rows(16, 0) == slice(0, 15)  # first clip: frames 1..15 come from rows 0..14
    assert tx.action_rows(13, 4) == slice(3, 12)  # targets 4..12 come from rows 3..11
    assert tx.action_rows(1, 0) == slice(0, 0)


def test_controls_text_is_segment_means_rounded_without_negative_zero():
    controls = np.array([[0.01, -0.001], [0.03, -0.002], [0.10, 0.5], [0.30, 0.7]], np.float32)
    assert tx.controls_text(controls, steps=2, decimals=2) == "0.02 0.00, 0.20 0.60"
    assert tx.controls_text(controls, steps=10, decimals=1) == "0.0 0.0, 0.0 0.0, 0.1 0.5, 0.3 0.7"
    assert tx.controls_text(np.zeros((0, 2)), steps=4, decimals=2) == ""
    assert tx.controls_text(np.zeros((5, 0)), steps=4, decimals=2) == ""


def test_conditioning_text_joins_prefix_text_and_controls():
    controls = np.array([[0.0, 0.0], [0.1, -0.2], [0.3, -0.4]], np.float32)
    spec = tx.ConditioningSpec(domain_prefix="language_table", controls_as_text=True, controls_text_steps=2)
    # context 1: rows 0..1 act on the targets (frames 1, 2)
    expected = "language_table: push left controls: 0.00 0.00, 0.10 -0.20"
    assert tx.conditioning_text(spec, "push left", controls, 1) == expected
    assert tx.conditioning_text(tx.ConditioningSpec(), "push left", controls, 1) == "push left"
    assert tx.conditioning_text(spec, "", controls, 1) == "language_table: controls: 0.00 0.00, 0.10 -0.20"
    assert tx.conditioning_text(tx.ConditioningSpec(domain_prefix="habitat"), "", None) == "habitat"
    assert tx.conditioning_text(tx.ConditioningSpec(), "", None) == ""
    single = np.zeros((1, 2), np.float32)  # an image record has no action rows: no controls text
    assert tx.conditioning_text(spec, "a cat", single, 0) == "language_table: a cat"


def test_spec_round_trips_and_refuses_an_unnormalised_prefix():
    spec = tx.ConditioningSpec(domain_prefix="hm3d", controls_as_text=True, controls_text_steps=3)
    assert tx.ConditioningSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="prefix"):
        tx.ConditioningSpec(domain_prefix=" hm3d\n")
