"""Dashboard: how faithful the renders are (prompt, style, sketch), filtered, charted, compared and exported."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from engine.errors import EngineError
from engine.evaluation import COLUMN_NAMES, METRICS, column_name, compare, filter_rows, summarize, to_csv
from ui.gallery import image_name, set_name
from ui.shared import data_uri, engine_or_stop, md, output_thumbs

MAX_RUNS = 5000
BY = {"set": "Run set", "style": "Style", "source": "Source"}  # what the summary can group by


engine = engine_or_stop()
state = st.session_state

st.title("Dashboard")
st.caption(
    "Every render is measured as it is made (a Studio render just after it shows): **prompt fidelity** (CLIP score, "
    "0–100), **style similarity** (CLIP cosine to its reference) and **structure fidelity** (edge F1 against the "
    "sketch, 2 px tolerance)."
)

try:
    rows = engine.history.rows(limit=MAX_RUNS)
except EngineError as exc:
    st.error(str(exc))
    st.stop()
if not rows:
    st.info("No renders yet. Make some in the Studio, or run a sweep.")
    st.stop()

latest: dict[str, str] = {}
for r in rows:
    latest[r["set"]] = max(latest.get(r["set"], ""), r["created_at"])
all_sets = sorted(latest, key=lambda s: (latest[s], s), reverse=True)  # newest first
first_day = min(r["created_at"] for r in rows)[:10]
last_day = max(r["created_at"] for r in rows)[:10]

with st.container(border=True):  # a row of its own for the run sets: a sweep's names are long, and shown whole
    st.multiselect("Run sets", all_sets, key="dash_sets", placeholder="All run sets", format_func=set_name, wrap=True)
    c2, c3, c4, c5 = st.columns([2, 3, 3, 3])
    c2.multiselect(
        "Sources", sorted({r["source"] for r in rows}), key="dash_sources", placeholder="All sources", wrap=True
    )
    c3.multiselect("Styles", sorted({r["style"] for r in rows}), key="dash_styles", placeholder="All styles", wrap=True)
    c4.text_input("Prompt contains", key="dash_text", placeholder="chair")
    dates = c5.date_input(
        "Dates (UTC)", value=(pd.Timestamp(first_day).date(), pd.Timestamp(last_day).date()), key="dash_dates"
    )

since, until = (tuple(dates) + (None, None))[:2] if isinstance(dates, (tuple, list)) else (dates, dates)
shown = filter_rows(
    rows,
    sets=state.get("dash_sets"),
    sources=state.get("dash_sources"),
    styles=state.get("dash_styles"),
    text=state.get("dash_text", ""),
    since=since,
    until=until,
)


def scope(picked: list[str]) -> str:
    """The run sets the filter keeps, in words: a sweep's cells as one sweep, long lists shortened."""
    batches = {s.split(" · ", 1)[0] for s in picked}
    if len(picked) > 1 and len(batches) == 1 and all(" · " in s for s in picked):
        return f"the {len(picked)} run sets of {md(next(iter(batches)))}"
    named = ", ".join(md(set_name(s)) for s in picked[:3]) + (f" and {len(picked) - 3} more" if len(picked) > 3 else "")
    return f"run set{'s' if len(picked) > 1 else ''} {named}"


picked = [s for s in state.get("dash_sets") or [] if s in latest]
others = any(state.get(k) for k in ("dash_sources", "dash_styles", "dash_text")) or (since, until) != (
    pd.Timestamp(first_day).date(),
    pd.Timestamp(last_day).date(),
)
counted = f"**{len(shown)} of {len(rows)}** images" if len(shown) != len(rows) else f"all **{len(rows)}** images"
what = scope(picked) if picked else "all run sets"
note, clear = st.columns([5, 1], vertical_alignment="center")
note.caption(f"Counting {counted}: {what}" + (", with the other filters above." if others else "."))
if picked:
    clear.button("Show all run sets", on_click=lambda: state.update(dash_sets=[]), key="dash_all_sets")
if not shown:
    st.warning("No image matches these filters.")
    st.stop()

df = pd.DataFrame(shown)
# the page's names: a set's, and an image's ("…abcd1234 · 1"); the filters and the export keep the ids
df["set_name"] = df["set"].map(set_name)
df["name"] = [image_name(run, i) for run, i in zip(df["run_id"], df["index"], strict=True)]
LABELS = {
    **COLUMN_NAMES,
    **METRICS,
    "set_name": "Run set",
    "name": "Run · image",
}  # the charts' words for their columns
cols = st.columns(4)
cols[0].metric("Images", len(df))
HEADLINE = {"clip_score": "{:.1f}", "style_similarity": "{:.2f}", "edge_f1": "{:.2f}"}
for col, (metric, fmt) in zip(cols[1:], HEADLINE.items(), strict=True):
    values = df[metric].dropna()
    col.metric(METRICS[metric], fmt.format(values.mean()) if len(values) else "–", help=f"mean over {len(values)}")


def tradeoff(df: pd.DataFrame, strength: str, metric: str, what: str, name: str, needs: str, key: str) -> None:
    """`metric` against `strength` where the strength varies. Where every image used one strength (the Studio's
    default, say) that plot is a vertical line: show the metric per run set instead, and say why."""
    data = df.dropna(subset=[metric])
    if data.empty:
        st.caption(f"**{what.capitalize()} strength → {name}**: no image here was {needs}, so there is no {name}.")
        return
    used = sorted(data[strength].dropna().unique())
    common = dict(color="set_name", hover_data=["name", "prompt", "seed", strength], height=360, labels=LABELS)
    if len(used) > 1:
        fig = px.scatter(data, x=strength, y=metric, title=f"{what.capitalize()} strength → {name}", **common)
        fig.update_layout(xaxis_title=f"{what} strength")
    else:
        fig = px.strip(data, x="set_name", y=metric, title=f"{name[0].upper()}{name[1:]} per run set", **common)
        fig.update_layout(xaxis_title="")
        one = f"{used[0]:g}" if used else "unrecorded"
        st.caption(
            f"All {len(data)} images here used {what} strength {one}, so there is no trade-off to draw: this shows"
            f" {name} per run set. Vary the {what} strength (a sweep does) to see how it moves {name}."
        )
    fig.update_layout(yaxis_title=name, showlegend=False, margin=dict(t=50, b=10))
    st.plotly_chart(fig, key=key)


overview, table_tab, compare_tab = st.tabs(["Charts", "Images", "Compare two sets"])

with overview:
    left, right = st.columns(2)
    fig = px.histogram(
        df, x="clip_score", nbins=30, title="Prompt fidelity (CLIP score)", color_discrete_sequence=["#4c6ef5"],
        labels=LABELS,
    )  # fmt: skip
    fig.update_layout(xaxis_title="CLIP score", yaxis_title="images", height=340, margin=dict(t=50, b=10))
    left.plotly_chart(fig, key="chart_hist")
    box_metric = right.selectbox("Per style", list(METRICS), format_func=METRICS.get, key="dash_box_metric")
    fig = px.box(
        df.dropna(subset=[box_metric]), x="style", y=box_metric, points="all", title=f"{METRICS[box_metric]} per style",
        hover_data=["name", "prompt"], labels=LABELS,
    )  # fmt: skip
    fig.update_layout(xaxis_title="", yaxis_title=METRICS[box_metric], height=340, margin=dict(t=50, b=10))
    right.plotly_chart(fig, key="chart_box")
    left, right = st.columns(2)
    with left:
        tradeoff(df, "structure_strength", "edge_f1", "structure", "edge F1", "made from a sketch", "chart_structure")
    with right:
        tradeoff(df, "style_strength", "style_similarity", "style", "style similarity", "rendered with a style",
                 "chart_style")  # fmt: skip
    state.setdefault("dash_by", "set")
    by = st.segmented_control("Summary by", list(BY), format_func=BY.get, key="dash_by", required=True) or "set"
    summary = pd.DataFrame(summarize(shown, by)).dropna(axis="columns", how="all").round(3)  # none: not measured
    if by == "set":
        summary["set"] = summary["set"].map(set_name)
    st.dataframe(summary.rename(columns=column_name), hide_index=True, key="summary_table", placeholder="–")
    if unmeasured := [METRICS[m] for m in METRICS if df[m].isna().all()]:
        st.caption(f"Not measured on any image here: {', '.join(unmeasured)} (they need a sketch or a style).")

with table_tab:
    thumbs = output_thumbs(engine, list(df["image"]))
    table = df.assign(
        thumbnail=[data_uri(thumbs[ref]) for ref in df["image"]],
        created_at=pd.to_datetime(df["created_at"], utc=True),
    )
    measured = [m for m in METRICS if table[m].notna().any()]  # a column nothing measured is left out
    st.dataframe(
        table,
        hide_index=True,
        key="images_table",
        column_order=[
            "thumbnail",
            "created_at",
            "prompt",
            "style",
            *measured,
            "structure_strength",
            "style_strength",
            "steps",
            "seed",
            "set_name",
            "source",
            "name",
        ],  # fmt: skip
        column_config={
            "thumbnail": st.column_config.ImageColumn("Image", width="small"),
            "created_at": st.column_config.DatetimeColumn("Made (UTC)", format="YYYY-MM-DD HH:mm"),
            "prompt": st.column_config.TextColumn("Prompt"),
            "style": st.column_config.TextColumn("Style"),
            "structure_strength": st.column_config.NumberColumn("Structure str."),
            "style_strength": st.column_config.NumberColumn("Style str."),
            "steps": st.column_config.NumberColumn("Steps"),
            "seed": st.column_config.NumberColumn("Seed", format="%d"),
            "set_name": st.column_config.TextColumn("Run set"),
            "source": st.column_config.TextColumn("Source"),
            "name": st.column_config.TextColumn(
                "Run · image", help="the end of the run's id · the image's number in it"
            ),
            "clip_score": st.column_config.NumberColumn("CLIP score", format="%.1f"),
            "style_similarity": st.column_config.NumberColumn("Style sim.", format="%.3f"),
            "edge_f1": st.column_config.NumberColumn("Edge F1", format="%.3f"),
            "chamfer": st.column_config.NumberColumn("Chamfer px", format="%.2f"),
        },
        row_height=64,
        placeholder="–",
    )
    st.download_button(
        f"Export CSV ({len(shown)} images)",
        to_csv(shown),
        file_name="design-studio-metrics.csv",
        mime="text/csv",
        key="export",
    )

with compare_tab:
    sizes = df["set"].value_counts()
    sets_here = [s for s in all_sets if sizes.get(s, 0) >= 2]  # a mean and its spread need two images
    if len(sets_here) < 2:
        st.info(
            "Comparing needs two run sets of two or more images each. In the **Studio**, open **Advanced**, type a"
            " **Run set label** (say *A*) and render with 2 or more variations; change the label (*B*) and render"
            " the same sketch and prompt again. A sweep with variations makes run sets too. (From the command line:"
            " `generate --batch NAME --label A`, then `--label B`.)"
        )
    else:
        c1, c2, c3 = st.columns(3)
        a = c1.selectbox("Set A", sets_here, index=1, key="dash_cmp_a", format_func=set_name)
        b = c2.selectbox("Set B", sets_here, index=0, key="dash_cmp_b", format_func=set_name)
        metric = c3.selectbox("Metric", list(METRICS), format_func=METRICS.get, key="dash_cmp_metric")
        va, vb = df.loc[df["set"] == a, metric].tolist(), df.loc[df["set"] == b, metric].tolist()
        try:
            res = compare(va, vb)
        except EngineError as exc:
            st.warning(str(exc))
        else:
            m1, m2, m3 = st.columns(3)
            m1.metric(f"A · {res['n_a']} images", f"{res['mean_a']:.3f}")
            m2.metric(f"B · {res['n_b']} images", f"{res['mean_b']:.3f}")
            m3.metric("B − A", f"{res['diff']:+.3f}", help="difference of means")
            verdict = "a real difference" if res["significant"] else "no clear difference"
            st.markdown(
                f"95% bootstrap confidence interval of B − A: **[{res['ci_low']:+.3f}, {res['ci_high']:+.3f}]**"
                f" ({verdict} at this sample size; 10,000 resamples)."
            )
            pair = df[df["set"].isin([a, b])].assign(side=lambda d: d["set"].map({a: "A", b: "B"}))
            fig = px.box(pair.dropna(subset=[metric]), x="side", y=metric, points="all", height=340)
            fig.update_layout(xaxis_title="", yaxis_title=METRICS[metric], margin=dict(t=20, b=10))
            st.plotly_chart(fig, key="chart_compare")
