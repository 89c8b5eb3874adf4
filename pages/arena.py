"""Arena: blind A/B votes between two run sets over the same sketches and prompts; people, not metrics."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.arena import match_key
from engine.errors import EngineError
from engine.evaluation import METRICS
from ui import jobs
from ui.gallery import set_name
from ui.jobs import job_panel
from ui.shared import engine_or_stop, md, output_thumbs, style_thumb

engine = engine_or_stop()
state = st.session_state

st.title("Arena")
st.caption(
    "Two run sets over the same sketches, prompts and seeds, one pair at a time, sides drawn at random and"
    " never named. Vote with the buttons or the keys **←** (left better), **→** (right better), **↓** (tie)."
)

rows = engine.history.rows(limit=5000)
by_set: dict[str, list[dict]] = {}
for r in rows:
    by_set.setdefault(r["set"], []).append(r)
contests = engine.arena.contests()


def on_create(a: str, b: str) -> None:
    state.pop("arena_error", None)
    try:
        contest = engine.arena.create(a, b)
    except EngineError as exc:
        state["arena_error"] = str(exc)
        return
    state["arena_contest"] = contest["id"]


def on_vote(contest_id: str, position: int, choice: str) -> None:
    engine.arena.vote(contest_id, position, choice)


def on_undo(contest_id: str) -> None:
    engine.arena.undo(contest_id)


def count(n: int, word: str) -> str:
    """ "1 pair", "4 pairs"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe(c: dict) -> str:
    return (
        f"{set_name(c['a_set'])}  vs  {set_name(c['b_set'])} · {c['voted']}/{c['pairs']} voted · {c['created_at'][:10]}"
    )


SETTINGS = {  # what a designer tunes between two settings: field → (label, min, max, step)
    "structure_strength": ("Structure strength", 0.0, 3.0, 0.1),
    "style_strength": ("Style strength", 0.0, 2.0, 0.1),
    "steps": ("Steps", 1, 150, 1),
    "guidance": ("Guidance", 0.0, 30.0, 0.5),
}


def on_render(inputs: str) -> None:
    """Render the inputs of a run set with setting A and with setting B, then open a comparison of the two."""
    state.pop("arena_error", None)
    settings = {
        side: {
            field: state[f"arena_{side}_{field}"] for field in SETTINGS if state[f"arena_{side}_{field}"] is not None
        }
        for side in ("A", "B")
    }
    try:
        jobs.start("arena_job", engine.arena.render(inputs, settings))
    except EngineError as exc:
        state["arena_error"] = str(exc)


def on_retrieval(adapter: str, queries: str) -> None:
    state.pop("arena_error", None)
    try:
        contest = engine.arena.retrieval_contest(adapter, queries.splitlines())
    except EngineError as exc:
        state["arena_error"] = str(exc)
        return
    state["arena_contest"] = contest["id"]


def retrieval_form() -> None:
    """Base CLIP against a tuned adapter: each model's top 4 styles for the same words, shown blind."""
    st.caption(
        "For each query, the base CLIP's top 4 styles against a tuned adapter's (**Tune retrieval**), sides drawn"
        " at random. Which retrieves the looks you meant?"
    )
    runs = engine.tuning.adapters()
    if not runs:
        st.info("No tuned adapter yet: train one on the **Tune retrieval** page or with `python -m engine tune`.")
        return
    names = {r["name"]: f"{r['name']} ({r['scenario']})" for r in runs}
    run = st.selectbox("Tuned adapter", list(names), key="arena_tuned", format_func=names.get)
    if "arena_queries" not in state:
        prompts = [r["prompt"] for r in rows[:200]]
        state["arena_queries"] = "\n".join(list(dict.fromkeys(prompts))[:12])
    st.text_area("Queries, one per line", key="arena_queries", height=160,
                 placeholder="mid-century walnut sideboard\nterrazzo floor\nneon street at night")  # fmt: skip
    st.button("Start voting", type="primary", on_click=on_retrieval, args=(run, state["arena_queries"]),
              disabled=not state["arena_queries"].strip(), key="arena_retrieval_start")  # fmt: skip


def show_side(col, side: dict) -> None:
    """One side of a pair: a rendered image, or a retrieval model's top styles."""
    if "styles" in side:
        cells = col.columns(len(side["styles"]))
        for cell, s in zip(cells, side["styles"], strict=True):
            thumb = style_thumb(engine, s["id"])
            if thumb:
                cell.image(thumb, width="stretch")
            else:
                cell.caption("(removed)")
            cell.caption(md(s["name"]))
    else:
        ref = side.get("image") or f"{side['run_id']}#{side['index']}"
        thumb = output_thumbs(engine, [ref], 512)[ref]
        if thumb:
            col.image(thumb, width=440)
        else:
            col.warning("This image's file is missing.")


with st.expander("New comparison", expanded=not contests):
    sets = sorted(by_set, key=lambda s: max(r["created_at"] for r in by_set[s]), reverse=True)
    modes = ["Two run sets", "Two settings", "Retrieval: base vs tuned"]
    state.setdefault("arena_mode", modes[0])
    mode = st.segmented_control("Compare", modes, key="arena_mode", required=True) or modes[0]
    if mode == "Retrieval: base vs tuned":
        retrieval_form()
    elif mode == "Two settings":
        st.caption(
            "Render the sketches, prompts, seeds and styles of one run set again with setting A and with setting B;"
            " the two new sets are then compared blind. Settings left empty keep each run's own value."
        )
        inputs = st.selectbox("Inputs from", sets, key="arena_inputs", format_func=set_name) if sets else None
        cols = st.columns(2)
        for col, side in zip(cols, ("A", "B"), strict=True):
            col.markdown(f"**Setting {side}**")
            for field, (label, low, high, step) in SETTINGS.items():
                col.number_input(
                    label, low, high, value=None, step=step, key=f"arena_{side}_{field}", placeholder="as the run"
                )
        job = state.get("arena_job")
        st.button("Render both and start", type="primary", on_click=on_render, args=(inputs,),
                  disabled=inputs is None or job is not None, key="arena_render")  # fmt: skip
    elif len(sets) < 2:
        st.info(
            "Two run sets over the same inputs are needed: render the same sketches and prompts with two settings"
            " (**Two settings** above, or `python -m engine generate --batch NAME --label A ...`), or run a sweep."
        )
    else:
        c1, c2 = st.columns(2)
        a = c1.selectbox("Set A", sets, index=1, key="arena_a", format_func=set_name)
        b = c2.selectbox("Set B", sets, index=0, key="arena_b", format_func=set_name)
        shared = {match_key(r) for r in by_set[a]} & {match_key(r) for r in by_set[b]}
        st.caption(
            f"{count(len(shared), 'pair')} {'shares' if len(shared) == 1 else 'share'} a sketch, prompt and seed."
        )
        st.button("Start voting", type="primary", on_click=on_create, args=(a, b), disabled=a == b or not shared)
    if state.get("arena_error"):
        st.error(state["arena_error"])


def on_rendered(job) -> None:
    if job.state == "done":
        state["arena_contest"] = job.result["contest"]


job_panel(
    engine,
    "arena_job",
    lambda p: f"Rendering {p.step + 1}/{p.total}" if p and p.step < p.total else "Preparing…",
    on_done=on_rendered,
    error_key="arena_error",
)

contests = engine.arena.contests()
if not contests:
    st.stop()
ids = [c["id"] for c in contests]
if state.get("arena_contest") not in ids:
    state["arena_contest"] = ids[0]
labels = {c["id"]: describe(c) for c in contests}
# No widget key: the labels carry the vote counts, and a keyed select box goes on showing the text it had ("0/1
# voted") after a vote. Without one, new counts make a new box, which shows them; the choice lives in arena_contest.
contest_id = st.selectbox("Comparison", ids, index=ids.index(state["arena_contest"]), format_func=labels.get)
state["arena_contest"] = contest_id
contest = next(c for c in contests if c["id"] == contest_id)

pair = engine.arena.next_pair(contest_id)
if pair is None:
    st.success("The pair is voted." if contest["pairs"] == 1 else f"All {contest['pairs']} pairs voted.")
else:
    st.progress(contest["voted"] / contest["pairs"], text=f"Pair {contest['voted'] + 1} of {contest['pairs']}")
    st.markdown(f"**{md(pair['match_key'].split('|')[1])}**")
    left, right = st.columns(2)
    for col, side in ((left, "left"), (right, "right")):
        show_side(col, pair[side])
    b1, b2, b3 = st.columns(3)
    args = (contest_id, pair["position"])
    b1.button("Left is better", icon=":material/arrow_back:", on_click=on_vote, args=(*args, "left"),
              shortcut="Left", width="stretch", key="vote_left")  # fmt: skip
    b2.button("Tie", icon=":material/arrow_downward:", on_click=on_vote, args=(*args, "tie"),
              shortcut="Down", width="stretch", key="vote_tie")  # fmt: skip
    b3.button("Right is better", icon=":material/arrow_forward:", on_click=on_vote, args=(*args, "right"),
              shortcut="Right", width="stretch", key="vote_right")  # fmt: skip
st.button("Undo last vote", on_click=on_undo, args=(contest_id,), disabled=contest["voted"] == 0, key="vote_undo")

with st.expander("Results (names the sets)", expanded=pair is None):
    s = engine.arena.stats(contest_id)
    if not s["votes"]:
        st.caption("No votes yet.")
    else:
        m = st.columns(4)
        m[0].metric("Votes", s["votes"])
        m[1].metric("A win rate", f"{s['win_rate_a']:.0%}" if s["win_rate_a"] is not None else "–",
                    help="wins of A over decisive votes (ties left out)")  # fmt: skip
        m[2].metric("Tie rate", f"{s['tie_rate']:.0%}")
        m[3].metric("p-value", f"{s['p_value']:.3g}" if s["p_value"] is not None else "–",
                    help="two-sided binomial test of A's wins against 50 %")  # fmt: skip
        st.caption(
            f"A = {md(set_name(contest['a_set']))} · B = {md(set_name(contest['b_set']))} · {s['a_wins']} A,"
            f" {s['b_wins']} B, {count(s['ties'], 'tie')}"
        )
        # only the numbers measured on both sides of a decisive vote (no sketch: no edge F1 to agree with)
        agreement = [
            {"Metric": METRICS[k], "Pairs compared": v["compared"], "Agrees with the votes": v["rate"]}
            for k, v in s["agreement"].items()
            if v["compared"]
        ]
        left_out = [METRICS[k] for k, v in s["agreement"].items() if not v["compared"]]
        if agreement:
            st.dataframe(
                pd.DataFrame(agreement),
                hide_index=True,
                column_config={
                    "Agrees with the votes": st.column_config.ProgressColumn(min_value=0, max_value=1, format="percent")
                },
                key="agreement_table",
            )
        if left_out:
            st.caption(
                f"Not compared: {', '.join(left_out)} (not measured on both images of a decisive vote"
                + ("; ties are left out)." if s["ties"] else ").")
            )
