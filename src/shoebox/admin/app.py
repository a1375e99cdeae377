"""The Shoebox admin UI: `streamlit run src/shoebox/admin/app.py` (or `shoebox.admin.launch`).

Env: SHOEBOX_URL (default http://127.0.0.1:8002) and SHOEBOX_API_KEY of the ingestion service;
SHOEBOX_ML_URL / SHOEBOX_ML_API_KEY of the ML service (its capabilities on the Services page);
SHOEBOX_UI_PASSWORD: when set, every page asks for it first (see `access`).
"""

from __future__ import annotations

import streamlit as st

from shoebox.admin.access import signed_in
from shoebox.admin.pages import PAGES
from shoebox.admin.state import Config, show_error


def main() -> None:
    st.set_page_config(page_title="Shoebox admin", page_icon="📦", layout="wide")
    if not signed_in():
        st.stop()
    cfg = Config.from_env()
    with st.sidebar:
        st.title("Shoebox")
        page = st.radio("Page", list(PAGES), key="page")
        st.caption(f"Service: {cfg.url}")
        st.caption(f"Collection: {st.session_state.get('collection') or 'selected on the service'}")
    try:
        PAGES[page]()
    except Exception as exc:  # noqa: BLE001 - a message, never a traceback
        show_error(exc, "unexpected error")


main()
