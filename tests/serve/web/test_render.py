"""Answers as HTML: Markdown rendered, code highlighted by pygments, and nothing executable left — from
the Markdown path and from raw HTML handed straight to the sanitizer."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from llama2.serve.web.render import highlight_css, render_markdown, sanitize

ATTACKS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    '<svg onload="alert(1)"><circle r="1"/></svg>',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<iframe src="https://example.com"></iframe>',
    '<style>body{display:none}</style>',
    '<form action="https://evil.example"><input name="password"></form>',
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<span class="k" onclick="alert(1)">x</span>',
    '<pre class="hl evil" data-lang="x" onmouseover="alert(1)">x</pre>',
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<object data="x.swf"></object><embed src="x.swf">',
    '<base href="https://evil.example/">',
    '<meta http-equiv="refresh" content="0;url=https://evil.example">',
]
SAFE_TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
             "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "span"}


class Elements(HTMLParser):
    """Every element and attribute a browser would build from the HTML (text, escaped or not, is inert)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def assert_inert(html: str) -> None:
    for tag, attrs in Elements(html).found:
        assert tag in SAFE_TAGS, (tag, html)
        for name, value in attrs.items():
            assert not name.startswith("on") and name != "style", (tag, name, html)
            if name == "href":  # web links and relative ones (this site) only
                assert urlsplit(value).scheme in ("", "http", "https", "mailto"), (value, html)
            if name == "class":
                assert tag in ("span", "pre"), (tag, html)


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_attack_survives_the_markdown_path(attack):
    assert_inert(render_markdown(f"Sure! {attack}\n\n{attack}\n\n* {attack}\n\n[x]({attack[:40]})"))


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_attack_survives_the_sanitizer_alone(attack):
    assert_inert(sanitize(f"<p>{attack}</p><p>{attack.upper()}</p>"))


def test_markdown_renders_and_code_is_highlighted():
    out = render_markdown("# Title\n\nSome **bold** and `code`.\n\n```python\ndef f(x):\n    return x  # hi\n```\n\n"
                          "| a | b |\n|---|--:|\n| 1 | 2 |\n\n~~gone~~ [site](https://example.com)")
    assert "<h1>Title</h1>" in out and "<strong>bold</strong>" in out and "<code>code</code>" in out
    assert '<pre class="hl" data-lang="python"><code><span class="k">def</span>' in out
    assert '<span class="c1"># hi</span>' in out
    assert "<table>" in out and "<td>2</td>" in out  # alignment is dropped: no inline styles under the CSP
    assert "<s>gone</s>" in out
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">site</a>' in out


def test_unknown_languages_are_plain_escaped_code_and_images_become_links():
    out = render_markdown("```nosuchlanguage\n<b>x</b>\n```\n\n![a llama](https://example.com/llama.png)")
    assert "<pre><code>&lt;b&gt;x&lt;/b&gt;\n</code></pre>" in out
    assert '<a href="https://example.com/llama.png" rel="noopener noreferrer nofollow">a llama</a>' in out
    assert "<img" not in out


def test_code_colours_follow_the_theme():
    css = highlight_css()
    assert ".md .hl .k {" in css and '[data-theme="dark"] .md .hl .k {' in css
    assert "@media (prefers-color-scheme: dark)" in css and ':root:not([data-theme="light"]) .md .hl .k' in css
