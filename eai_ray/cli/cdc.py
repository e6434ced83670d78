"""`eai cdc start|status|stop|run PIPELINE.yaml`: the CDC consumer actors of a pipeline.

`start` creates one detached, named actor per source with a `cdc:` block on the Ray cluster
of `ray.address` / RAY_ADDRESS (a CDC consumer outlives the command); `run` consumes in the
foreground without Ray (Ctrl-C stops it cleanly).
"""
from __future__ import annotations

import json
import os
import sys

from eai_ray.errors import ConfigError


def register(add) -> None:
    sp = add("cdc", None, "log-based change data capture: start, inspect and stop CDC consumer actors", None)
    sub = sp.add_subparsers(dest="cdc_command", required=True)
    for name, fn, help_ in (("start", cmd_start, "start the CDC actors of a pipeline (detached, on Ray)"),
                            ("status", cmd_status, "position, lag, events/s and last commit per source"),
                            ("stop", cmd_stop, "stop the CDC actors of a pipeline"),
                            ("run", cmd_run, "consume in the foreground, without Ray, until Ctrl-C")):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn, command_name=f"cdc {name}")
        p.add_argument("pipeline", help="pipeline YAML file")
        p.add_argument("--source", help="only this source")
        p.add_argument("--json", action="store_true", help="machine-readable output")


def _sources(args):
    from eai_ray.config import load_pipeline
    from eai_ray.orchestration.cdc import select_cdc_sources

    cfg = load_pipeline(args.pipeline)
    return cfg, select_cdc_sources(cfg, args.source, file=args.pipeline)


def _ray(cfg, *, need_cluster: bool):
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if need_cluster and not address:
        raise ConfigError("CDC actors outlive this command, so they need a running Ray cluster",
                          field="ray.address", expected="ray.address in the YAML or RAY_ADDRESS "
                          "(ray start --head --port=PORT), or `eai cdc run` to consume in the foreground")
    from eai_ray.runtime import ensure_ray
    return ensure_ray(cfg.ray, quiet=True)


def print_status(args, rows: list[dict]) -> None:
    """Each source's consumer (and Kafka publisher) status: JSON with --json, else one line per source."""
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        print(f"{r['source']}: {r.get('state', 'absent')}  position={r.get('position')}  "
              f"lag={_lag_text(r.get('lag') or {})}  events={r.get('events', 0)}  "
              f"events/s={r.get('events_per_s', 0)}  last_commit={r.get('last_commit_at')}  "
              f"p99_ms={r.get('latency_p99_ms', '-')}  restarts={r.get('restarts', 0)}"
              + (f"  error={r['last_error'].get('message')}" if r.get("last_error") else ""))
        pub = r.get("publisher")
        if pub:
            print(f"  publisher: {pub.get('state')}  published_tx={pub.get('published_tx', 0)}  "
                  f"position={pub.get('published_position')}  last_publish={pub.get('last_published_at')}  "
                  f"restarts={pub.get('restarts', 0)}  stalls={pub.get('stalls', 0)}"
                  + (f"  waiting_for={pub['waiting_for']}" if pub.get("waiting_for") else ""))
            st = pub.get("stall")
            if st and pub.get("state") == "stalled":
                print(f"  STALLED: nothing published for {st.get('stalled_for_s')} s (threshold "
                      f"{st.get('threshold_s')} s) while the source is at {st.get('source_head')} "
                      f"({st.get('behind')} beyond the published {st.get('published_position')}); "
                      "restarting from its resume point")


def _lag_text(lag: dict) -> str:
    """The source's own measure of how far behind the consumer is."""
    if "lag_bytes" in lag:  # PostgreSQL: WAL the slot still holds
        return f"{lag['lag_bytes']}B-of-WAL"
    if "behind" in lag:  # Kafka: records between the reader and the last stable offsets
        return f"{lag['behind']}-kafka-records"
    if "gtid_binlog_pos" in lag:  # MariaDB: where the server's binlog is
        return f"server-at-{lag['gtid_binlog_pos']}"
    return str(lag.get("error", "-"))


def cmd_start(args) -> int:
    cfg, sources = _sources(args)
    _ray(cfg, need_cluster=True)  # before importing ray: it reads the token-auth mode at import
    import ray

    from actors import cdc_actor

    actors = [(s, cdc_actor.start(cfg, s)) for s in sources]
    rows = [{"source": s.name, "actor": cdc_actor.actor_name(cfg.name, s.name),
             **ray.get(a.status.remote(False))} for s, a in actors]
    print_status(args, rows)
    return 0


def cmd_status(args) -> int:
    cfg, sources = _sources(args)
    _ray(cfg, need_cluster=True)  # before importing ray: it reads the token-auth mode at import
    import ray

    from actors import cdc_actor

    rows = []
    for s in sources:
        a = cdc_actor.find(cfg, s)
        row = {"source": s.name, **(ray.get(a.status.remote()) if a else {"state": "absent"})}
        pub = cdc_actor.find_publisher(cfg, s)
        if pub is not None:  # cdc.transport: kafka - the publisher's own state (a stall shows here)
            try:
                row["publisher"] = ray.get(pub.status.remote(), timeout=30)
            except Exception as exc:  # noqa: BLE001 - a restarting actor: say so
                row["publisher"] = {"state": "unreachable", "error": str(exc)}
        rows.append(row)
    print_status(args, rows)
    bad = [r for r in rows if r.get("state") in ("failed", "absent")
           or (r.get("publisher") or {}).get("state") == "stalled"]
    return 1 if bad else 0


def cmd_stop(args) -> int:
    cfg, sources = _sources(args)
    _ray(cfg, need_cluster=True)  # before importing ray: it reads the token-auth mode at import
    import ray

    from actors import cdc_actor

    rows = []
    for s in sources:
        a = cdc_actor.find(cfg, s)
        if a is None:
            rows.append({"source": s.name, "state": "absent"})
            continue
        rows.append({"source": s.name, **ray.get(a.stop.remote())})
        ray.kill(a, no_restart=True)
        pub = cdc_actor.find_publisher(cfg, s)
        if pub is not None:
            ray.get(pub.stop.remote())
            ray.kill(pub, no_restart=True)
    print_status(args, rows)
    return 0


def cmd_run(args) -> int:
    from eai_ray.orchestration.cdc import run_foreground

    cfg, sources = _sources(args)
    rows = run_foreground(cfg, sources, on_tick=None if args.json else lambda rows: print_status(args, rows),
                          on_interrupt=lambda: print("stopping...", file=sys.stderr))
    print_status(args, rows)
    return 0
