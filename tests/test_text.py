"""The one way numbers, credit, money, sizes and durations are written."""

import pytest

from shark_nb import pricing, text

UNKNOWN_VALUES = [None, float("nan"), float("inf"), float("-inf"), "5000", True, False, object()]


@pytest.mark.parametrize("value, expected", [
    (0, "0"), (1, "1"), (106.0, "106"), (10_000, "10,000"), (1234.5, "1,234.5"), (0.0272, "0.0272"),
    (27.2, "27.2"), (422.4, "422.4"), (1_000_000.25, "1,000,000.25"), (-3.25, "-3.25"), (-0.00001, "-0.00001"),
    (0.00004, "0.00004"), (0.0000123, "0.000012"), (0.123456, "0.1235"), (-0.0, "0"),
])
def test_number(value, expected):
    assert text.number(value) == expected


@pytest.mark.parametrize("value, expected", [
    (5000, "5,000 credit"), (1, "1 credit"), (0, "0 credit"), (2.5, "2.5 credit"), (422.4, "422.4 credit"),
    (1_234_567, "1,234,567 credit"), (-300, "-300 credit"), (0.0272, "0.0272 credit"),
])
def test_credit(value, expected):
    assert text.credit(value) == expected


@pytest.mark.parametrize("value, expected", [
    (0.5, "$0.50"), (0.05, "$0.05"), (1, "$1.00"), (1234.5, "$1,234.50"), (0.01, "$0.01"),
    (0.0099999, "$0.01"), (0.0027, "$0.0027"), (0.00422, "$0.0042"), (0.001, "$0.001"), (0.0001, "$0.0001"),
    (0.00005, "$0.00005"), (0.0000123, "$0.000012"), (0, "$0.00"), (-0.5, "-$0.50"), (-0.0027, "-$0.0027"),
    (0.125, "$0.12"), (2.5, "$2.50"),
])
def test_usd_whole_cents_from_one_cent_up_four_decimals_below(value, expected):
    assert text.usd(value) == expected


@pytest.mark.parametrize("credit, expected", [
    (5000, "$0.50"), (10_000, "$1.00"), (25_000, "$2.50"), (422.4, "$0.04"), (27.2, "$0.0027"),
    (100, "$0.01"), (99, "$0.0099"), (1, "$0.0001"), (0.5, "$0.00005"), (0, "$0.00"),
])
def test_usd_of_credit(credit, expected):
    assert text.usd_of_credit(credit) == expected


@pytest.mark.parametrize("credit, expected", [
    (5000, "5,000 credit ($0.50)"), (422.4, "422.4 credit ($0.04)"), (0, "0 credit ($0.00)"),
    (123_456, "123,456 credit ($12.35)"), (-250, "-250 credit (-$0.03)"), (-50, "-50 credit (-$0.005)"),
])
def test_money_is_credit_with_its_dollar_value(credit, expected):
    assert text.money(credit) == expected


def test_five_thousand_credit_reads_the_same_everywhere():
    assert text.money(5000) == "5,000 credit ($0.50)"
    assert text.usd(pricing.credits_to_usd(5000)) == text.usd_of_credit(5000) == "$0.50"


@pytest.mark.parametrize("value", UNKNOWN_VALUES)
@pytest.mark.parametrize("fn", [text.number, text.credit, text.usd, text.usd_of_credit, text.money, text.duration])
def test_unknown_is_the_word_unknown_never_zero(fn, value):
    assert fn(value) == "unknown"


def test_credits_per_usd_agrees_with_pricing():
    assert text.CREDITS_PER_USD == pricing.CREDITS_PER_USD


@pytest.mark.parametrize("n, word, expected", [(1, "image", "1 image"), (0, "image", "0 images"),
                                               (3, "call", "3 calls"), (1204, "call", "1,204 calls"),
                                               (2, "entry", "2 entries")])
def test_count(n, word, expected):
    assert text.count(n, word, "entries" if word == "entry" else None) == expected


@pytest.mark.parametrize("n, expected", [(0, "0 B"), (812, "812 B"), (1023, "1023 B"), (1024, "1 KB"),
                                         (97_280, "95 KB"), (2 * 1024 ** 2, "2.0 MB"),
                                         (int(1.5 * 1024 ** 3), "1.5 GB")])
def test_bytes_matches_display_human_bytes(n, expected):
    from shark_nb.display import human_bytes

    assert text.bytes_(n) == expected
    if n < 1024 ** 3:
        assert human_bytes(n) == expected


@pytest.mark.parametrize("seconds, expected", [(0, "0.0 s"), (0.44, "0.4 s"), (12.25, "12.2 s"), (59.9, "59.9 s"),
                                               (59.96, "1 min 00 s"), (60, "1 min 00 s"), (125, "2 min 05 s"),
                                               (3599.4, "59 min 59 s"), (3600, "1 h 00 min"),
                                               (3725, "1 h 02 min"), (-1, "unknown")])
def test_duration(seconds, expected):
    assert text.duration(seconds) == expected
