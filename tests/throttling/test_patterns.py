"""URL-pattern matching: which outbound URLs a configuration covers."""

from __future__ import annotations

import pytest

from app.throttling import patterns

TABLE = [
    # pattern, url, covered
    ("https://api.example.org/data/2.5/*", "https://api.example.org/data/2.5/weather", True),
    ("https://api.example.org/data/2.5/*", "https://api.example.org/data/2.5/a/b/c", True),
    ("https://api.example.org/data/2.5/*", "https://api.example.org/data/2.5/", True),
    ("https://api.example.org/data/2.5/*", "https://api.example.org/data/2.5", False),
    ("https://api.example.org/data/2.5/*", "https://api.example.org/data/3.0/weather", False),
    ("https://api.example.org/data/2.5/*", "https://api.example.org/data/2x5/weather", False),
    ("https://api.example.org/data/2.5/*", "https://API.Example.ORG/data/2.5/x", True),
    ("https://api.example.org/data/2.5/*", "http://api.example.org/data/2.5/x", False),
    ("https://api.example.org/data/2.5/*", "https://other.example.org/data/2.5/x", False),
    ("https://api.example.org/data/2.5/*", "https://api.example.org:443/data/2.5/x", True),
    ("https://api.example.org/data/2.5/*", "https://api.example.org:8443/data/2.5/x", False),
    # Without a query in the pattern, the URL's query does not matter.
    ("https://api.example.org/data/2.5/*", "https://api.example.org/data/2.5/x?q=1&units=metric", True),
    # An exact path.
    ("https://api.example.org/v2/order", "https://api.example.org/v2/order", True),
    ("https://api.example.org/v2/order", "https://api.example.org/v2/order/42", False),
    ("https://api.example.org/v2/order", "https://api.example.org/v2/orders", False),
    # Wildcards inside the path.
    ("https://api.example.org/v2/*/items", "https://api.example.org/v2/order/items", True),
    ("https://api.example.org/v2/*/items", "https://api.example.org/v2/a/b/items", True),
    ("https://api.example.org/v2/*/items", "https://api.example.org/v2/order/items/1", False),
    ("https://api.example.org/v2/order*", "https://api.example.org/v2/orders", True),
    ("https://api.example.org/*", "https://api.example.org/", True),
    ("https://api.example.org", "https://api.example.org/", True),
    # Ports and loopback hosts (the sandbox partner in tests).
    ("http://127.0.0.1:8123/v2/*", "http://127.0.0.1:8123/v2/product-list?limit=5", True),
    ("http://127.0.0.1:8123/v2/*", "http://127.0.0.1:8124/v2/product-list", False),
    ("http://example.org:80/*", "http://example.org/a", True),
    # A pattern with a query matches the query too.
    ("https://api.example.org/search?q=*", "https://api.example.org/search?q=abc", True),
    ("https://api.example.org/search?q=*", "https://api.example.org/search?lang=en", False),
    # Regex metacharacters are literal.
    ("https://api.example.org/a+b/(x)/*", "https://api.example.org/a+b/(x)/1", True),
    ("https://api.example.org/a+b/*", "https://api.example.org/aab/1", False),
]


@pytest.mark.parametrize(("pattern", "url", "covered"), TABLE)
def test_matching_table(pattern: str, url: str, covered: bool) -> None:
    assert patterns.parse(pattern).matches(url) is covered


@pytest.mark.parametrize(
    ("pattern", "code"),
    [
        ("api.example.org/data/*", 104),
        ("/data/2.5/*", 104),
        ("ftp://api.example.org/*", 104),
        ("https://", 104),
        ("https://user:pw@api.example.org/*", 104),
        ("https://api.example.org/a b", 104),
        ("https://api.example.org:99999/*", 104),
        ("", 104),
        ("https://*.example.org/*", 105),
        ("https://api.example.*/x", 105),
        ("https://*/x", 105),
    ],
)
def test_invalid_patterns(pattern: str, code: int) -> None:
    with pytest.raises(patterns.PatternError) as raised:
        patterns.parse(pattern)
    assert raised.value.code == code


def test_a_malformed_outbound_url_matches_nothing() -> None:
    assert not patterns.parse("https://api.example.org/*").matches("https://api.example.org:bad/x")
