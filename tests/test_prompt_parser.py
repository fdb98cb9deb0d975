"""A1111 prompt syntax: the outputs A1111 documents (its doctests) and the corners users hit."""

import pytest

from webui.generation.prompt_parser import (
    BREAK,
    ExtraNetworkCall,
    PromptError,
    extract_extra_networks,
    parse_prompt_attention,
)

# A1111's own doctests of parse_prompt_attention (modules/prompt_parser.py), bit-exact weights
A1111_DOCTESTS = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), A1111_DOCTESTS)
def test_a1111_documented_outputs_bit_for_bit(text, expected):
    assert parse_prompt_attention(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a (b:1.5) [c]", [("a ", 1.0), ("b", 1.5), (" ", 1.0), ("c", 0.9090909)]),
        ("((a))", [("a", 1.21)]),
        ("[[a]]", [("a", 1 / 1.21)]),
        ("(a:1.3)", [("a", 1.3)]),
        ("(a: 1.3 )", [("a", 1.3)]),  # A1111 >= 1.6 allows spaces around the weight
        ("(a:-0.5)", [("a", -0.5)]),
        ("((a:2) b)", [("a", 2.2), (" b", 1.1)]),
        ("[(a:2)]", [("a", 2 / 1.1)]),
        ("(a:abc)", [("a:abc", 1.1)]),  # not a number: the colon is text, the parens still emphasise
        ("a ]b)", [("a ]b)", 1.0)]),  # closing brackets without an opening one are text
        ("[unbalanced (x", [("unbalanced ", 1 / 1.1), ("x", 1.0)]),  # 1.1 * (1/1.1) == 1.0 exactly here
        ("\\\\ and \\[x\\]", [("\\ and [x]", 1.0)]),
        ("a\\b", [("ab", 1.0)]),  # a lone backslash is dropped, as in A1111
        ("", [("", 1.0)]),
        ("(a:1.0)", [("a", 1.0)]),
    ],
)
def test_emphasis(text, expected):
    got = parse_prompt_attention(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_break_splits_and_eats_surrounding_spaces():
    assert parse_prompt_attention("a cat BREAK a dog") == [("a cat", 1.0), BREAK, ("a dog", 1.0)]
    assert BREAK == ("BREAK", -1.0)
    assert parse_prompt_attention("aBREAKb BREAKfast") == [("aBREAKb BREAKfast", 1.0)]  # whole word only
    assert parse_prompt_attention("BREAK a") == [("", 1.0), BREAK, ("a", 1.0)]
    assert parse_prompt_attention("a (b) BREAK c") == [("a ", 1.0), ("b", 1.1), ("", 1.0), BREAK, ("c", 1.0)]


def test_break_inside_brackets_is_weighted_like_a1111():
    """A1111 multiplies the marker too; the chunker then no longer sees a BREAK (kept for parity)."""
    assert parse_prompt_attention("(a BREAK b)") == [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]


def test_malformed_weight_is_a_prompt_error_naming_it():
    with pytest.raises(PromptError, match=r"1\.2\.3"):
        parse_prompt_attention("a (cat:1.2.3)")
    assert issubclass(PromptError, ValueError)


def test_extra_network_tags_are_cut_and_returned_in_order():
    text, calls = extract_extra_networks("a cat <lora:x:0.8>")
    assert text == "a cat "
    assert calls == [ExtraNetworkCall("lora", ("x", "0.8"))]

    # A1111's docstring example (modules/extra_networks.py)
    text, calls = extract_extra_networks("1girl, <hypernet:agm:1.1> <extrasupernet:master:12:13:14> <hypernet:ray>")
    assert text == "1girl,   "
    assert calls == [
        ExtraNetworkCall("hypernet", ("agm", "1.1")),
        ExtraNetworkCall("extrasupernet", ("master", "12", "13", "14")),
        ExtraNetworkCall("hypernet", ("ray",)),
    ]


@pytest.mark.parametrize(
    ("prompt", "expected_calls"),
    [
        ("<lora:my style v2:1>", [ExtraNetworkCall("lora", ("my style v2", "1"))]),  # spaces in args are kept
        ("<lora:a::0.5>", [ExtraNetworkCall("lora", ("a", "", "0.5"))]),
        ("<not a tag> <lora> <:x> <lo-ra:x>", []),  # name must be \w+ and args non-empty
        ("(<lora:x:1>:1.2)", [ExtraNetworkCall("lora", ("x", "1"))]),
    ],
)
def test_extra_network_tag_shapes(prompt, expected_calls):
    text, calls = extract_extra_networks(prompt)
    assert calls == expected_calls
    if not expected_calls:
        assert text == prompt


def test_extra_network_call_is_a_value():
    a, b = ExtraNetworkCall("lora", ("x", "1")), ExtraNetworkCall("lora", ("x", "1"))
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.name = "other"  # type: ignore[misc]
