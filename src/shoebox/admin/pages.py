"""The admin pages: Services, Collections, Ingest, Search, Duplicates. Each is one function."""

from __future__ import annotations

import os
from typing import Any

import streamlit as st

from shoebox.admin import logic
from shoebox.admin.state import STRETCH, Config, call, client, collection, ml_client, show_error, thumbnail
from shoebox.client import APIError
from shoebox.protocol import Job

GRID_COLUMNS = 4
FORMATS = [
    "jpg",
    "jpeg",
    "png",
    "heic",
    "heif",
    "webp",
    "avif",
    "tif",
    "tiff",
    "dng",
    "cr2",
    "cr3",
    "nef",
    "arw",
]
NEAR_DUPLICATE_SCORE = 0.95
# The duplicate scan's thresholds as the page starts (the service's defaults).
DUP_DEFAULTS: dict[str, Any] = {
    "threshold": 0.95,
    "phash_distance": 6,
    "burst_seconds": 2.0,
    "burst_threshold": 0.90,
}
MAX_PHASH_DISTANCE = 16
MAX_GROUPS_SHOWN = 50  # per tier: each group is a row of thumbnails
FINISHED = frozenset({"completed", "completed_with_errors", "failed", "cancelled"})


# ---------------------------------------------------------------- services


def services() -> None:
    st.header("Services")
    cfg = Config.from_env()
    health = call(client().health, timeout=3.0, spinner="Asking the ingestion service…")
    if not health:
        st.error(f"**ERR_CONNECTION** — the ingestion service does not answer at {cfg.url}")
        return
    ml = health.get("ml") or {}
    caps = None
    try:
        caps = ml_client().get("/api/v1/capabilities")
    except APIError as exc:
        show_error(exc, f"ML service capabilities at {cfg.ml_url}")
    if caps and caps.get("test_model"):
        st.error(
            "# ⚠️ TEST MODEL\n**The ML service runs a random-weight test model** "
            f"(`{caps.get('model_name')}`): embeddings are noise and search results mean nothing. "
            "Install a real model for actual use."
        )
    left, right = st.columns(2)
    with left:
        st.subheader("Ingestion service")
        st.success(f"{cfg.url}: {health.get('status', '?')}")
        store = health.get("vector_store") or {}
        st.metric("Vector store", str(store.get("backend") or health.get("vector_db")))
        st.caption(", ".join(f"{k}: {v}" for k, v in store.items() if k != "backend"))
    with right:
        st.subheader("ML service")
        if ml.get("reachable"):
            st.success(f"reachable (from the ingestion service); safe batch {ml.get('safe_clip_batch')}")
        else:
            st.error("**unreachable** from the ingestion service")
        if caps:
            a, b = st.columns(2)
            a.metric("Model", str(caps.get("model_name")))
            b.metric("dtype", str(caps.get("dtype")))
            a.metric("Device", str(caps.get("device")))
            b.metric("Safe CLIP batch", str(caps.get("safe_clip_batch")))
            a.metric("Queue depth", str(caps.get("queue_depth", 0)))
            b.metric("Embedding dim", str(caps.get("embedding_dim")))
    if st.button("Refresh", key="services_refresh"):
        st.rerun()


# ---------------------------------------------------------------- collections


def collections() -> None:
    st.header("Collections")
    api = client()
    flash = st.session_state.pop("flash", None)
    if flash:
        st.success(flash)
    names = call(api.collections, spinner="Listing collections…") or []
    rows = []
    for name in names:
        info = call(api.collection_info, name, what=name)
        if info:
            rows.append(
                {
                    "name": name,
                    "points": info.get("points_count"),
                    "files": info.get("files_count"),
                    "offline": info.get("offline_count"),
                    "model": info.get("model_name"),
                    "created": info.get("created_at"),
                    "selected on server": bool(info.get("selected")),
                }
            )
    if rows:
        st.dataframe(rows, hide_index=True, **STRETCH)
    else:
        st.info("No collection yet: create one, or start an ingest (it creates its collection).")
    current = collection()
    st.caption(f"The other pages use: **{current or 'the service’s selected collection'}**")

    if names:
        pick = st.selectbox("Collection to use", names, key="coll_select")
        if st.button("Use this collection", key="coll_use"):
            if call(api.select_collection, pick, spinner="Selecting…") is not None:
                st.session_state["collection"] = pick
                st.success(f"Using {pick}")

    with st.form("coll_create_form", clear_on_submit=True):
        new = st.text_input("New collection name", key="coll_new")
        if st.form_submit_button("Create") and new.strip():
            if call(api.create_collection, new.strip(), spinner="Creating…") is not None:
                st.session_state["flash"] = f"Created {new.strip()}"
                st.rerun()

    if names:
        _models_of(api, names)

    if names:
        with st.expander("Delete a collection"):
            victim = st.selectbox("Collection to delete", names, key="coll_delete")
            typed = st.text_input(f"Type {victim!r} to confirm", key="coll_delete_confirm")
            if st.button("Delete", key="coll_delete_go", type="primary"):
                if typed != victim:
                    st.error("The typed name does not match: nothing deleted.")
                elif call(api.delete_collection, victim, spinner=f"Deleting {victim}…") is not None:
                    if st.session_state.get("collection") == victim:
                        st.session_state["collection"] = None
                    st.session_state["flash"] = f"Deleted {victim}"
                    st.rerun()


def _models_of(api: Any, names: list[str]) -> None:
    """A collection's model: switch it (a background migration; searches keep answering), follow
    the migration, roll back, or drop the embeddings of a model it no longer uses."""
    with st.expander("Model of a collection: switch, roll back, drop"):
        name = st.selectbox("Collection", names, key="coll_model_of")
        info = call(api.collection_info, name, what=name) or {}
        caps = call(ml_client().get, "/api/v1/capabilities", what="ML service") or {}
        hosted = [m["model_id"] for m in caps.get("models") or []]
        st.markdown(f"Answers with **{info.get('model_name') or 'not set yet'}**")
        kept = [m for m in info.get("models") or [] if m.get("state") != "active"]
        for m in kept:
            cols = st.columns([4, 1])
            cols[0].caption(f"{m['state']}: {m['model_name']} ({m['embedding_dim']}-d)")
            if m["state"] == "retired" and cols[1].button("Drop", key=f"coll_drop_{m['model_name']}"):
                if call(api.drop_model, name, m["model_name"], spinner="Dropping…") is not None:
                    st.session_state["flash"] = f"Dropped the {m['model_name']} embeddings of {name}"
                    st.rerun()
        migration = info.get("migration")
        running = bool(migration) and migration["status"] in ("queued", "running")
        if migration:
            st.progress(
                min(1.0, float(migration.get("progress") or 0.0)),
                text=f"migration to {migration['model']}: {migration['status']} "
                f"({migration['done']}/{migration['total']})",
            )
            if migration.get("message"):
                st.caption(migration["message"])
        others = [m for m in hosted if m != info.get("model_name")]
        if running:
            c1, c2 = st.columns(2)
            if c1.button("Refresh", key="coll_migrate_refresh"):
                st.rerun()
            if c2.button("Cancel the migration", key="coll_migrate_cancel"):
                call(api.cancel_migration, name, spinner="Cancelling…")
                st.rerun()
        elif others:
            target = st.selectbox("Switch to", others, key="coll_migrate_to")
            st.caption(
                "Every photo is embedded again by the new model in the background; searches keep "
                "answering with the current model until the switch. The current embeddings are kept: "
                "switching back is a quick rollback."
            )
            if st.button("Migrate", key="coll_migrate_go"):
                if call(api.migrate, name, target, spinner="Starting the migration…") is not None:
                    st.rerun()
        else:
            st.caption("The ML service hosts no other model (SHOEBOX_MODELS lists the models it hosts).")


# ---------------------------------------------------------------- ingest


def _folder_picker() -> str | None:
    api = client()
    here = st.session_state.get("picker_path")
    listing = call(api.folders, here, spinner="Listing folders…")
    if listing is None:
        st.session_state["picker_path"] = None
        return None
    roots = listing.get("roots") or []
    if not roots:
        st.warning("The service allows no folder (set SHOEBOX_INGEST_ROOTS on the ingestion service).")
        return None
    st.caption("Allowed roots: " + ", ".join(f"`{r}`" for r in roots))
    st.write(f"Browsing: `{listing.get('path') or 'the allowed roots'}`")
    options: list[str] = []
    if listing.get("path"):
        options.append(listing["path"])
    options += [f["path"] for f in listing.get("folders") or []]
    if listing.get("truncated"):
        st.caption("Only the first folders are listed.")
    if not options:
        return None
    choice = st.selectbox(
        "Folder",
        options,
        key=f"picker_choice::{here}",
        format_func=lambda p: f"{p}  (this folder)" if p == listing.get("path") else p,
    )
    a, b = st.columns(2)
    if a.button("Open folder ▸", key="picker_open", disabled=choice == listing.get("path")):
        st.session_state["picker_path"] = choice
        st.rerun()
    if b.button("◂ Up", key="picker_up", disabled=here is None):
        real = listing.get("path") or ""
        st.session_state["picker_path"] = None if real in roots else os.path.dirname(real)
        st.rerun()
    return choice


def _job_view(job_id: str) -> None:
    job = call(client().job, job_id, what="job")
    if job is None:
        return
    previous = st.session_state.get("job_status")
    st.session_state["job_status"] = job.status.value
    if job.status.finished and previous is not None and previous not in FINISHED:
        st.rerun()  # ends the live fragment; the whole page (past jobs too) shows the outcome
    rate, eta = logic.job_rate(job)
    label = f"{job.status.value} — {job.processed_files}/{job.total_files} files"
    if rate:
        label += f" · {rate:.1f} files/s"
    if eta is not None and not job.status.finished:
        label += f" · ETA {logic.human_seconds(eta)}"
    st.progress(min(max(job.progress, 0.0), 1.0), text=label)
    cols = st.columns(5)
    for col, name in zip(cols, ("indexed", "cached", "unchanged", "offline", "failed"), strict=True):
        col.metric(name, getattr(job, name))
    st.caption(f"Job `{job.job_id}` · collection `{job.collection_name}` · `{job.directory_path}`")
    if job.status.finished:
        (st.success if job.status.value == "completed" else st.warning)(f"Finished: {job.status.value}")
    elif st.button("Cancel job", key="ingest_cancel"):
        call(client().cancel, job.job_id, spinner="Cancelling…")
    for warning in job.warnings:
        st.warning(f"**{getattr(warning.code, 'value', warning.code)}** — {warning.message}")
    grouped = logic.errors_by_code(job)
    if grouped:
        st.subheader("Errors")
        for code, lines in grouped.items():
            with st.expander(f"{code} ({len(lines)})"):
                st.text("\n".join(lines))
    if job.logs:
        with st.expander("Log (last lines)"):
            st.code("\n".join(job.logs[-30:]), language=None)


def _live_job(job_id: str) -> None:
    running = st.session_state.get("job_status") not in {
        "completed",
        "completed_with_errors",
        "failed",
        "cancelled",
    }
    # st.fragment (1.37+; experimental_fragment before) reruns only the job's view every second.
    fragment = getattr(st, "fragment", None) or getattr(st, "experimental_fragment", None)
    if running and fragment is not None:
        fragment(run_every=1.0)(_job_view)(job_id)
    else:
        _job_view(job_id)
        if running and st.button("Refresh progress", key="ingest_refresh"):
            st.rerun()


def ingest() -> None:
    st.header("Ingest")
    api = client()
    target = st.text_input(
        "Collection (empty: the service's selected one)", value=collection() or "", key="ingest_collection"
    )
    folder = _folder_picker()
    if st.button("Start ingest", key="ingest_start", type="primary", disabled=folder is None):
        started = call(api.ingest, folder, target.strip() or None, spinner="Starting…")
        if started:
            st.session_state["job_id"] = started["job_id"]
            st.session_state["job_status"] = started.get("status")
            # The other pages follow the collection just ingested into.
            st.session_state["collection"] = started.get("collection_name") or collection()
    job_id = st.session_state.get("job_id")
    if job_id:
        st.subheader("Current job")
        _live_job(job_id)
    st.subheader("Past jobs")
    jobs: list[Job] = call(api.jobs) or []
    if jobs:
        st.dataframe(
            [
                {
                    "job": j.job_id,
                    "outcome": j.status.value,
                    "collection": j.collection_name,
                    "folder": j.directory_path,
                    "files": j.total_files,
                    "indexed": j.indexed,
                    "failed": j.failed,
                    "created": j.created_at,
                    "finished": j.finished_at,
                }
                for j in sorted(jobs, key=lambda j: j.created_at, reverse=True)
            ],
            hide_index=True,
        )
    else:
        st.caption("No job yet.")


# ---------------------------------------------------------------- search


def _first_page() -> None:
    """A new query, minimum score, sort or page size starts again at page 1 (pages stay coherent)."""
    st.session_state["search_page"] = 1


def _grid(hits: list[dict[str, Any]], prefix: str, *, actions: bool = True) -> None:
    for start in range(0, len(hits), GRID_COLUMNS):
        cols = st.columns(GRID_COLUMNS)
        for i, (col, hit) in enumerate(zip(cols, hits[start : start + GRID_COLUMNS], strict=False), start):
            with col:
                data = thumbnail(hit["id"])
                score = f" · {hit['score']:.3f}" if hit.get("score") is not None else ""
                caption = f"{hit.get('filename', '')}{score}"
                if data:
                    st.image(data, caption=caption, **STRETCH)
                else:
                    st.caption(f"(no thumbnail) {caption}")
                if actions:
                    if st.button("Details", key=f"{prefix}_detail_{i}_{hit['id']}"):
                        st.session_state["detail"] = hit["id"]
                        st.rerun()
                    if st.button("More like this", key=f"{prefix}_similar_{i}_{hit['id']}"):
                        previous = st.session_state.get("search_req") or {}
                        st.session_state["search_req"] = {
                            "kind": "similar",
                            "terms": [{"image_id": hit["id"], "weight": 1.0}],
                            "uploads": [],
                            "filters": previous.get("filters") or {},
                            "label": f"More like `{hit.get('filename') or hit['id']}`",
                        }
                        st.session_state["search_page"] = 1
                        st.session_state["detail"] = None
                        st.rerun()


def _detail(image_id: str) -> None:
    api = client()
    with st.container(border=True):
        top = st.columns([6, 1])
        top[0].subheader("Photo details")
        if top[1].button("Close", key="detail_close"):
            st.session_state["detail"] = None
            st.rerun()
        info = call(api.image_info, image_id, collection(), spinner="Loading…", what="image info")
        if info is None:
            return
        left, right = st.columns([3, 2])
        with left:
            full = call(api.image, image_id, spinner="Loading the image…", what="image")
            if full:
                st.image(full[0], caption=info.get("filename"), **STRETCH)
        with right:
            st.markdown("**Paths**")
            missing = set(info.get("missing_paths") or [])
            for path in info.get("paths") or []:
                st.write(f"`{path}`" + ("  — *missing on disk*" if path in missing else ""))
            url = logic.map_url(info.get("gps"))
            if url:
                st.markdown(f"[Show on OpenStreetMap]({url})")
            st.markdown("**Metadata**")
            st.json({k: v for k, v in info.items() if k not in ("paths", "missing_paths")}, expanded=False)
        # The server cuts at the score; the photo itself (score 1) is left out here.
        similar = call(
            api.search_query,
            [{"image_id": image_id, "weight": 1.0}],
            limit=13,
            score_threshold=NEAR_DUPLICATE_SCORE,
            collection=collection(),
            what="near duplicates",
        )
        near = [h for h in (similar or {}).get("results", []) if h["id"] != image_id][:12]
        st.markdown(f"**Near duplicates** (score ≥ {NEAR_DUPLICATE_SCORE})")
        if near:
            _grid(near, "near", actions=False)
        else:
            st.caption("None.")


def search() -> None:
    st.header("Search")
    api = client()
    detail = st.session_state.get("detail")
    if detail:
        _detail(detail)

    with st.form("search_form"):
        query = st.text_input("Describe the photo", key="search_query")
        not_like = st.text_input("Not like (optional: what the photos should not show)", key="search_not")
        upload = st.file_uploader(
            "…and/or an example photo (with a description, both count)", key="search_upload"
        )
        with st.expander("Filters"):
            a, b = st.columns(2)
            after = a.date_input("Taken after", value=None, key="f_after")
            before = b.date_input("Taken before", value=None, key="f_before")
            make = a.text_input("Camera make (comma separated)", key="f_make")
            formats = b.multiselect("Format", FORMATS, key="f_format")
            folder = a.text_input("Folder (any depth below)", key="f_folder")
            gps = b.radio("Has GPS", ["any", "yes", "no"], horizontal=True, key="f_gps")
        submitted = st.form_submit_button("Search", type="primary")
    if submitted:
        filters = logic.build_filters(
            taken_after=after,
            taken_before=before,
            camera_make=make,
            formats=formats,
            folder=folder,
            has_gps=gps,
        )
        terms = logic.query_terms(query, not_like, upload=upload is not None)
        req: dict[str, Any] | None = None
        if query.strip() or upload is not None:
            label = []
            if query.strip():
                label.append(f"Text: “{query.strip()}”")
            if upload is not None:
                label.append(f"Like the uploaded photo {upload.name}")
            if not_like.strip():
                label.append(f"not like “{not_like.strip()}”")
            req = {
                "kind": "query",
                "terms": terms,
                "uploads": [(upload.name, upload.getvalue())] if upload is not None else [],
                "filters": filters,
                "label": " · ".join(label),
            }
        else:
            st.warning("Type a description or upload a photo.")
        st.session_state["search_req"] = req
        st.session_state["search_page"] = 1

    c1, c2, c3, c4 = st.columns(4)
    per_page = c1.selectbox("Per page", [12, 24, 48], key="search_per_page", on_change=_first_page)
    min_score = c2.slider(
        "Minimum score",
        logic.SCORE_OFF,
        1.0,
        logic.SCORE_OFF,
        0.01,
        key="search_min_score",
        on_change=_first_page,
        help="Hits below this score are left out (by the server, on every page). "
        "At its lowest value, −1.00, there is no minimum.",
    )
    threshold = logic.score_threshold(min_score)
    c2.caption("No minimum" if threshold is None else f"Only hits with a score ≥ {threshold:.2f}")
    order = c3.radio("Sort", list(logic.SORTS), key="search_sort", on_change=_first_page)
    sort = logic.SORTS[order]
    page = int(st.session_state.get("search_page") or 1)
    page_label = c4.empty()
    page_label.write(f"Page {page}")

    req = st.session_state.get("search_req")
    if not req:
        return
    offset = (page - 1) * per_page
    st.caption(req["label"])
    answer = call(
        api.search_query,
        req["terms"],
        uploads=req.get("uploads") or None,
        limit=per_page,
        offset=offset,
        filters=req.get("filters") or None,
        score_threshold=threshold,
        sort=sort,
        collection=collection(),
        spinner="Searching…",
    )
    if answer is None:
        return
    for warning in answer.get("warnings") or []:
        st.warning(logic.search_warning(warning, answer.get("collection_name")))
    hits = answer.get("results", [])
    total = answer.get("total")
    count = f"{len(hits)} result(s) on this page"
    if total is not None:
        count += f" of {total}"
        page_label.write(f"Page {page} of {max(1, -(-total // per_page))}")
    st.write(f"{count} · collection `{answer.get('collection_name')}`")
    if sort != "relevance":
        cut = f" with a score ≥ {threshold:.2f}" if threshold is not None else ""
        among = f"the {total} most relevant hits" if total is not None else "the most relevant hits"
        st.caption(f"Ordered by date taken ({order}, undated photos last) among {among}{cut}.")
    _grid(hits, "hit")
    prev, nxt = st.columns(2)
    if prev.button("◂ Previous page", key="search_prev", disabled=page <= 1):
        st.session_state["search_page"] = page - 1
        st.rerun()
    more = logic.has_next_page(len(hits), per_page, offset, total)
    if nxt.button("Next page ▸", key="search_next", disabled=not more):
        st.session_state["search_page"] = page + 1
        st.rerun()


# ---------------------------------------------------------------- duplicates


def _member_card(member: dict[str, Any], keep: bool) -> None:
    data = thumbnail(member["id"])
    if data:
        st.image(data, **STRETCH)
    else:
        st.caption("(no thumbnail)")
    fmt = (member.get("format") or "?").upper()
    st.markdown(
        ("**✅ KEEP**" if keep else "copy")
        + f" · {logic.resolution(member)} · {logic.human_size(member.get('size'))} · {fmt}"
    )
    taken = member.get("taken_at") or "no date"
    extra = [taken]
    if member.get("camera"):
        extra.append(str(member["camera"]))
    if member.get("sharpness") is not None:
        extra.append(f"sharpness {member['sharpness']:.0f}")
    st.caption(" · ".join(extra))
    st.caption(member.get("path", ""))
    others = len(member.get("paths") or []) - 1
    if others > 0:
        st.caption(f"(and {others} other path(s) with the same bytes)")


def _group(tier: str, n: int, group: dict[str, Any]) -> None:
    members = group.get("members") or []
    with st.container(border=True):
        st.markdown(f"**Group {n}** · {logic.group_note(tier, group)}")
        for start in range(0, len(members), GRID_COLUMNS):
            row = members[start : start + GRID_COLUMNS]
            for col, member in zip(st.columns(GRID_COLUMNS), row, strict=False):
                with col:
                    _member_card(member, member.get("path") == group.get("keep_path"))


def duplicates() -> None:
    st.header("Duplicates")
    api = client()
    with st.form("dup_form"):
        a, b, c, d = st.columns(4)
        threshold = a.slider(
            "Near duplicates: cosine ≥", 0.80, 1.0, DUP_DEFAULTS["threshold"], 0.01, key="dup_threshold"
        )
        phash = b.slider(
            "Same picture: hash distance ≤ (bits)",
            0,
            MAX_PHASH_DISTANCE,
            DUP_DEFAULTS["phash_distance"],
            1,
            key="dup_phash_distance",
        )
        seconds = c.number_input(
            "Bursts: within (seconds)",
            0.0,
            3600.0,
            DUP_DEFAULTS["burst_seconds"],
            0.5,
            key="dup_burst_seconds",
        )
        burst = d.slider(
            "Bursts: cosine ≥", 0.50, 1.0, DUP_DEFAULTS["burst_threshold"], 0.01, key="dup_burst_threshold"
        )
        st.form_submit_button("Find duplicates", type="primary")
    answer = call(
        api.duplicates,
        threshold=threshold,
        phash_distance=int(phash),
        burst_seconds=float(seconds),
        burst_threshold=burst,
        collection=collection(),
        spinner="Looking for duplicates (a scan of the whole collection)…",
    )
    if answer is None:
        return
    if answer.get("keep_rule"):
        st.info(f"**Suggested copy to keep** (marked ✅ KEEP, chosen by the server): {answer['keep_rule']}")
    without = answer.get("without_phash") or 0
    if without:
        st.warning(
            f"{without} photo(s) have no perceptual hash (ingested before it existed): they cannot "
            "appear under “Same picture”. Re-index them to include them."
        )
    groups = answer.get("groups") or {}
    used = {**DUP_DEFAULTS, **(answer.get("thresholds") or {})}
    found = 0
    for key, title, what in logic.TIERS:
        tier = groups.get(key) or []
        found += len(tier)
        st.subheader(f"{title} ({len(tier)} group(s))")
        st.caption(what.format(**used))
        for n, group in enumerate(tier[:MAX_GROUPS_SHOWN], 1):
            _group(key, n, group)
        if len(tier) > MAX_GROUPS_SHOWN:
            st.caption(f"Only the first {MAX_GROUPS_SHOWN} of {len(tier)} groups are shown.")
    if not found:
        st.success("No duplicates in this collection.")
    timing = answer.get("seconds") or {}
    if timing:
        st.caption(f"Scan: {sum(timing.values()):.2f} s")


PAGES = {
    "Services": services,
    "Collections": collections,
    "Ingest": ingest,
    "Search": search,
    "Duplicates": duplicates,
}
