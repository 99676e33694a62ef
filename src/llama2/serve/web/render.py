"""Markdown of model answers -> safe HTML, on the server: markdown-it-py (CommonMark with tables and
strikethrough, raw HTML off), pygments for code, and nh3 (ammonia) as the last word on what a
browser may receive.

Why on the server rather than a vendored browser library: one renderer for the live page, the
reloaded history and anything else that shows an answer; one sanitizer, in Python where it is
tested; no third-party script in the page, so the Content-Security-Policy stays `script-src 'self'`
with nothing but our own two files. Raw HTML in an answer is shown as text (markdown-it escapes it),
and even if a renderer bug let a tag through, nh3 keeps only the tags, attributes, classes and URL
schemes listed below.
"""

from __future__ import annotations

import functools
import html

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

LIGHT_STYLE, DARK_STYLE = "default", "github-dark"
_CODE_CLASSES = {name for name in STANDARD_TYPES.values() if name}
_TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre", "blockquote",
         "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "span"}
# No style attributes: the page's CSP forbids inline styles, so table alignment is dropped here.
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "pre": {"data-lang"}}


@functools.cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight}).enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_link)
    return md


def _highlight(code: str, language: str, _attrs: str) -> str:
    """A fenced block with a known language, highlighted (`<pre>` as is: markdown-it keeps it);
    "" for an unknown one, which markdown-it then escapes and wraps itself."""
    try:
        lexer = get_lexer_by_name(language.strip()) if language.strip() else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return ""
    spans = highlight(code, lexer, HtmlFormatter(nowrap=True))
    name = html.escape(lexer.aliases[0] if lexer.aliases else lexer.name)
    return f'<pre class="hl" data-lang="{name}"><code>{spans}</code></pre>'


def _image_as_link(renderer, tokens, index, options, env) -> str:
    """Images become links to them: an answer must not make the browser fetch a URL by itself."""
    token = tokens[index]
    src = html.escape(token.attrGet("src") or "")
    alt = html.escape(renderer.renderInlineAsText(token.children or [], options, env) or src)
    return f'<a href="{src}">{alt}</a>'


def render_markdown(text: str) -> str:
    """Sanitized HTML for an answer (text that is Markdown or not)."""
    return sanitize(_markdown().render(text))


def sanitize(html_text: str) -> str:
    """Only the tags, attributes, classes and URL schemes an answer needs; everything else removed."""
    return nh3.clean(
        html_text,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        allowed_classes={"span": _CODE_CLASSES, "pre": {"hl"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


@functools.cache
def highlight_css() -> str:
    """Pygments colours for code: the light style, and the dark one for the dark theme (chosen, or
    the system's when none is chosen)."""
    def rules(style: str, scope: str) -> str:
        return "\n".join(HtmlFormatter(style=style).get_token_style_defs(f"{scope} .md .hl".strip()))

    light, dark_chosen = rules(LIGHT_STYLE, ""), rules(DARK_STYLE, '[data-theme="dark"]')
    dark_system = rules(DARK_STYLE, ':root:not([data-theme="light"])')
    return f"{light}\n{dark_chosen}\n@media (prefers-color-scheme: dark) {{\n{dark_system}\n}}\n"
