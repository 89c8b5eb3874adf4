"""The Arena's pairing, blind order, votes, statistics and persistence."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from scipy.stats import binomtest

from engine.arena import Arena
from engine.errors import BadInput
from tests.conftest import REPO


def rows(set_name, prompts, seeds=(1, 2), clip=20.0, offset=0):
    return [
        {
            "set": set_name,
            "run_id": f"{set_name}-{p}",
            "index": i,
            "image": f"{set_name}-{p}#{i}",
            "sketch_hash": f"h{p}",
            "prompt": f"prompt {p}",
            "seed": s,
            "clip_score": clip + offset * p,
            "style_similarity": None,
            "edge_f1": 0.5,
            "chamfer": 2.0,
        }
        for p in prompts
        for i, s in enumerate(seeds)
    ]


def test_pairs_match_sketch_prompt_and_seed_and_the_sides_are_drawn_and_recorded(tmp_path):
    arena = Arena(tmp_path / "arena.sqlite")
    a = rows("A", range(20))
    b = rows("B", range(5, 25))  # 15 shared prompts × 2 seeds
    contest = arena.create(a, b, rng=random.Random(3))
    assert contest["pairs"] == 30 and contest["voted"] == 0
    pairs = arena.pairs(contest["id"])
    assert {p["a"]["run_id"].split("-")[1] for p in pairs} == {str(p) for p in range(5, 20)}
    for p in pairs:
        assert p["a"]["run_id"].startswith("A-") and p["b"]["run_id"].startswith("B-")
        assert p["a"]["run_id"].split("-")[1] == p["b"]["run_id"].split("-")[1]  # same prompt
        shown = (p["left"], p["right"])
        assert shown == ((p["a"], p["b"]) if p["left_side"] == "A" else (p["b"], p["a"]))
    sides = [p["left_side"] for p in pairs]
    assert 5 < sides.count("A") < 25  # random per pair, not fixed
    order = [p["match_key"] for p in pairs]
    assert order != sorted(order)  # shuffled once
    assert [p["match_key"] for p in Arena(tmp_path / "arena.sqlite").pairs(contest["id"])] == order  # and kept


def test_votes_map_the_shown_side_to_its_set(tmp_path):
    arena = Arena(tmp_path / "arena.sqlite")
    contest = arena.create(rows("A", [1, 2]), rows("B", [1, 2]), rng=random.Random(0))
    first = arena.next_pair(contest["id"])
    stored = arena.vote(contest["id"], first["position"], "left")
    assert stored == first["left_side"]
    second = arena.next_pair(contest["id"])
    assert second["position"] != first["position"]
    assert arena.vote(contest["id"], second["position"], "right") == ("B" if second["left_side"] == "A" else "A")
    assert arena.undo(contest["id"]) == second["position"]
    assert arena.next_pair(contest["id"])["position"] == second["position"]
    assert arena.vote(contest["id"], second["position"], "tie") == "tie"


def test_stats_match_scipy_and_say_how_often_the_metrics_agree(tmp_path):
    arena = Arena(tmp_path / "arena.sqlite")
    # B's CLIP score is higher on prompts 1..; equal on prompt 0
    contest = arena.create(rows("A", range(12), seeds=(7,)), rows("B", range(12), seeds=(7,), offset=1))
    cid = contest["id"]
    want = {0: "A", 1: "A", 2: "A", 3: "tie"}  # by prompt; the rest: B
    for _ in range(12):
        p = arena.next_pair(cid)
        prompt = int(p["a"]["run_id"].split("-")[1])
        winner = want.get(prompt, "B")
        choice = "tie" if winner == "tie" else "left" if p["left_side"] == winner else "right"
        arena.vote(cid, p["position"], choice)
    s = arena.stats(cid)
    assert (s["votes"], s["a_wins"], s["b_wins"], s["ties"]) == (12, 3, 8, 1)
    assert s["win_rate_a"] == pytest.approx(3 / 11)
    assert s["tie_rate"] == pytest.approx(1 / 12)
    assert s["p_value"] == pytest.approx(binomtest(3, 11, 0.5).pvalue)
    # CLIP is higher for B on prompts 1..11 (10 decisive votes compared; prompt 0 is a metric tie)
    clip = s["agreement"]["clip_score"]
    assert clip["compared"] == 10 and clip["rate"] == pytest.approx(8 / 10)
    assert s["agreement"]["style_similarity"] == {"compared": 0, "rate": None}


def test_votes_survive_a_restart(tmp_path):
    path = tmp_path / "arena.sqlite"
    arena = Arena(path)
    cid = arena.create(rows("A", range(4)), rows("B", range(4)))["id"]
    for _ in range(5):
        p = arena.next_pair(cid)
        arena.vote(cid, p["position"], "left")
    code = (
        "import json, sys; from engine.arena import Arena; a = Arena(sys.argv[1]);"
        "print(json.dumps({'stats': a.stats(sys.argv[2]), 'contest': a.contest(sys.argv[2])}))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path), cid], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["contest"]["voted"] == 5 and got["stats"] == json.loads(json.dumps(arena.stats(cid)))


def test_bad_contests_and_votes_are_one_line(tmp_path):
    arena = Arena(tmp_path / "arena.sqlite")
    with pytest.raises(BadInput, match="two different run sets"):
        arena.create(rows("A", [1]), rows("A", [1]))
    with pytest.raises(BadInput, match="share no sketch, prompt and seed"):
        arena.create(rows("A", [1]), rows("B", [2]))
    with pytest.raises(BadInput, match="with images in each"):
        arena.create([], rows("B", [2]))
    cid = arena.create(rows("A", [1]), rows("B", [1]))["id"]
    with pytest.raises(BadInput, match="a vote is one of"):
        arena.vote(cid, 0, "A")
    with pytest.raises(BadInput, match="has no pair 9"):
        arena.vote(cid, 9, "left")
    with pytest.raises(BadInput, match="no contest 'nope'"):
        arena.contest("nope")
