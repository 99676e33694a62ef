"""scripts/build_corpus.py's cleaning rules, above all the licence filter on GCIDE (no apt needed)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def build(load_script):
    return load_script("build_corpus")


WEBSTER = """Lapidify \\La*pid"i*fy\\, v. t. [imp. & p. p. {Lapidified}; p. pr.
   & vb. n. {Lapidifying} ([=a]*pid"[i^]*f[imac]`[i^]ng).] [Cf. F. lapidifier.]
   To convert into stone; A["e]ronautic [ae]ther.
   [1913 Webster]

   2. Something newer.
      [Webster 1913 Suppl.]
"""


@pytest.mark.parametrize("entry, kept", [
    (WEBSTER, True),
    ("Byte \\Byte\\, n.\n   Eight bits.\n   [WordNet 1.5]\n", False),
    ("Word \\Word\\, n.\n   Old sense.\n   [1913 Webster]\n\n   New sense.\n   [PJC]\n", False),
    ("Word \\Word\\, n.\n   Old sense.\n   [1913 Webster +PJC]\n", False),
    ("Word \\Word\\, n.\n   Old sense, see note [RDH] here.\n   [1913 Webster]\n", False),  # inline contributor mark
    ("Word \\Word\\, n.\n   Untagged text.\n", False),
])
def test_only_webster_1913_entries_are_kept(build, entry, kept):
    assert build._is_webster_1913(entry) is kept


def test_gcide_markup_is_cleaned(build):
    assert build._clean_gcide(WEBSTER) == (
        "Lapidify, v. t. [imp. & p. p. Lapidified; p. pr.\n"
        "& vb. n. Lapidifying.] [Cf. F. lapidifier.]\n"
        "To convert into stone; Aëronautic æther.\n\n"
        "2. Something newer."
    )


def test_entries_are_grouped_into_documents_of_about_the_limit(build):
    entries = [f"entry {i} " + "x" * 40 for i in range(10)] + ["  ", ""]
    documents = list(build.group(entries, limit=100))
    assert [d.count("entry") for d in documents] == [2, 2, 2, 2, 2]
    assert "\n\n".join(documents) == "\n\n".join(entries[:10])


def test_sample_takes_listed_books_then_the_devil(build):
    records = [{"text": "Exodus 1\n\nx", "source": "kjv"}, {"text": "Genesis 1\n\ny", "source": "kjv"},
               {"text": "ABASEMENT, n. z", "source": "devil"}, {"text": "a" * 500, "source": "devil"}]
    assert build.sample_records(records, budget=200) == records[1:3]
