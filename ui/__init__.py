"""Streamlit-side helpers shared by the pages (the engine itself never imports Streamlit)."""
