"""The end-of-run summary: rows per layer, quarantine reasons, quality, reconciliation."""
from __future__ import annotations

from typing import Any


def render_summary(d: dict[str, Any], console) -> None:
    from rich.table import Table

    t = Table(title=f"run {d['run_id']} of {d['pipeline']}: {d['status'].upper()} in {d['seconds']:.1f}s "
                    f"({d['executor']})")
    for c in ("source", "bronze rows", "silver table", "silver in", "inserted", "updated", "unchanged",
              "quarantined", "duplicates", "quality", "reconciled", "status"):
        t.add_column(c, justify="left" if c in ("source", "silver table", "status") else "right")
    for r in d["tables"]:
        q = r.get("quality") or {}
        status = r["status"] if not r.get("error") else f"{r['status']}: {r['error']['type']}"
        unchanged = r.get("unchanged", 0) + r.get("bronze_skipped", 0)
        t.add_row(r["source"], f"{r['bronze_rows']:,}", r.get("silver") or "-", f"{r['silver_in']:,}",
                  f"{r['inserted']:,}", f"{r['updated']:,}", f"{unchanged:,}", f"{r['quarantined']:,}",
                  f"{r['duplicates'] + r['stale']:,}", f"{q['overall']:.2f}" if "overall" in q else "-",
                  "yes" if r["reconciled"] else "[red]NO", status)
    console.print(t)
    reasons = [(r["silver"], rule, n) for r in d["tables"] for rule, n in (r.get("quarantine_reasons") or {}).items()]
    if reasons:
        q = Table(title="quarantined rows by reason (see `eai show quarantine.<table>`)")
        for c in ("table", "rule", "rows"):
            q.add_column(c, justify="right" if c == "rows" else "left")
        for table, rule, n in sorted(reasons):
            q.add_row(table.replace("silver.", "quarantine."), rule, f"{n:,}")
        console.print(q)
    warned = [(r["silver"], rule, n) for r in d["tables"] for rule, n in (r.get("warnings") or {}).items()]
    for table, rule, n in sorted(warned):
        console.print(f"[yellow]warning[/yellow] {table}: {n:,} rows kept despite rule '{rule}'")
    for r in d["tables"]:
        fmt = r.get("source_format") or {}
        if fmt.get("format"):
            console.print(f"[dim]{r['source']}[/dim]: read as {_sniffed(fmt)}")
        if r.get("mode") == "replace" and r.get("deleted"):
            console.print(f"{r['silver']}: {r['deleted']:,} rows no longer in the source were removed "
                          "(full read of a table without a key replaces silver)")
        for src, dst in (r.get("renamed") or {}).items():
            console.print(f"[yellow]renamed[/yellow] {r['silver']}: source column {src!r} stored as {dst!r} "
                          "(another column has the same name in another case)")
        for note in r.get("notes") or []:
            console.print(f"[dim]{r['source']}[/dim]: {note}")
        if r.get("silver") and not r["reconciled"] and r.get("silver_rows_after") is not None:
            console.print(f"[red]{r['silver']}: holds {r['silver_rows_after']:,} rows, expected "
                          f"{r.get('expected_silver_rows')}")
    changes = [(r["source"], c) for r in d["tables"] for c in r.get("schema_changes") or []]
    for source, c in changes:
        console.print(f"[yellow]schema change[/yellow] {c.get('table', source)}: {c['kind']} column {c['column']}"
                      + (f" ({c.get('old')} -> {c.get('new')})" if c.get("old") or c.get("new") else ""))
    for r in d["tables"]:
        if r.get("error"):
            console.print(f"[red]{r['source']}[/red]: {r['error']['type']}: {r['error']['message']}")
    if d.get("gold"):
        g = Table(title="gold models")
        for c in ("model", "rows", "inputs", "status"):
            g.add_column(c)
        for m in d["gold"]:
            g.add_row(m["name"], f"{m.get('rows', 0):,}", ", ".join(m.get("inputs", [])),
                      m["status"] if m["status"] == "ok" else f"failed: {m['error']['message']}")
        console.print(g)


def _sniffed(fmt: dict[str, Any]) -> str:
    """'csv, encoding latin-1, delimiter ';' (0.87), header yes': what file sniffing chose; a choice
    made with less than 0.95 confidence shows its confidence, in yellow."""
    parts = []
    for key in ("format", "compression", "encoding", "delimiter", "quotechar", "header"):
        guess = fmt.get(key)
        if not isinstance(guess, dict) or guess.get("value") in (None, ""):
            continue
        value = guess["value"]
        shown = ("yes" if value else "no") if key == "header" else (repr(value) if key in ("delimiter", "quotechar")
                                                                     else str(value))
        text = shown if key == "format" else f"{key} {shown}"
        conf = guess.get("confidence", 1.0)
        parts.append(f"[yellow]{text} ({conf:.2f})[/yellow]" if conf < 0.95 else text)
    notes = fmt.get("notes") or []
    return ", ".join(parts) + ("; " + "; ".join(map(str, notes)) if notes else "")
