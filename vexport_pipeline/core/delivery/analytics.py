"""Download analytics from the gateway's request events: the numbers of `vexport metrics` per export,
rendition and link, the daily rollups a schedule keeps in the event store, rollups per owner and
platform preset, and two small PNG charts for an asset's metadata. Pure pandas and matplotlib (Agg):
the frames come from the event store, nothing here reads or writes it.

The request frame has one row per HTTP request the gateway answered, with the columns of
`REQUEST_COLUMNS`; the link frame one row per link, with `LINK_COLUMNS`. Missing columns read as
empty, so an empty `pd.DataFrame()` is a valid "nothing happened yet".

Definitions (every count is over the rows given, so filter by time or version before calling):

- **downloads**: rows with ``completed == 1``. The gateway marks exactly one request per whole-file
  download (the one after which the bytes served cover the file), so a player's dozens of range
  requests count once and an abandoned download counts not at all.
- **requests**: every row, whatever its method or status (HEAD, 206, 304, 403, 416, 429 ...).
- **bytes_served**: the sum of ``bytes`` over 2xx rows (an error page is not the file).
- **unique_clients**: distinct non-empty ``client_ip`` among 2xx GET rows: clients that were sent
  (part of) the file; a HEAD-only client such as a link unfurler is not one.
- **completion_rate**: of the download *attempts*, the share that completed. An attempt is a distinct
  (``link_id``, ``client_ip``) pair with at least one 2xx GET row that sent bytes (or a completed
  row); it completed when that pair has a completed row. The rate is in [0, 1], rounded to 4
  places; with no attempts it is ``None`` (JSON null). A client that downloads the same link twice
  is one attempt that completed (and two downloads).
- **countries / devices / browsers / referrers**: downloads by the value on the completed row
  (country "" -> "unknown"; referrers by host name, none -> "direct"), largest first.
- **first_download / last_download**: ISO 8601 UTC (``2026-11-22T10:00:00Z``) of the first and last
  completed row, ``None`` without downloads.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pandas as pd

REQUEST_COLUMNS: dict[str, type] = {
    "at": float,
    "link_id": str,
    "export_id": str,
    "version": str,
    "rendition": str,
    "method": str,
    "status": int,
    "bytes": int,
    "range": str,
    "completed": int,
    "client_ip": str,
    "country": str,
    "browser": str,
    "os": str,
    "device": str,
    "referrer": str,
    "user_agent": str,
}
LINK_COLUMNS: dict[str, type] = {
    "id": str,
    "export_id": str,
    "version": str,
    "rendition": str,
    "created_at": float,
    "expires_at": float,
    "max_downloads": float,  # nullable: NaN means no limit
    "revoked": int,
}
DAILY_COLUMNS = ["day", "export_id", "rendition", "downloads", "requests", "bytes_served", "unique_clients"]
ROLLUP_COLUMNS = ["exports", "renditions", "downloads", "bytes_served", "downloads_per_export"]
CHART_SIZE = (10, 3.75)  # inches at CHART_DPI: 800 x 300 pixels
CHART_DPI = 80
BAR = "#c9d6e8"
ACCENT = "#c0392b"


def _typed(df: pd.DataFrame | None, columns: dict[str, type]) -> pd.DataFrame:
    """The columns asked for, in order and typed; absent ones empty (""/NaN/0)."""
    df = pd.DataFrame() if df is None else df.reset_index(drop=True)
    out = pd.DataFrame(index=df.index)
    for name, kind in columns.items():
        col = df[name] if name in df.columns else pd.Series(None, index=df.index, dtype=object)
        if kind is str:
            out[name] = col.fillna("").astype(str)
        elif kind is float:
            out[name] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            out[name] = pd.to_numeric(col, errors="coerce").fillna(0).astype("int64")
    return out


def requests_frame(requests: pd.DataFrame | None) -> pd.DataFrame:
    """The request events with exactly `REQUEST_COLUMNS`, typed; methods upper case."""
    out = _typed(requests, REQUEST_COLUMNS)
    out["method"] = out["method"].str.upper()
    return out


def links_frame(links: pd.DataFrame | None) -> pd.DataFrame:
    """The links with exactly `LINK_COLUMNS`, typed (``max_downloads`` NaN when unlimited)."""
    return _typed(links, LINK_COLUMNS)


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with a Z, or None."""
    if ts is None or pd.isna(ts):
        return None
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _referrer_host(value: str) -> str:
    if not value:
        return ""
    try:
        return urlsplit(value).hostname or value
    except ValueError:  # e.g. an unbalanced IPv6 bracket: keep what the client sent
        return value


def _tally(values: pd.Series, blank: str) -> dict[str, int]:
    counts = values.replace("", blank).value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def _pairs(rows: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(rows["link_id"], rows["client_ip"], strict=True))


def stats(rows: pd.DataFrame) -> dict:
    """The numbers of one group of request rows (already `requests_frame`-typed), JSON-ready."""
    ok = rows["status"].between(200, 299)
    served = rows[ok & (rows["method"] == "GET")]
    done = rows[rows["completed"] == 1]
    attempts = _pairs(served[served["bytes"] > 0]) | _pairs(done)
    finished = _pairs(done)
    return {
        "downloads": int(len(done)),
        "requests": int(len(rows)),
        "bytes_served": int(rows.loc[ok, "bytes"].sum()),
        "unique_clients": int(served.loc[served["client_ip"] != "", "client_ip"].nunique()),
        "completion_rate": round(len(finished) / len(attempts), 4) if attempts else None,
        "countries": _tally(done["country"], "unknown"),
        "devices": _tally(done["device"], "other"),
        "browsers": _tally(done["browser"], "Other"),
        "referrers": _tally(done["referrer"].map(_referrer_host).astype(str), "direct"),
        "first_download": iso(done["at"].min()) if len(done) else None,
        "last_download": iso(done["at"].max()) if len(done) else None,
    }


def export_metrics(export_id: str, requests: pd.DataFrame | None, links: pd.DataFrame | None) -> dict:
    """`vexport metrics --json` for one export: per rendition (delivered file name, sorted; every
    rendition that has a link or a request, zeros when nobody came) and totals over all of them
    (sums, unique clients and completion over the union, dicts summed). See the module docstring for
    what each number means. Every version of the export counts; filter the frames for one version."""
    req = requests_frame(requests)
    req = req[req["export_id"] == export_id]
    lnk = links_frame(links)
    lnk = lnk[lnk["export_id"] == export_id]
    per_link = lnk["rendition"].value_counts()
    renditions = [
        {"name": name, **stats(req[req["rendition"] == name]), "links": int(per_link.get(name, 0))}
        for name in sorted(set(lnk["rendition"]) | set(req["rendition"]))
    ]
    return {"export_id": export_id, "renditions": renditions, "totals": {**stats(req), "links": int(len(lnk))}}


def link_metrics(export_id: str, requests: pd.DataFrame | None, links: pd.DataFrame | None) -> pd.DataFrame:
    """One row per link of the export (oldest first): its settings and its numbers (as in `stats`,
    without the per-value dicts). Times are ISO 8601 UTC; ``max_downloads`` is <NA> when unlimited and
    ``completion_rate`` and ``last_download`` NaN without attempts or downloads."""
    req = requests_frame(requests)
    groups = dict(tuple(req[req["export_id"] == export_id].groupby("link_id")))
    empty = req.iloc[0:0]
    lnk = links_frame(links)
    rows = []
    for link in lnk[lnk["export_id"] == export_id].sort_values(["created_at", "id"]).itertuples():
        s = stats(groups.get(link.id, empty))
        rows.append(
            {
                "link_id": link.id,
                "rendition": link.rendition,
                "version": link.version,
                "created_at": iso(link.created_at),
                "expires_at": iso(link.expires_at),
                "max_downloads": None if pd.isna(link.max_downloads) else int(link.max_downloads),
                "revoked": bool(link.revoked),
                **{k: s[k] for k in ("downloads", "requests", "bytes_served", "unique_clients", "completion_rate")},
                "last_download": s["last_download"],
            }
        )
    columns = ["link_id", "rendition", "version", "created_at", "expires_at", "max_downloads", "revoked"]
    columns += ["downloads", "requests", "bytes_served", "unique_clients", "completion_rate", "last_download"]
    out = pd.DataFrame(rows, columns=columns)
    return out.astype({"max_downloads": "Int64"})  # <NA>: no limit


def daily_rollup(requests: pd.DataFrame | None) -> pd.DataFrame:
    """Per (UTC day ``YYYY-MM-DD``, export_id, rendition): downloads, requests, bytes_served and
    unique_clients, as the event store keeps them. Downloads, requests and bytes add up across days;
    unique clients do not (a client seen on two days counts on each). Rows without a time are left out."""
    req = requests_frame(requests).dropna(subset=["at"])
    ok = req["status"].between(200, 299)
    work = pd.DataFrame(
        {
            "day": pd.to_datetime(req["at"], unit="s", utc=True).dt.strftime("%Y-%m-%d"),
            "export_id": req["export_id"],
            "rendition": req["rendition"],
            "done": req["completed"].eq(1).astype("int64"),
            "sent": req["bytes"].where(ok, 0),
            "client": req["client_ip"].where(ok & (req["method"] == "GET") & (req["client_ip"] != "")),
        }
    )
    out = work.groupby(["day", "export_id", "rendition"], as_index=False, sort=True).agg(
        downloads=("done", "sum"),
        requests=("done", "size"),
        bytes_served=("sent", "sum"),
        unique_clients=("client", "nunique"),
    )
    out = out.reindex(columns=DAILY_COLUMNS)
    for name in DAILY_COLUMNS[3:]:
        out[name] = out[name].fillna(0).astype("int64")
    return out.reset_index(drop=True)


def _rollup(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    out = frame.groupby(key, as_index=False).agg(
        exports=("export_id", "nunique"),
        renditions=("rendition", "size"),
        downloads=("downloads", "sum"),
        bytes_served=("bytes_served", "sum"),
    )
    out["downloads_per_export"] = (out["downloads"] / out["exports"]).round(2)
    out = out.sort_values(["downloads", key], ascending=[False, True]).reset_index(drop=True)
    return out.reindex(columns=[key, *ROLLUP_COLUMNS])


def owner_rollup(requests: pd.DataFrame | None, exports: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """What exports are made and how often they are downloaded, per owner and per platform preset.

    ``exports`` has one row per delivered rendition: ``export_id``, ``owner`` ("" -> "(none)"),
    ``preset`` (the target's preset name, or whatever names the target) and ``rendition`` (the
    delivered file name the request rows carry). Requests for renditions it does not list (a ZIP
    bundle, an export it leaves out) are not counted. Returns ``{"owners": ..., "presets": ...}``, each
    with columns key, exports, renditions, downloads, bytes_served, downloads_per_export, most
    downloaded first."""
    missing = {"export_id", "owner", "preset", "rendition"} - set(exports.columns)
    if missing:
        raise ValueError(f"owner_rollup: exports lacks columns {sorted(missing)}")
    ex = exports[["export_id", "owner", "preset", "rendition"]].fillna("").astype(str).drop_duplicates()
    ex["owner"] = ex["owner"].replace("", "(none)")
    req = requests_frame(requests)
    ok = req["status"].between(200, 299)
    per = (
        req.assign(done=req["completed"].eq(1).astype("int64"), sent=req["bytes"].where(ok, 0))
        .groupby(["export_id", "rendition"], as_index=False)
        .agg(downloads=("done", "sum"), bytes_served=("sent", "sum"))
    )
    merged = ex.merge(per, on=["export_id", "rendition"], how="left")
    merged[["downloads", "bytes_served"]] = merged[["downloads", "bytes_served"]].fillna(0).astype("int64")
    return {"owners": _rollup(merged, "owner"), "presets": _rollup(merged, "preset")}


def _figure(ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=CHART_SIZE, dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state: safe in threaded runs
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI)
    return buf.getvalue()


def bar_png(series: dict[str, dict[str, float]], title: str) -> bytes:
    """Stacked bars: one bar per key of the inner dicts, one layer per outer key (e.g. tier -> owner -> MB)."""
    fig, (ax,) = _figure()
    names = sorted({k for layer in series.values() for k in layer})
    if not names:
        return _nothing(title)
    bottom = [0.0] * len(names)
    for i, (layer, values) in enumerate(sorted(series.items(), reverse=True)):
        heights = [values.get(n, 0.0) for n in names]
        ax.bar(names, heights, bottom=bottom, label=layer, color=(BAR, ACCENT)[i % 2], edgecolor=ACCENT, linewidth=0.5)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _png(fig)


def _nothing(title: str) -> bytes:
    fig, (ax,) = _figure()
    ax.set_axis_off()
    ax.text(0.5, 0.5, "no downloads yet", ha="center", va="center", fontsize=16, color="#777777")
    if title:
        ax.set_title(title, fontsize=9)
    return _png(fig)


def _over_time(done: pd.DataFrame, title: str) -> bytes:
    import matplotlib.dates as mdates
    from matplotlib.ticker import MaxNLocator

    times = pd.to_datetime(done["at"], unit="s", utc=True).dt.tz_localize(None)
    hourly = times.max() - times.min() < pd.Timedelta(days=2)
    freq, unit = ("h", "hour") if hourly else ("D", "day")
    counts = times.dt.floor(freq).value_counts().sort_index()
    span = pd.date_range(counts.index.min(), counts.index.max(), freq=freq)
    counts = counts.reindex(span, fill_value=0)
    fig, (ax,) = _figure()
    width = (1 / 24 if hourly else 1) * 0.9  # matplotlib dates are in days
    ax.bar(span.to_numpy(), counts.to_numpy(), width=width, align="edge", color=BAR, edgecolor=ACCENT, linewidth=0.5)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("downloads")
    ax.set_title(f"{title + ': ' if title else ''}completed downloads per {unit} (UTC)", fontsize=9)
    return _png(fig)


def _top(values: pd.Series, blank: str, n: int = 8) -> pd.Series:
    counts = values.replace("", blank).value_counts()
    counts = counts.sort_values(ascending=False, kind="stable")
    if len(counts) > n:
        counts = pd.concat([counts.iloc[: n - 1], pd.Series({"others": counts.iloc[n - 1 :].sum()})])
    return counts.iloc[::-1]  # barh draws bottom-up: largest on top


def _country_device(done: pd.DataFrame, title: str) -> bytes:
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(ncols=2)
    for ax, column, blank, label in (
        (axes[0], "country", "unknown", "country"),
        (axes[1], "device", "other", "device"),
    ):
        counts = _top(done[column], blank)
        ax.barh([str(k) for k in counts.index], counts.to_numpy(), color=BAR, edgecolor=ACCENT, linewidth=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("downloads")
        ax.set_title(f"{title + ': ' if title else ''}downloads by {label}", fontsize=9)
    return _png(fig)


def charts(requests: pd.DataFrame | None, *, title: str = "") -> dict[str, bytes]:
    """PNG images (800x300) of the completed downloads in the rows given: ``downloads_over_time``
    (per hour when they span under two days, else per day, UTC) and ``by_country_device`` (two bar
    charts side by side, top 8). Without downloads both say "no downloads yet"."""
    req = requests_frame(requests)
    done = req[(req["completed"] == 1) & req["at"].notna()]
    if done.empty:
        return {"downloads_over_time": _nothing(title), "by_country_device": _nothing(title)}
    return {"downloads_over_time": _over_time(done, title), "by_country_device": _country_device(done, title)}
