"""The style library under concurrent writers (issue 30, finding 5): a name is taken once, and hiding and unhiding
at once never loses the style, through the engine interface as the server's worker threads call it (over HTTP:
tests/server/test_stores_http.py)."""

from __future__ import annotations

import threading

from PIL import Image

from engine.errors import BadInput
from tests.conftest import at_once, png


def swatch(i: int) -> bytes:
    return png(Image.new("RGB", (64, 64), (30 * i % 256, 90, 200 - 20 * i)))


def test_eight_parallel_adds_of_one_name_store_one_and_refuse_the_rest_in_one_line(fresh_engine):
    styles = fresh_engine.styles
    before = len(styles.list(include_hidden=True))
    got = at_once([lambda i=i: styles.add(swatch(i), "Teak oil", f"try {i}") for i in range(8)])
    added = [g for g in got if not isinstance(g, Exception)]
    refused = [g for g in got if isinstance(g, Exception)]
    assert len(added) == 1, got
    assert len(refused) == 7 and all(isinstance(e, BadInput) for e in refused), refused
    assert all("a style named 'Teak oil' already exists" in str(e) and "\n" not in str(e) for e in refused)
    named = [s for s in styles.list(include_hidden=True) if s.name.lower() == "teak oil"]
    assert [s.id for s in named] == [added[0].id]
    assert len(styles.list(include_hidden=True)) == before + 1


def test_parallel_hide_and_unhide_never_lose_the_style(fresh_engine):
    styles = fresh_engine.styles
    mine = styles.add(swatch(1), "Walnut stain")
    shipped = styles.list()[0]
    for round_ in range(5):
        for style in (mine, shipped):
            calls = [lambda s=style, h=h: styles.hide(s.id, h) for h in (True, False) * 3]
            got = at_once(calls)
            assert not [g for g in got if isinstance(g, Exception)], got
            found = [s for s in styles.list(include_hidden=True) if s.id == style.id]
            assert len(found) == 1, f"round {round_}: '{style.name}' is gone after a parallel hide/unhide"
            visible = {s.id for s in styles.list()}
            assert (style.id in visible) != found[0].hidden  # in exactly one of the two collections
            # and it can still be searched for or hidden as the flag says
            styles.hide(style.id, False)
            assert style.id in {s.id for s in styles.list()}


def test_another_process_holding_the_store_holds_an_add_back(fresh_engine):
    """The Studio, a server and a CLI command may share one data folder: a writer in another process holds the
    store's lock file (an flock, taken here through a file handle of its own, as another process would) and an add
    waits for it instead of deciding on what it read before."""
    import fcntl

    styles = fresh_engine.styles
    guard = fresh_engine.retrieval.library.writing
    assert guard.path is not None and guard.path.parent == fresh_engine.data_dir / "chroma"
    done = threading.Event()
    with open(guard.path, "a+b") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        adding = threading.Thread(target=lambda: (styles.add(swatch(2), "Birch ply"), done.set()))
        adding.start()
        assert not done.wait(1.5), "the add went ahead while another process held the store"
        fcntl.flock(other, fcntl.LOCK_UN)
    adding.join(60)
    assert done.is_set() and [s.name for s in styles.list()].count("Birch ply") == 1
