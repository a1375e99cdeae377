"""Who may see the admin UI: with SHOEBOX_UI_PASSWORD set, a sign-in form comes before every page.

Streamlit has no authentication of its own. The service API keys never reach the browser: the
pages call the services from this (server-side) process.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

import streamlit as st

PASSWORD_ENV = "SHOEBOX_UI_PASSWORD"
_SESSION_KEY = "_signed_in"
# A wrong guess costs its session this long: slows guessing without bothering a person.
WRONG_PASSWORD_DELAY_S = 1.0


def _fingerprint(password: str) -> str:
    # Stored per session instead of a bare flag, so changing the password signs every session out.
    return hashlib.sha256(password.encode()).hexdigest()


def signed_in() -> bool:
    """True when no password is set or this session gave it; otherwise draws the sign-in form."""
    password = os.environ.get(PASSWORD_ENV) or ""
    if not password:
        return True
    if hmac.compare_digest(st.session_state.get(_SESSION_KEY, ""), _fingerprint(password)):
        with st.sidebar:
            if st.button("Sign out", key="sign_out"):
                del st.session_state[_SESSION_KEY]
                st.rerun()
        return True
    st.title("Shoebox admin")
    with st.form("sign_in"):
        given = st.text_input("Password", type="password", key="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        if hmac.compare_digest(given.encode(), password.encode()):
            st.session_state[_SESSION_KEY] = _fingerprint(password)
            st.rerun()
        time.sleep(WRONG_PASSWORD_DELAY_S)
        st.error("Wrong password.")
    return False
