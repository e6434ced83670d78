"""Bounded work per request for the AI layer's expensive routes (issue 10, findings 1 and 2), without Ray:
the matcher's pair stage as whole-matrix operations (equal to the scalar definitions), the limits of
/v1/map and /v1/enrich with messages naming the limit and the value, the matcher's time at the
allowed maximum, and a checkpoint that stops the matcher. The models are fakes (tests/unit/fakes.py);
the matcher with the real embedding model at the maximum is tests/integration/test_mapping_at_maximum.py."""
import random
import string

import numpy as np
import pytest

from eai_ray.config import EnrichSpec
from eai_ray.processing.enrich import EnrichLimits, EnrichTooLarge
from eai_ray.processing.mapping import names as N
from eai_ray.processing.mapping import pairwise as PW
from eai_ray.processing.mapping.features import _abbrev, _strip, describe, pair_features, prepare
from eai_ray.processing.mapping.limits import MapLimits, MappingInvalid, MappingTooLarge, default_token_counter
from eai_ray.processing.mapping.matcher import map_columns
from eai_ray.processing.mapping.profile import (
    numeric_features,
    pattern_similarity,
    shape_similarity,
    type_compatibility,
    value_overlap,
)
from tests.unit.fakes import FakeScorer, fake_encode

WORDS = ("order customer cust invoice inv amount amt date dt name nm number num no phone ph email status sts "
         "price prc quantity qty ship shipping address addr region supplier supp total tot").split()


def columns(n, rng, *, prefix="", samples=6):
    cols = []
    for i in range(n):
        name = prefix + "_".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + rng.choice(["", str(i)])
        kind = rng.choice(["int", "float", "word", "date", "email", "mixed"])
        if kind == "int":
            vals = [rng.randint(-50, 5000) for _ in range(samples)]
        elif kind == "float":
            vals = [round(rng.uniform(-10, 1e4), 2) for _ in range(samples)]
        elif kind == "date":
            vals = [f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}" for _ in range(samples)]
        elif kind == "email":
            vals = [f"{rng.choice(WORDS)}@x{rng.randint(0, 3)}.com" for _ in range(samples)]
        elif kind == "mixed":
            vals = [rng.choice([None, "", "N/A", str(rng.randint(0, 9)), rng.choice(WORDS)]) for _ in range(samples)]
        else:
            vals = [rng.choice(WORDS).upper() + str(rng.randint(0, 3)) for _ in range(samples)]
        cols.append({"name": name, "samples": vals, "type": rng.choice([None, None, "varchar", "bigint", "double"])})
    # unique names, as the matcher requires
    seen = {}
    for c in cols:
        seen[c["name"]] = seen.get(c["name"], -1) + 1
        c["name"] += f"_{seen[c['name']]}" if seen[c["name"]] else ""
    return [c for i, c in enumerate(cols) if c["name"] not in {x["name"] for x in cols[:i]}]


def scalar_pair_features(src, tgt):
    """The per-pair Python loop the matrix code replaced, from the scalar definitions in names/profile."""
    raw_s = [_strip(c["name"], src.prefix) for c in src.columns]
    raw_t = [_strip(c["name"], tgt.prefix) for c in tgt.columns]
    lex = np.zeros((len(raw_s), len(raw_t), 5), dtype=np.float32)
    val = np.zeros((len(raw_s), len(raw_t), 11), dtype=np.float32)
    for i, (ps, ts) in enumerate(zip(src.profiles, src.tokens)):
        for j, (pt, tt) in enumerate(zip(tgt.profiles, tgt.tokens)):
            lex[i, j] = (N.jaccard(ts, tt), N.soft_token_jaccard(ts, tt),
                         N.levenshtein_sim("".join(ts), "".join(tt)), N.levenshtein_sim(raw_s[i], raw_t[j]),
                         _abbrev(raw_s[i], raw_t[j], ts, tt))
            vj, vc = value_overlap(ps, pt)
            both, rng_, mag = numeric_features(ps, pt)
            hi = max(ps.mean_len, pt.mean_len)
            val[i, j] = (type_compatibility(ps.family, pt.family), float(ps.family == pt.family),
                         shape_similarity(ps, pt), pattern_similarity(ps, pt), vj, vc, both, rng_, mag,
                         min(ps.mean_len, pt.mean_len) / hi if hi > 0 else 0.0,
                         abs(ps.distinct_ratio - pt.distinct_ratio))
    return lex, val


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pair_features_equal_the_scalar_definitions(seed):
    rng = random.Random(seed)
    src = prepare(columns(40, rng, prefix="c_" if seed == 2 else ""), fake_encode)
    tgt = prepare(columns(35, rng), fake_encode)
    F = pair_features(src, tgt)
    lex, val = scalar_pair_features(src, tgt)
    assert np.array_equal(F[:, :, 4:9], lex)
    # shape similarity sums in the order of a set of shape names, which Python varies per process
    assert np.allclose(F[:, :, 9:20], val, rtol=0, atol=1e-6)
    assert np.array_equal(np.delete(F[:, :, 9:20], 2, axis=2), np.delete(val, 2, axis=2))


def test_string_matrices_equal_the_scalar_functions_on_awkward_strings():
    rng = random.Random(7)
    a = ["".join(rng.choice("abcde_") for _ in range(rng.randint(0, 14))) for _ in range(30)]
    b = ["".join(rng.choice("abcde_") for _ in range(rng.randint(0, 14))) for _ in range(25)]
    a += ["x" * 64, "ab" * 32, "é\ud800z", "ÉCOLE", ""]
    b += ["x" * 63, "ba" * 32, "e", "école", "cust"]
    assert np.array_equal(PW.levenshtein_matrix(a, b), [[N.levenshtein(x, y) for y in b] for x in a])
    assert np.array_equal(PW.levenshtein_sim_matrix(a, b), [[N.levenshtein_sim(x, y) for y in b] for x in a])
    ta = [tuple(t for t in x.split("_") if t) for x in a]
    tb = [tuple(t for t in y.split("_") if t) for y in b]
    assert np.array_equal(PW.soft_jaccard_matrix(ta, tb), [[N.soft_token_jaccard(x, y) for y in tb] for x in ta])
    assert np.array_equal(PW.jaccard_matrix(ta, tb), [[N.jaccard(x, y) for y in tb] for x in ta])
    ca, cb = [x.replace("_", "") for x in a], [y.replace("_", "") for y in b]
    ia = ["".join(t[0] for t in x) for x in ta]
    ib = ["".join(t[0] for t in y) for y in tb]
    assert np.array_equal(PW.abbreviation_matrix(ca, cb, ia, ib),
                          [[_abbrev(x, y, tx, ty) for y, ty in zip(b, tb)] for x, tx in zip(a, ta)])


def test_long_names_are_compared_on_their_first_64_characters():
    # finding 1: two 8,000-character names took 27 s in the pure-Python edit distance
    a, b = "a" * 8000, "a" * 64 + "b" * 7936  # the same first 64 characters, far apart as a whole
    sim = PW.levenshtein_sim_matrix([a], [b])
    assert sim[0, 0] == N.levenshtein_sim(a[:64], b[:64]) == 1.0
    res = map_columns([{"name": a, "samples": ["x"]}], [{"name": b, "samples": ["y"]}, {"name": "id"}],
                      encode=fake_encode, scorer=FakeScorer())
    assert len(res) == 1


# --------------------------------------------------------------------------- /v1/map limits
def test_map_limits_name_the_limit_and_the_value():
    lim = MapLimits(max_columns=10, max_name_chars=20, max_description_chars=30, max_samples=3, max_sample_chars=8)
    ok = [{"name": "a", "samples": [1, "x", None]}]
    lim.check_columns(ok, ok)
    cases = [
        ([{"name": f"c{i}"} for i in range(11)], "max_columns", 10, 11, "source_columns has 11 columns"),
        ([{"name": "n" * 21}], "max_name_chars", 20, 21, "source_columns[0].name is 21 characters"),
        ([{"name": "a", "description": "d" * 31}], "max_description_chars", 30, 31, "description is 31"),
        ([{"name": "a", "samples": [1, 2, 3, 4]}], "max_samples", 3, 4, "has 4 samples"),
        ([{"name": "a", "samples": ["ok", "s" * 9]}], "max_sample_chars", 8, 9, "samples[1] is 9 characters"),
    ]
    for cols, limit, allowed, got, words in cases:
        with pytest.raises(MappingTooLarge) as e:
            lim.check_columns(cols, ok)
        assert (e.value.limit, e.value.allowed, e.value.got) == (limit, allowed, got)
        assert words in str(e.value) and limit in str(e.value) and str(allowed) in str(e.value)
        assert e.value.http_status == 413
    with pytest.raises(MappingTooLarge, match="target_schema has 11 columns"):
        lim.check_columns(ok, [{"name": f"c{i}"} for i in range(11)])
    with pytest.raises(MappingInvalid, match="samples\\[0\\] is a dict"):
        lim.check_columns([{"name": "a", "samples": [{"x": 1}]}], ok)
    with pytest.raises(MappingInvalid, match="duplicate"):
        map_columns([{"name": "a"}, {"name": "a"}], ok, encode=fake_encode)


def test_the_issues_sizes_are_refused_before_any_work():
    # finding 1: 1,500 x 1,500 columns took 59 s; 10,000 x 10,000 tried to allocate 9.3 GiB
    lim = MapLimits()

    def no_work(*args, **kwargs):
        raise AssertionError("a request over the limits reached the model")

    for n in (1_500, 10_000):
        cols = [{"name": f"column_{i}"} for i in range(n)]
        with pytest.raises(MappingTooLarge, match=f"has {n} columns; the limit is 256"):
            map_columns(cols, cols, encode=no_work, limits=lim, scorer=FakeScorer())
    with pytest.raises(MappingTooLarge, match="name is 8000 characters"):
        map_columns([{"name": "a" * 8000}], [{"name": "b" * 8000}], encode=no_work, limits=lim, scorer=FakeScorer())


def test_embedding_budget_counts_the_models_tokens_before_embedding():
    count = default_token_counter()
    assert count(["order date"]) == 4  # [CLS] order date [SEP]
    assert count(["x" * 5000]) <= 256  # the model reads at most 256 tokens of a text
    embedded = []

    def enc(texts):
        embedded.extend(texts)
        return fake_encode(texts)

    rng = random.Random(3)
    noise = [{"name": f"col{i}", "samples": ["".join(rng.choice(string.ascii_letters) for _ in range(40))
                                             for _ in range(8)]} for i in range(30)]
    with pytest.raises(MappingTooLarge) as e:
        map_columns(noise, noise[:5], encode=enc, limits=MapLimits(max_embed_tokens=2000), scorer=FakeScorer())
    assert e.value.limit == "max_embed_tokens" and e.value.got > 2000 and embedded == []
    map_columns(noise[:3], noise[:3], encode=enc, limits=MapLimits(max_embed_tokens=2000), scorer=FakeScorer())
    assert embedded


def max_size_columns(limits, seed, *, count=default_token_counter()):
    """Two sides of max_columns realistic columns whose embedded text fills the token budget."""
    rng = random.Random(seed)
    for k in range(8, 0, -1):
        sides = []
        for side in range(2):
            sides.append([{"name": f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{side}{i}",
                           "samples": [f"{rng.choice(WORDS)}{rng.randint(0, 99)}" for _ in range(k)]}
                          for i in range(limits.max_columns)])
        texts = describe(sides[0]).texts() + describe(sides[1]).texts()
        if count(list(dict.fromkeys(texts))) <= limits.max_embed_tokens:
            return sides
    raise AssertionError("no max-size request fits the token budget")


def test_pair_stage_at_the_maximum_scores_every_pair():
    """A request at the documented maximum (columns and token budget both at their limit) gets a
    feature row and a score for every pair. How long it takes is measured by benchmarks/api_load.py."""
    lim = MapLimits()
    src, tgt = max_size_columns(lim, 1)
    s, t = prepare(src, fake_encode), prepare(tgt, fake_encode)
    F = pair_features(s, t)
    assert F.shape[:2] == (lim.max_columns, lim.max_columns)
    P = FakeScorer().predict(F.reshape(-1, F.shape[-1]))
    assert P.shape == (lim.max_columns ** 2,) and np.isfinite(F).all()


def test_a_checkpoint_stops_the_matcher():
    rng = random.Random(5)
    src, tgt = columns(60, rng), columns(60, rng)
    calls = []

    class Stop(Exception):
        pass

    def checkpoint():
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        map_columns(src, tgt, encode=fake_encode, scorer=FakeScorer(), checkpoint=checkpoint)
    assert len(calls) == 3
    assert map_columns(src, tgt, encode=fake_encode, scorer=FakeScorer(), checkpoint=lambda: None)


def test_llm_disambiguation_is_bounded_per_request():
    class CountingLLM:
        calls = 0

        def complete(self, prompt, **kw):
            CountingLLM.calls += 1
            raise RuntimeError("no model here")

    # each source has two near-identical targets: every row is a close call the LLM could settle
    src = [{"name": f"amount_{i}", "samples": [1.5, 2.5, 3.5]} for i in range(10)]
    tgt = [{"name": f"amount_{i}_{k}", "samples": [1.5, 2.5, 3.5]} for k in "ab" for i in range(10)]
    res = map_columns(src, tgt, encode=fake_encode, scorer=FakeScorer(), llm=CountingLLM(),
                      limits=MapLimits(max_llm_calls=2))
    assert CountingLLM.calls == 2 and len(res) == 10
    assert sum("not sent to the LLM" in r["rationale"] for r in res) > 0


# --------------------------------------------------------------------------- /v1/enrich limits
def test_enrich_limits_count_work_not_rows():
    lim = EnrichLimits()
    rows = [{"t": f"order {i} arrived late"} for i in range(1000)]
    classify = EnrichSpec(column="t", task="classify", labels=["late", "fine"])
    lim.check(rows, [classify])
    # finding 2: 100 specs x 1,000 rows (30 KB) took 100 s
    with pytest.raises(EnrichTooLarge) as e:
        lim.check(rows, [classify] * 100)
    assert (e.value.limit, e.value.allowed, e.value.got) == ("max_cells", 2000, 100_000)
    assert "100 specs x 1000 rows = 100000 cells; the limit is 2000" in str(e.value) and e.value.http_status == 413


def test_enrich_labels_count_against_the_limits():
    lim = EnrichLimits(max_labels=10, max_label_chars=200, max_embed_tokens=500)
    rows = [{"t": "where is my parcel"}]
    with pytest.raises(EnrichTooLarge, match="has 11 labels; the limit is 10") as e:
        lim.check(rows, [EnrichSpec(column="t", task="classify", labels=[f"l{i}" for i in range(11)])])
    assert e.value.limit == "max_labels"
    long_labels = {f"label{i}": "a description of this label " * 2 for i in range(4)}
    with pytest.raises(EnrichTooLarge, match="labels of all specs hold") as e:
        lim.check(rows, [EnrichSpec(column="t", task="classify", labels=long_labels)])
    assert e.value.limit == "max_label_chars" and e.value.got > 200
    # label text is embedded with the rows: it counts against the token budget too
    many = [{"t": "where is my parcel, it has not arrived yet"} for _ in range(40)]
    with pytest.raises(EnrichTooLarge, match="embedding tokens") as e:
        lim.check(many, [EnrichSpec(column="t", task="classify", labels={"a": "b " * 40, "c": "d " * 40})])
    assert e.value.limit == "max_embed_tokens"


def test_enrich_llm_work_is_bounded():
    lim = EnrichLimits(max_llm_calls=10, max_llm_tokens=300)
    rows = [{"t": f"text {i}"} for i in range(11)]
    with pytest.raises(EnrichTooLarge, match="need 11 completions") as e:
        lim.check(rows, [EnrichSpec(column="t", task="summarize")])
    assert e.value.limit == "max_llm_calls"
    with pytest.raises(EnrichTooLarge, match="write 320 tokens") as e:
        lim.check(rows[:5], [EnrichSpec(column="t", task="summarize", max_tokens=64)])
    assert e.value.limit == "max_llm_tokens"
    with pytest.raises(EnrichTooLarge, match="text of 9000 characters"):
        EnrichLimits().check([{"t": "x" * 9000}], [EnrichSpec(column="t", task="summarize")])
    lim.check([{"t": None}, {"t": "  "}] * 50, [EnrichSpec(column="t", task="summarize")])  # blanks cost nothing
