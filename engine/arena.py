"""The Arena: blind A/B votes between two run sets over the same sketches and prompts, kept in SQLite, with
the win rate, a two-sided binomial test and how often people agree with the metrics."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from .errors import BadInput, NotFound
from .evaluation import HIGHER_IS_BETTER, METRICS, run_set
from .history import SqliteStore
from .schema import GenerateRequest, Progress

SCHEMA = """
CREATE TABLE IF NOT EXISTS contests (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    a_set TEXT NOT NULL,
    b_set TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pairs (
    contest_id TEXT NOT NULL REFERENCES contests(id),
    position INTEGER NOT NULL,          -- the shown order, shuffled once at creation
    match_key TEXT NOT NULL,            -- sketch · prompt · seed the two images share
    a TEXT NOT NULL,                    -- JSON: run_id, index, path, metrics
    b TEXT NOT NULL,
    left_side TEXT NOT NULL CHECK (left_side IN ('A', 'B')),  -- which set is shown on the left
    PRIMARY KEY (contest_id, position)
);
CREATE TABLE IF NOT EXISTS votes (
    contest_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),
    voted_at TEXT NOT NULL,
    PRIMARY KEY (contest_id, position)
);
"""

CHOICES = {"left", "right", "tie"}


def match_key(row: dict[str, Any]) -> str:
    return f"{row['sketch_hash'] or 'text'}|{row['prompt']}|{row['seed']}"


class Arena(SqliteStore):
    """Contests, their pairs and the votes, in `arena.sqlite`."""

    SCHEMA = SCHEMA

    def create(
        self, a_rows: list[dict[str, Any]], b_rows: list[dict[str, Any]], rng: random.Random | None = None
    ) -> dict[str, Any]:
        """Pair the images of set A and set B that share sketch, prompt and seed; shuffle the pairs and
        draw, per pair, which side A is shown on. Both draws are stored, so the order survives restarts."""
        if not a_rows or not b_rows:
            raise BadInput("pick two run sets with images in each")
        a_set, b_set = a_rows[0]["set"], b_rows[0]["set"]
        if a_set == b_set:
            raise BadInput("pick two different run sets")
        b_by_key: dict[str, dict[str, Any]] = {}
        for r in b_rows:
            b_by_key.setdefault(match_key(r), r)
        pairs = [(match_key(r), r, b_by_key[match_key(r)]) for r in a_rows if match_key(r) in b_by_key]
        pairs = list({key: (key, a, b) for key, a, b in pairs}.values())  # one pair per shared key
        if not pairs:
            raise BadInput(
                f"'{a_set}' and '{b_set}' share no sketch, prompt and seed; render both settings over the same inputs"
            )
        return self._insert(a_set, b_set, [(key, _image(a), _image(b)) for key, a, b in pairs], rng)

    def create_retrieval(
        self,
        a_set: str,
        b_set: str,
        results: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]],
        rng: random.Random | None = None,
    ) -> dict[str, Any]:
        """A blind contest of two retrieval models: per query, each model's top styles (id, name, score)."""
        results = [(q, a, b) for q, a, b in results if a and b]
        if not results:
            raise BadInput("no query retrieved any style; add styles to the library or type other queries")
        pairs = [
            (f"retrieval|{q}|top{len(a)}", {"query": q, "styles": a}, {"query": q, "styles": b}) for q, a, b in results
        ]
        return self._insert(a_set, b_set, pairs, rng)

    def _insert(self, a_set: str, b_set: str, pairs: list[tuple[str, dict, dict]], rng) -> dict[str, Any]:
        """Store a contest: the pairs shuffled once, and per pair the side A is shown on, drawn once."""
        rng = rng or random.SystemRandom()
        pairs = list(pairs)
        rng.shuffle(pairs)
        contest_id = uuid.uuid4().hex[:12]
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with closing(self._connect()) as db, db:
            db.execute("INSERT INTO contests VALUES (?,?,?,?)", (contest_id, now, a_set, b_set))
            db.executemany(
                "INSERT INTO pairs VALUES (?,?,?,?,?,?)",
                [
                    (contest_id, i, key, json.dumps(a), json.dumps(b), rng.choice("AB"))
                    for i, (key, a, b) in enumerate(pairs)
                ],
            )
        return self.contest(contest_id)

    def contests(self) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM contests ORDER BY created_at DESC, rowid DESC")]
        return [self.contest(i) for i in ids]

    def contest(self, contest_id: str) -> dict[str, Any]:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM contests WHERE id = ?", (contest_id,)).fetchone()
            if row is None:
                raise NotFound(f"no contest '{contest_id}'")
            n = db.execute("SELECT COUNT(*) FROM pairs WHERE contest_id = ?", (contest_id,)).fetchone()[0]
            voted = db.execute("SELECT COUNT(*) FROM votes WHERE contest_id = ?", (contest_id,)).fetchone()[0]
        return {**dict(row), "pairs": n, "voted": voted}

    def pairs(self, contest_id: str) -> list[dict[str, Any]]:
        """Every pair in shown order, with its vote (None until voted)."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT p.*, v.choice FROM pairs p LEFT JOIN votes v"
                " ON v.contest_id = p.contest_id AND v.position = p.position"
                " WHERE p.contest_id = ? ORDER BY p.position",
                (contest_id,),
            ).fetchall()
        return [_pair(r) for r in rows]

    def next_pair(self, contest_id: str) -> dict[str, Any] | None:
        """The first pair without a vote, as it is shown: `left` and `right` images, no set names."""
        for p in self.pairs(contest_id):
            if p["choice"] is None:
                return p
        return None

    def vote(self, contest_id: str, position: int, choice: str) -> str:
        """Record left / right / tie for one pair as A, B or tie; voting again on a pair replaces the vote."""
        if choice not in CHOICES:
            raise BadInput(f"a vote is one of {sorted(CHOICES)} (got '{choice}')")
        with closing(self._connect()) as db, db:
            row = db.execute(
                "SELECT left_side FROM pairs WHERE contest_id = ? AND position = ?", (contest_id, position)
            ).fetchone()
            if row is None:
                raise NotFound(f"contest '{contest_id}' has no pair {position}")
            left = row["left_side"]
            stored = "tie" if choice == "tie" else left if choice == "left" else ("B" if left == "A" else "A")
            db.execute(
                "INSERT OR REPLACE INTO votes VALUES (?,?,?,?)",
                (contest_id, position, stored, datetime.now(UTC).isoformat(timespec="seconds")),
            )
        return stored

    def undo(self, contest_id: str) -> int | None:
        """Take back the latest vote; returns its pair's position."""
        with closing(self._connect()) as db, db:
            row = db.execute(
                "SELECT position FROM votes WHERE contest_id = ? ORDER BY rowid DESC LIMIT 1",
                (contest_id,),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM votes WHERE contest_id = ? AND position = ?", (contest_id, row["position"]))
        return row["position"]

    def stats(self, contest_id: str) -> dict[str, Any]:
        """Win rate of A over decisive votes, tie rate over all votes, the two-sided binomial test of
        A's wins against 50 % (scipy), and per metric how often the voted winner also scores better."""
        from scipy.stats import binomtest

        pairs = [p for p in self.pairs(contest_id) if p["choice"] is not None]
        a_wins = sum(p["choice"] == "A" for p in pairs)
        b_wins = sum(p["choice"] == "B" for p in pairs)
        ties = len(pairs) - a_wins - b_wins
        decisive = a_wins + b_wins
        out: dict[str, Any] = {
            "votes": len(pairs),
            "a_wins": a_wins,
            "b_wins": b_wins,
            "ties": ties,
            "win_rate_a": a_wins / decisive if decisive else None,
            "tie_rate": ties / len(pairs) if pairs else None,
            "p_value": binomtest(a_wins, decisive, 0.5, alternative="two-sided").pvalue if decisive else None,
            "agreement": {},
        }
        for metric in METRICS:
            agree = compared = 0
            for p in pairs:
                if p["choice"] == "tie":
                    continue
                va, vb = p["a"].get("metrics", {}).get(metric), p["b"].get("metrics", {}).get(metric)
                if va is None or vb is None or va == vb:
                    continue
                metric_pick = "A" if (va > vb) == HIGHER_IS_BETTER[metric] else "B"
                compared += 1
                agree += metric_pick == p["choice"]
            out["agreement"][metric] = {"compared": compared, "rate": agree / compared if compared else None}
        return out


def _image(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "index": row["index"],
        "image": row["image"],
        "metrics": {m: row.get(m) for m in METRICS},
    }


def _pair(row: sqlite3.Row) -> dict[str, Any]:
    a, b = json.loads(row["a"]), json.loads(row["b"])
    left, right = (a, b) if row["left_side"] == "A" else (b, a)
    return {
        "position": row["position"],
        "match_key": row["match_key"],
        "a": a,
        "b": b,
        "left_side": row["left_side"],
        "left": left,
        "right": right,
        "choice": row["choice"],
    }


def render_settings(
    pipeline,
    runs: list[dict[str, Any]],
    settings: dict[str, dict[str, Any]],
    sketch_of: Callable[[str], bytes | None],
    batch: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, str]:
    """Render the inputs of `runs` (sketch, prompt, seeds, style) once per named setting, e.g.
    {"A": {"structure_strength": 0.8}, "B": {"structure_strength": 1.6}}, into one batch: two run sets
    over the same inputs, ready for `Arena.create`. Returns each label's run set name."""
    if not runs:
        raise BadInput("pick the runs whose sketches and prompts both settings should render")
    batch = batch or f"arena-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    # build (and so validate) every request before the first render
    jobs = [
        GenerateRequest.from_metadata(
            run["metadata"], sketch_of(run["id"]), **changes, source="arena", batch=batch, label=label
        )
        for run in runs
        for label, changes in settings.items()
    ]
    started = time.perf_counter()
    for i, request in enumerate(jobs):
        if on_progress:
            on_progress(Progress("render", i, len(jobs), time.perf_counter() - started))
        pipeline.generate(request, cancel=cancel)
    if on_progress:
        on_progress(Progress("render", len(jobs), len(jobs), time.perf_counter() - started))
    return {label: run_set({"batch": batch, "label": label}) for label in settings}
