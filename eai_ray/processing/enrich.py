"""LLM enricher: entity extraction, classification and summarization of a text column into new columns.

Declared per silver table in the pipeline YAML::

    silver:
      - name: reviews
        source: shop.reviews
        enrich:
          - {column: body, task: classify, labels: {complaint: "a customer complaint about a problem",
                                                    praise: "a customer praising the product"}}
          - {column: body, task: extract, entity: "product names", output: products}
          - {column: body, task: summarize, max_tokens: 48}

The work is pure: ``enrich_table(table, specs, client)`` takes an ``EnrichClient`` (embeddings and
completions). ``LocalClient`` runs the models in this process; ``ServeClient`` calls the Serve
deployments of ``eai serve`` (batched there). ``enrich_dataset`` is the Ray Data stage (map_batches).

Classification defaults to label embeddings (cosine similarity of each text to each label's
description), which needs no LLM and is deterministic; ``method: llm`` asks the LLM instead.
Each classify spec adds ``<output>`` and ``<output>_confidence`` (cosine margin-based, 0..1).
"""
from __future__ import annotations

import concurrent.futures as cf
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from eai_ray.config import EnrichSpec
from eai_ray.errors import EaiError, LLMError, ModelNotAvailable, UserError
from eai_ray.processing.models.llm import Completion
from eai_ray.settings import settings

# Serve names shared with serve_deployments/ (the deployments import them from here)
SERVE_APP = "eai"
EMBEDDER_DEPLOYMENT = "Embedder"
LLM_DEPLOYMENT = "LLM"


def _timeout(timeout: float | None) -> float:
    """A call's timeout: the caller's, else EAI_ENRICH_TIMEOUT (read when the call is made)."""
    return timeout if timeout is not None else settings().enrich_timeout

SYSTEM = "You are a precise data-labelling assistant. Answer briefly, with no explanation."


class EnrichClient(Protocol):
    """Models the enricher needs; ``complete_many`` may run the prompts concurrently."""

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def complete_many(self, prompts: list[str], *, max_tokens: int, system: str | None = None,
                      stop: list[str] | None = None, timeout: float | None = None) -> list[Completion]: ...


@dataclass
class EnrichStats:
    rows: int = 0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, c: Completion) -> None:
        self.llm_calls += 1
        self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens


# --------------------------------------------------------------------------- clients
class LocalClient:
    """The embedded models in this process (loaded once per process, CPU)."""

    def __init__(self, *, llm=None, embedder=None, device: str = "cpu") -> None:
        self._llm = llm
        self._embedder = embedder
        self._device = device

    @property
    def embedder(self):
        if self._embedder is None:
            from eai_ray.processing.models.embedder import Embedder
            self._embedder = Embedder.load(self._device)
        return self._embedder

    @property
    def llm(self):
        if self._llm is None:
            from eai_ray.processing.models.llm import llm_from_config
            self._llm = llm_from_config()
            if self._llm is None:
                raise ModelNotAvailable("this enrichment needs an LLM but EAI_LLM_BACKEND=none",
                                        expected="EAI_LLM_BACKEND=local|openai|vllm")
        return self._llm

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)

    def complete_many(self, prompts, *, max_tokens, system=None, stop=None, timeout=None):
        timeout = _timeout(timeout)
        llm = self.llm
        width = max(1, int(getattr(llm, "n_parallel", 4)))
        with cf.ThreadPoolExecutor(max_workers=width) as pool:
            futs = [pool.submit(llm.complete, p, max_tokens=max_tokens, temperature=0.0, stop=stop,
                                timeout=timeout, system=system) for p in prompts]
            return [_result(f) for f in futs]


class ServeClient:
    """The deployments of a running ``eai serve`` application, through Serve handles."""

    def __init__(self, app_name: str = SERVE_APP, *, embedder=None, llm=None) -> None:
        if embedder is None or llm is None:
            from ray import serve
            embedder = embedder or serve.get_deployment_handle(EMBEDDER_DEPLOYMENT, app_name=app_name)
            llm = llm or serve.get_deployment_handle(LLM_DEPLOYMENT, app_name=app_name)
        self._emb = embedder
        self._llm = llm
        self.llm = ServeLLM(llm)

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._emb.embed.remote(texts).result(), dtype=np.float32)

    def complete_many(self, prompts, *, max_tokens, system=None, stop=None, timeout=None):
        timeout = _timeout(timeout)
        resps = [self._llm.complete.remote(p, max_tokens=max_tokens, temperature=0.0, stop=stop,
                                           timeout=timeout, system=system) for p in prompts]
        out = []
        for r in resps:
            try:
                d = r.result(timeout_s=timeout + 5)
                out.append(Completion(**d))
            except EaiError as exc:
                out.append(exc)
            except Exception as exc:  # noqa: BLE001 - Serve wraps replica errors; keep the row, record why
                cause = getattr(exc, "cause", None)
                out.append(cause if isinstance(cause, EaiError) else LLMError(f"{type(exc).__name__}: {exc}"[:300]))
        return out


class ServeLLM:
    """The ``LLM`` protocol over the LLM deployment's handle (for code that wants one LLM object)."""

    model = "serve:" + LLM_DEPLOYMENT

    def __init__(self, handle) -> None:
        self._handle = handle

    def complete(self, prompt: str, *, max_tokens: int = 256, temperature: float = 0.0,
                 stop: list[str] | None = None, timeout: float = 60.0, system: str | None = None) -> Completion:
        resp = self._handle.complete.remote(prompt, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                            timeout=timeout, system=system)
        try:
            return Completion(**resp.result(timeout_s=timeout + 5))
        except EaiError:
            raise
        except Exception as exc:  # noqa: BLE001 - unwrap the replica's typed error when Serve wrapped it
            cause = getattr(exc, "cause", None)
            if isinstance(cause, EaiError):
                raise cause from None
            raise LLMError(f"LLM deployment failed: {type(exc).__name__}: {exc}"[:300]) from exc


def _result(fut):
    try:
        return fut.result()
    except EaiError as exc:  # one failed row must not fail the batch: the row gets null, stats count it
        return exc


def serve_app_running(app_name: str = SERVE_APP) -> bool:
    """True when Ray is connected and the Serve application ``app_name`` is deployed."""
    try:
        import ray
        if not ray.is_initialized():
            return False
        from ray import serve
        return app_name in serve.status().applications
    except Exception:  # noqa: BLE001 - no Serve controller, no app: not running
        return False


def resolve_client(via: str | None = None) -> EnrichClient:
    """``via`` (or EAI_ENRICH_VIA): serve | local | auto (serve when the app is running, else local)."""
    via = (via or settings().enrich_via).lower()
    if via == "serve" or (via == "auto" and serve_app_running()):
        return ServeClient()
    return LocalClient()


# --------------------------------------------------------------------------- tasks
def label_texts(labels: dict[str, str] | Sequence[str]) -> dict[str, str]:
    """label -> text embedded for it ("label: description", or the label alone)."""
    if isinstance(labels, dict):
        return {k: (f"{k}: {v}" if v else k) for k, v in labels.items()}
    return {str(k): str(k) for k in labels}


def classify_by_embedding(texts: list[str], labels: dict[str, str] | Sequence[str],
                          embed) -> tuple[list[str], list[float]]:
    """The closest label to each text by cosine similarity of embeddings, and a confidence in 0..1.

    The confidence is a softmax over the cosine similarities with a temperature that suits
    MiniLM's narrow cosine range (0.05), so a clear winner scores near 1 and a tie near 1/k.
    """
    lt = label_texts(labels)
    names = list(lt)
    vecs = embed(list(lt.values()) + list(texts))
    lab, txt = vecs[:len(names)], vecs[len(names):]
    sims = txt @ lab.T
    z = (sims - sims.max(axis=1, keepdims=True)) / 0.05
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    best = sims.argmax(axis=1)
    return [names[i] for i in best], [float(round(p[r, i], 4)) for r, i in enumerate(best)]


def _classify_prompt(text: str, labels: dict[str, str]) -> str:
    opts = "\n".join(f"- {k}" + (f": {v}" if v and v != k else "") for k, v in labels.items())
    return f"Classify the text into exactly one of these labels:\n{opts}\n\nText: {text}\n\nAnswer with the label only."


def parse_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an LLM answer names (first mentioned wins), or None."""
    low = answer.lower()
    hits = [(low.find(lab.lower()), lab) for lab in labels if lab.lower() in low]
    return min(hits)[1] if hits else None


def _extract_prompt(text: str, entity: str) -> str:
    return (f"List every {entity} that appears in the text. Copy each one exactly as written, separated by "
            f"commas. If there is none, answer: none\n\nText: {text}\n\n{entity.capitalize()}:")


def parse_entities(answer: str, text: str, *, max_share: float = 0.6) -> list[str]:
    """Entities named in an LLM answer, kept only when they occur in ``text`` (no invented values).

    An item longer than ``max_share`` of the text is the model echoing the input, not an entity.
    """
    items = re.split(r"[,;\n]", answer)
    out: list[str] = []
    low = text.lower()
    for it in items:
        it = it.strip().strip("-*•.\"' ").strip()
        if not it or it.lower() in ("none", "n/a", "null") or len(it) > max_share * len(text):
            continue
        if it.lower() in low and it.lower() not in (o.lower() for o in out):
            out.append(it)
    return out


def _summary_prompt(text: str) -> str:
    return f"Summarize the following text in one short sentence.\n\nText: {text}\n\nSummary:"


def clean_summary(answer: str) -> str:
    s = answer.strip().split("\n\n")[0].strip()
    return s.removeprefix("Summary:").strip()


# --------------------------------------------------------------------------- limits
class EnrichTooLarge(UserError):
    """An enrichment request is over one of its limits (HTTP 413): names the limit, its value and what was sent."""

    http_status = 413

    def __init__(self, message: str, *, limit: str, allowed: int, got: int) -> None:
        super().__init__(message, limit=limit, allowed=allowed, got=got)

    # read from the error's context, which survives pickling (a Serve replica raised it)
    @property
    def limit(self) -> str:
        return self.context["limit"]

    @property
    def allowed(self) -> int:
        return self.context["allowed"]

    @property
    def got(self) -> int:
        return self.context["got"]


@dataclass(frozen=True)
class EnrichLimits:
    """What one request (a server's, not a pipeline's) may ask of the enricher.

    The work is not the row count: every spec runs over every row, a classify spec embeds each text
    and its labels (the model's time grows with tokens), and an LLM spec costs one completion of up
    to ``max_tokens`` per row. The embedding defaults answer in a few seconds on 2 CPU cores; LLM
    completions on a CPU model are slower (tens of tokens per second), hence their own budget.
    """

    max_rows: int = 1000
    max_text_chars: int = 8192        # per text
    max_cells: int = 2000             # rows x specs
    max_labels: int = 64              # per classify spec
    max_label_chars: int = 4096       # all labels and their descriptions, all specs together
    max_embed_tokens: int = 8000      # texts of embedding-classified columns + their labels
    max_llm_calls: int = 32           # completions: rows x LLM specs (extract, summarize, classify by LLM)
    max_llm_tokens: int = 2048        # completions x max_tokens

    def check(self, rows: Sequence[dict[str, Any]], specs: Sequence[EnrichSpec], count_tokens=None) -> None:
        """``EnrichTooLarge`` for the first limit the request is over, before any model runs."""
        n = len(rows)
        _over(f"{n} rows", "max_rows", self.max_rows, n)
        _over(f"{len(specs)} specs x {n} rows = {len(specs) * n} cells", "max_cells", self.max_cells, len(specs) * n)
        label_chars = 0
        embedded: list[str] = []
        calls = llm_tokens = 0
        for k, spec in enumerate(specs):
            texts = [str(r.get(spec.column)) for r in rows if r.get(spec.column) is not None
                     and str(r.get(spec.column)).strip()]
            longest = max((len(t) for t in texts), default=0)
            _over(f"enrich[{k}] ('{spec.column}') has a text of {longest} characters", "max_text_chars",
                  self.max_text_chars, longest)
            if spec.task == "classify":
                labels = label_texts(spec.labels or [])
                _over(f"enrich[{k}] has {len(labels)} labels", "max_labels", self.max_labels, len(labels))
                label_chars += sum(len(t) for t in labels.values())
                _over(f"the labels of all specs hold {label_chars} characters", "max_label_chars",
                      self.max_label_chars, label_chars)
            if spec.task == "classify" and spec.method != "llm":
                embedded += list(label_texts(spec.labels or []).values()) + texts
            else:
                calls += len(texts)
                llm_tokens += len(texts) * spec.max_tokens
        _over(f"the LLM specs need {calls} completions", "max_llm_calls", self.max_llm_calls, calls)
        _over(f"the LLM specs may write {llm_tokens} tokens (completions x max_tokens)", "max_llm_tokens",
              self.max_llm_tokens, llm_tokens)
        if embedded:
            if count_tokens is None:
                from eai_ray.processing.mapping.limits import default_token_counter
                count_tokens = default_token_counter()
            tokens = count_tokens(embedded)
            _over(f"the classified texts and their labels make {tokens} embedding tokens", "max_embed_tokens",
                  self.max_embed_tokens, tokens)


def _over(what: str, limit: str, allowed: int, got: int) -> None:
    if got > allowed:
        raise EnrichTooLarge(f"{what}; the limit is {allowed} ({limit})", limit=limit, allowed=allowed, got=got)


# --------------------------------------------------------------------------- table
def _texts(table: pa.Table, column: str) -> tuple[list[str], list[int]]:
    if column not in table.column_names:
        raise EaiError(f"enrich: column '{column}' is not in the table", column=column)
    values = table.column(column).to_pylist()
    idx = [i for i, v in enumerate(values) if v is not None and str(v).strip()]
    return [str(values[i]) for i in idx], idx


def _llm_answers(client: EnrichClient, prompts: list[str], spec: EnrichSpec, stats: EnrichStats,
                 stop: list[str] | None = None) -> list[str | None]:
    out: list[str | None] = []
    if not prompts:
        return out
    for c in client.complete_many(prompts, max_tokens=spec.max_tokens, system=SYSTEM, stop=stop):
        if isinstance(c, Exception):
            key = type(c).__name__
            stats.errors[key] = stats.errors.get(key, 0) + 1
            out.append(None)
        else:
            stats.add(c)
            out.append(c.text)
    return out


def enrich_table(table: pa.Table, specs: Sequence[EnrichSpec], client: EnrichClient,
                 stats: EnrichStats | None = None) -> pa.Table:
    """``table`` with one new string column per spec (classify adds ``<output>_confidence`` too).

    Null or blank inputs give null outputs without a model call; a failed LLM call gives null
    for that row and is counted in ``stats.errors`` (the batch goes on).
    """
    stats = stats if stats is not None else EnrichStats()
    stats.rows += table.num_rows
    n = table.num_rows
    for spec in specs:
        texts, idx = _texts(table, spec.column)
        values: list[Any] = [None] * n
        conf: list[float | None] | None = None
        if spec.task == "classify":
            lt = label_texts(spec.labels or [])
            conf = [None] * n
            if spec.method == "llm":
                answers = _llm_answers(client, [_classify_prompt(t, lt) for t in texts], spec, stats)
                for i, a in zip(idx, answers):
                    values[i] = parse_label(a, list(lt)) if a is not None else None
            elif texts:
                assert spec.labels is not None  # EnrichSpec's validator requires labels for classify
                labels, scores = classify_by_embedding(texts, spec.labels, client.embed)
                for i, lab, s in zip(idx, labels, scores):
                    values[i], conf[i] = lab, s
        elif spec.task == "extract":
            answers = _llm_answers(client, [_extract_prompt(t, spec.entity or "entity") for t in texts], spec,
                                   stats, stop=["\n\n"])
            for i, t, a in zip(idx, texts, answers):
                if a is not None:
                    values[i] = "; ".join(parse_entities(a, t)) or None
        else:  # summarize
            answers = _llm_answers(client, [_summary_prompt(t) for t in texts], spec, stats)
            for i, a in zip(idx, answers):
                values[i] = clean_summary(a) if a is not None else None
        assert spec.output is not None  # EnrichSpec's validator sets it
        table = _set_column(table, spec.output, pa.array(values, type=pa.string()))
        if conf is not None:
            table = _set_column(table, f"{spec.output}_confidence", pa.array(conf, type=pa.float64()))
    return table


def _set_column(table: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, arr)
    return table.append_column(name, arr)


def output_columns(specs: Sequence[EnrichSpec]) -> list[tuple[str, str]]:
    """(input column, output column) pairs, for lineage."""
    out: list[tuple[str, str]] = []
    for s in specs:
        assert s.output is not None  # EnrichSpec's validator sets it
        out.append((s.column, s.output))
        if s.task == "classify":
            out.append((s.column, f"{s.output}_confidence"))
    return out


# --------------------------------------------------------------------------- Ray Data stage
class EnrichBatch:
    """``map_batches`` callable: one client per Ray Data worker, reused across batches."""

    def __init__(self, specs: list[dict[str, Any]], via: str | None = None) -> None:
        self.specs = [EnrichSpec.model_validate(s) for s in specs]
        self.client = resolve_client(via)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return enrich_table(batch, self.specs, self.client)


def enrich_dataset(ds, specs: Sequence[EnrichSpec], *, via: str | None = None, batch_size: int = 64,
                   concurrency: int = 1, num_cpus: float = 1):
    """The Ray Data stage: ``ds.map_batches`` over Arrow batches, ``concurrency`` model-holding workers.

    Example::

        ds = ray.data.from_arrow(table)
        out = enrich_dataset(ds, cfg.silver[0].enrich).to_arrow_refs()
    """
    return ds.map_batches(EnrichBatch, fn_constructor_kwargs={"specs": [s.model_dump() for s in specs], "via": via},
                          batch_format="pyarrow", batch_size=batch_size, concurrency=concurrency,
                          num_cpus=num_cpus)


def enrich_with_ray(table: pa.Table, specs: Sequence[EnrichSpec], *, via: str | None = None,
                    batch_size: int = 64, num_cpus: float = 1) -> pa.Table:
    """Run the Ray Data stage over an in-memory table on the connected Ray; rows keep their order."""
    import pyarrow.compute as pc
    import ray

    if not table.num_rows:
        return enrich_table(table, specs, LocalClient())
    if (via or settings().enrich_via) == "auto" and serve_app_running():
        via = "serve"
    if via == "serve":
        num_cpus = 0  # the workers only wait on the deployments, which hold the CPUs/GPUs
    row = "_eai_enrich_row"  # Ray Data may reorder blocks: put the rows back in input order
    indexed = table.append_column(row, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    ds = enrich_dataset(ray.data.from_arrow(indexed), specs, via=via, batch_size=batch_size, num_cpus=num_cpus)
    parts = [p for p in ray.get(ds.to_arrow_refs()) if p.num_rows]
    out = pa.concat_tables(parts, promote_options="permissive")
    out = out.take(pc.sort_indices(out.column(row)))
    return out.drop_columns([row])
