"""Vector index backends: exact answers, ANN recall, erasure on remove, persistence, batching."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from facelens.gallery import index_store
from facelens.index import (
    AutoIndex,
    ExactIndex,
    IVFIndex,
    MilvusIndex,
    SignScanIndex,
    VectorIndex,
    kernels,
    large_index,
    large_index_kind,
    sign_codes,
)

DIM = 64


def unit(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def noisy(v: np.ndarray, seed: int = 1, sigma: float = 0.06) -> np.ndarray:
    """Probes of enrolled faces: cosine ~0.8 to their source, like a second photo."""
    q = v + np.random.default_rng(seed).normal(0, sigma, v.shape).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def brute(ids: np.ndarray, gallery: np.ndarray, queries: np.ndarray, k: int):
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def files_under(*roots: Path) -> Iterator[bytes]:
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file():
                yield path.read_bytes()


@dataclass
class Backend:
    name: str
    make: Callable[[int], VectorIndex]
    storage: list[Path] = field(default_factory=list)  # files the backend writes besides save()


def _milvus(tmp_path: Path) -> Backend:
    pytest.importorskip("pymilvus", reason="pymilvus is not installed")
    db = tmp_path / "m.db"
    try:
        MilvusIndex(4, str(db), "probe").close()
    except Exception as e:  # any failure to start milvus-lite is a skip, with its reason
        pytest.skip(f"milvus-lite cannot start here: {type(e).__name__}: {e}")
    return Backend("milvus", lambda dim: MilvusIndex(dim, str(db)), [db])


def _scan(unit: str) -> Backend:
    """The sign scan on `unit` ("avx512" or "avx2"); a skip where it cannot run."""
    if not SignScanIndex.runs_here():
        pytest.skip(f"this CPU has no {SignScanIndex.NEEDS} (or scan_*.so not built): "
                    "SignScanIndex cannot run here")
    if unit not in kernels.units():
        pytest.skip(f"this CPU has no {unit.upper()}: the scan runs on "
                    f"{', '.join(kernels.units())} only")
    return Backend(unit, lambda dim: SignScanIndex(dim, unit=unit))


@pytest.fixture(params=["exact", "ivf", "sign", "sign-avx512", "auto", "milvus"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    match request.param:
        case "exact":
            return Backend("exact", ExactIndex)
        case "ivf":
            return Backend("ivf", IVFIndex)
        case "sign":
            return _scan("avx2")
        case "sign-avx512":
            return _scan("avx512")
        case "auto":  # a low threshold, so these small galleries cross it
            return Backend("auto", lambda dim: AutoIndex(dim, threshold=300))
        case _:
            return _milvus(tmp_path)


def test_exact_equals_brute_force() -> None:
    gallery, ids = unit(2_000), np.arange(2_000) * 7 + 3
    index = ExactIndex(DIM)
    index.add(ids, gallery)
    queries = np.vstack([noisy(gallery[:40]), unit(10, seed=5)])
    for k in (1, 10, 2_000):
        scores, found = index.search(queries, k)
        want_scores, want_ids = brute(ids, gallery, queries, k)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
        # equal scores may come in either order; everything else must match exactly
        assert (found == want_ids).mean() > 0.999
        assert all(set(f) == set(w) for f, w in zip(found, want_ids, strict=True))


def test_recall_at_5000(backend: Backend) -> None:
    n = 5_000
    gallery, ids = unit(n, 128), np.arange(n)
    index = backend.make(128)
    index.add(ids, gallery)
    queries = np.vstack([noisy(gallery[:: n // 150], sigma=0.08), unit(50, 128, seed=9)])
    scores, found = index.search(queries, 10)
    want_scores, want = brute(ids, gallery, queries, 10)
    recall1 = np.mean(found[:, 0] == want[:, 0])
    recall10 = np.mean([len(set(f) & set(w)) / 10 for f, w in zip(found, want, strict=True)])
    assert recall1 >= 0.99 and recall10 >= 0.95, (recall1, recall10)
    hit = found == want
    np.testing.assert_allclose(scores[hit], want_scores[hit], atol=2e-3)  # float16 storage


def test_remove_erases(backend: Backend, tmp_path: Path) -> None:
    n = 1_000
    gallery, ids = unit(n, seed=2), np.arange(n) + 100
    index = backend.make(DIM)
    index.add(ids, gallery)
    path = tmp_path / "index.bin"
    index.save(path)  # erasure must also reach what an earlier save wrote
    gone = np.arange(0, n, 20)
    assert index.remove(np.concatenate([ids[gone], [10**9]])) == len(gone)
    assert index.remove(ids[gone]) == 0
    assert len(index) == n - len(gone)
    assert not set(index.ids().tolist()) & set(ids[gone].tolist())

    _, found = index.search(gallery[gone], 50)
    assert not np.isin(found, ids[gone]).any()

    index.save(path)
    blobs = list(files_under(path, *backend.storage))
    assert any(gallery[1].tobytes() in b or gallery[1].astype(np.float16).tobytes() in b
               for b in blobs), "a kept vector should be in the files, or this test proves nothing"
    for row in gone:
        for encoded in (gallery[row].tobytes(), gallery[row].astype(np.float16).tobytes()):
            assert not any(encoded in b for b in blobs), f"removed vector {row} is still on disk"

    _, found = type(index).load(path).search(gallery[gone], 50)
    assert not np.isin(found, ids[gone]).any()


def test_save_load_round_trip(backend: Backend, tmp_path: Path) -> None:
    gallery = unit(800, seed=3)
    index = backend.make(DIM)
    index.add(np.arange(800), gallery)
    path = tmp_path / "index.bin"
    index.save(path)
    loaded = type(index).load(path)
    queries = np.vstack([noisy(gallery[:30]), unit(10, seed=4)])
    assert loaded.dim == DIM and len(loaded) == 800
    assert sorted(loaded.ids().tolist()) == list(range(800))
    for got, want in zip(loaded.search(queries, 5), index.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, want)


def test_batch_equals_single_queries(backend: Backend) -> None:
    gallery = unit(600, seed=6)
    index = backend.make(DIM)
    index.add(np.arange(600), gallery)
    queries = np.vstack([noisy(gallery[:15]), unit(5, seed=7)])
    scores, found = index.search(queries, 7)
    for i, q in enumerate(queries):
        one_scores, one_found = index.search(q[None], 7)
        np.testing.assert_array_equal(one_found[0], found[i])
        np.testing.assert_allclose(one_scores[0], scores[i], atol=1e-6)


def test_empty_and_short_results(backend: Backend) -> None:
    index = backend.make(DIM)
    scores, found = index.search(unit(3), 4)
    assert found.shape == scores.shape == (3, 4)
    assert (found == -1).all() and np.isneginf(scores).all()
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert len(index) == 0 and len(index.ids()) == 0

    index.add([5, 9], unit(2))
    scores, found = index.search(unit(1, seed=1), 4)
    assert sorted(found[0, :2].tolist()) == [5, 9] and (found[0, 2:] == -1).all()
    assert np.isfinite(scores[0, :2]).all() and np.isneginf(scores[0, 2:]).all()
    index.remove([5, 9])
    assert (index.search(unit(1), 2)[1] == -1).all()


def test_add_replaces_present_ids(backend: Backend) -> None:
    gallery = unit(400, seed=8)
    index = backend.make(DIM)
    index.add(np.arange(400), gallery)
    fresh = unit(1, seed=99)
    index.add([7], fresh)
    assert len(index) == 400
    _, found = index.search(np.vstack([fresh, gallery[7:8]]), 1)
    assert found[0, 0] == 7 and found[1, 0] != 7


def test_bad_input_is_rejected() -> None:
    index = ExactIndex(DIM)
    with pytest.raises(ValueError, match="non-negative"):
        index.add([-1], unit(1))
    with pytest.raises(ValueError, match="vectors must be"):
        index.add([1, 2], unit(1))
    with pytest.raises(ValueError, match="duplicate"):
        index.add([1, 1], unit(2))
    with pytest.raises(ValueError, match="queries must be"):
        index.search(np.zeros((2, DIM + 1), np.float32), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(unit(1), 0)


def test_auto_index_moves_to_ivf_and_reloads(tmp_path: Path) -> None:
    gallery = unit(1_200, seed=10)
    index = AutoIndex(DIM, threshold=1_000)
    index.add(np.arange(900), gallery[:900])
    assert not index.approximate
    index.add(np.arange(900, 1_200), gallery[900:])
    assert index.approximate and len(index) == 1_200
    assert (index.search(gallery[::100], 1)[1][:, 0] == np.arange(0, 1_200, 100)).all()

    path = tmp_path / "gallery.idx"
    index.save(path)
    again = AutoIndex.load(path, threshold=1_000)
    assert again.approximate and len(again) == 1_200 and again.dim == DIM

    # a cache of the older 12-partition IVF layout, or of the retired 4-bit scan or HNSW
    # graph, is refused (the gallery rebuilds it), never read with this layout's arithmetic
    old = tmp_path / "old.idx"
    for magic in (b"FLIVFMT\n", b"FLSCAN1\n", b"FLHNSW1\n"):
        old.write_bytes(magic + path.read_bytes()[8:])
        with pytest.raises(ValueError):
            AutoIndex.load(old)

    small = tmp_path / "small.idx"
    exact = AutoIndex(DIM)
    exact.add([1], gallery[:1])
    exact.save(small)
    assert not AutoIndex.load(small).approximate


def _rows_per_partition(index: IVFIndex) -> list[np.ndarray]:
    """The store rows filed in each partition's lists, sorted."""
    import faiss

    ivf = index._parts()[0]
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    cells = ivf.nlist // IVFIndex.TABLES
    parts = []
    for t in range(IVFIndex.TABLES):
        rows = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(t * cells, (t + 1) * cells) if lists.list_size(i)]
        parts.append(np.sort(np.concatenate(rows)))
    return parts


def test_ivf_files_every_face_once_in_each_partition(tmp_path: Path) -> None:
    """The lists are made at 1,000 faces; faces added later are filed into one list of every
    partition too, and a removed face leaves all of them, before and after a save."""
    gallery = unit(2_000, 128, seed=12)
    index = IVFIndex(128)
    index.add(np.arange(2_000), gallery)
    live = np.arange(2_000)
    for rows in _rows_per_partition(index):
        np.testing.assert_array_equal(rows, live)  # rows = ids here: added in order
    index.remove(np.arange(0, 2_000, 10))
    path = tmp_path / "ivf.idx"
    index.save(path)
    loaded = IVFIndex.load(path)  # not compacted: a tenth dead is under the quarter
    kept = np.setdiff1d(live, np.arange(0, 2_000, 10))
    for rows in _rows_per_partition(loaded):
        np.testing.assert_array_equal(rows, kept)
    probed = kept[::37]
    _, found = loaded.search(noisy(gallery[probed], sigma=0.08), 1)
    np.testing.assert_array_equal(found[:, 0], probed)
    newcomer = unit(1, 128, seed=13)  # enrolled after a restart: filed by the loaded lists
    loaded.add([5_000], newcomer)
    for rows in _rows_per_partition(loaded):
        assert np.count_nonzero(rows == 2_000) == 1  # its row: after the 2,000 saved (dead too)
    assert loaded.search(noisy(newcomer, sigma=0.08), 1)[1][0, 0] == 5_000


@pytest.mark.parametrize("embedder", ["fusion", "sface-flip"])
def test_search_bench_faces_look_like_the_measured_ones(embedder: str) -> None:
    """The bench's synthetic gallery copies what was measured on LFW: the mean's norm, the
    spread of centred vectors, and how close a second photo of a person is to the first."""
    from facelens.eval.search_bench import _data, _stats

    stats = _stats(embedder)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    gallery, probes, mates = _data(20_000, 2_500, "face-like", stats, rng, lambda _: None)
    assert gallery.shape == (20_000, stats["dim"]) and len(mates) == 2_000
    assert np.allclose(np.linalg.norm(gallery, axis=1), 1, atol=1e-5)
    mean = gallery.mean(0)
    assert abs(np.linalg.norm(mean) - stats["mean_norm"]) < 0.02
    centred = gallery - mean
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    second = probes[:len(mates)] - mean
    second /= np.linalg.norm(second, axis=1, keepdims=True)
    genuine = np.sum(centred[mates] * second, axis=1)
    median = stats["genuine_cosine_quantiles"][10]
    assert abs(np.median(genuine) - median) < 0.03
    strangers = np.sum(centred[:2_000] * centred[2_000:4_000], axis=1)
    # two strangers: centred cosine ~0 with the spread of the measured spectrum's dimension
    assert abs(strangers.mean()) < 0.01
    assert abs(strangers.std() - stats["participation_ratio"] ** -0.5) < 0.01


@pytest.mark.parametrize("threads", [2, 5])
@pytest.mark.parametrize("scan_unit", SignScanIndex.UNITS)
def test_scan_finds_every_face_itself(threads: int, scan_unit: str) -> None:
    """Odd sizes: 1,037 faces fill 3 blocks of 512, the last part-filled, and 5 threads leave
    two with none; 5 threads split the blocks unevenly and find more candidates than are
    re-scored; 64-d and 128-d faces fill 256 bits with rotations of their axes."""
    scan = _scan(scan_unit)
    for dim in (64, 128, 256):
        gallery = unit(1_037, dim, seed=20)
        index = scan.make(dim)
        assert isinstance(index, SignScanIndex)
        index._threads = threads
        index.add(np.arange(1_037) * 3, gallery)
        assert scan_unit.upper() in index.params["backend"]
        scores, found = index.search(gallery, 2)
        np.testing.assert_array_equal(found[:, 0], np.arange(1_037) * 3)
        np.testing.assert_allclose(scores[:, 0], 1, atol=2e-3)
        assert (found[:, 1] != found[:, 0]).all() and (scores[:, 1] < scores[:, 0]).all()


def test_a_saved_index_of_another_kind_than_this_machine_builds_is_rebuilt(
        tmp_path: Path) -> None:
    """An IVF cache saved before the scan could run here (or on another CPU) is `outdated`
    where the scan runs, so the store hands back nothing and the gallery rebuilds it from the
    database; the kind this machine builds loads as it is."""
    gallery, key = unit(1_200, seed=23), bytes(range(32))
    for gallery_id, inner in enumerate((IVFIndex(DIM), large_index(DIM))):
        saved = AutoIndex(DIM, threshold=300, inner=inner)
        saved.add(np.arange(1_200), gallery)
        index_store.save(tmp_path, gallery_id, key, saved)
    ivf, large = (index_store.load(tmp_path, gallery_id, key, DIM) for gallery_id in (0, 1))
    assert large is not None and not large.outdated and len(large) == 1_200
    if large_index_kind() is not IVFIndex:
        assert ivf is None
    else:
        assert ivf is not None and not ivf.outdated and len(ivf) == 1_200


def test_a_sign_index_of_the_earlier_layout_is_rebuilt(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A sign index saved by the version before the filter (magic FLSIGN1, no `_passing`)
    is not read: the store hands back nothing and the gallery rebuilds it from the
    database."""
    _scan("avx2" if "avx2" in kernels.units() else "avx512")
    saved = AutoIndex(DIM, threshold=300, inner=SignScanIndex(DIM))
    saved.add(np.arange(1_200), unit(1_200, seed=27))
    with monkeypatch.context() as patch:
        patch.setattr(SignScanIndex, "_magic", b"FLSIGN1\n")
        index_store.save(tmp_path, 0, bytes(range(32)), saved)
    assert index_store.load(tmp_path, 0, bytes(range(32)), DIM) is None
    index_store.save(tmp_path, 0, bytes(range(32)), saved)
    loaded = index_store.load(tmp_path, 0, bytes(range(32)), DIM)
    assert loaded is not None and len(loaded) == 1_200


@pytest.mark.parametrize("scan_unit", SignScanIndex.UNITS)
def test_sign_scan_keeps_each_querys_nearest_codes(scan_unit: str) -> None:
    """The kernel agrees with numpy on the stored codes: each query's bits and its STRONG
    strongest directions as the filter reads them, the faces the filter passes (at most
    `pass` of those directions unlike the query), and a thread keeps exactly the `keep`
    lowest weighted counts among them (ties at the last aside), never a removed face. 3,000
    faces on one thread: a gallery small enough that about a third passes."""
    _scan(scan_unit)
    gallery = unit(3_000, 256, seed=24)
    index = SignScanIndex(256, unit=scan_unit)
    index._threads = 1
    index.add(np.arange(3_000), gallery)
    index.remove(np.arange(0, 3_000, 7))
    queries = np.vstack([noisy(gallery[:40], sigma=0.05), unit(40, 256, seed=25)])
    keep = 64
    scores = np.empty((len(queries), keep), np.int32)
    rows = np.empty((len(queries), keep), np.int64)
    index._candidates(queries, keep, scores, rows)

    # the codes from the stored float16 rows, the queries as the kernel got them
    codes = (index._vectors[:3_000].astype(np.float32) - index._mean) @ index._axes > 0
    asked = index.queries(queries)
    passing = index._pass(keep)
    assert 20 < passing < sign_codes.STRONG
    bits = np.unpackbits(asked["bits"].view(np.uint8), axis=1, bitorder="little").astype(bool)
    strong = np.unpackbits(asked["strong"].view(np.uint8), axis=1,
                           bitorder="little").astype(bool)
    values = (queries - index._mean) @ index._axes  # the same signs, up to rounding near 0
    assert (bits == (values > 0))[np.abs(values) > 1e-5].all()
    live = np.arange(3_000) % 7 != 0
    word = sign_codes.FACES // 8  # `at` holds byte offsets of 64-byte words
    for q in range(len(queries)):
        directions = np.flatnonzero(strong[q])
        assert len(directions) == sign_codes.STRONG
        strongest = np.sort(np.abs(values[q]))[-sign_codes.STRONG]
        assert np.abs(values[q, directions]).min() >= strongest - 1e-6
        at = asked["at"][q] // word  # the words of faces unlike the query: inverted for 1-bits
        np.testing.assert_array_equal(np.sort(at % 256), directions)
        np.testing.assert_array_equal(at >= 256, bits[q, at % 256])
        unlike = codes != bits[q]
        passed = live & (unlike[:, directions].sum(axis=1) <= passing)
        h = unlike.sum(axis=1) + 2 * unlike[:, directions].sum(axis=1)
        assert (rows[q] >= 0).all() and passed[rows[q]].all()
        np.testing.assert_array_equal(-scores[q], h[rows[q]])
        assert -scores[q].max() == np.sort(h[passed])[0]
        assert -scores[q].min() <= np.sort(h[passed])[keep - 1]


@pytest.mark.parametrize("scan_unit", SignScanIndex.UNITS)
@pytest.mark.parametrize("embedder", ["fusion", "sface-flip"])
def test_sign_scan_keeps_the_mates_of_face_like_vectors(embedder: str, scan_unit: str) -> None:
    """On the bench's face-like vectors the 256 sign bits keep every mate exact search names
    (fused vectors: ~210 axes with spread plus rotations of them; SFace: 128 axes plus 128
    rotated), with float16-exact scores. 10 candidates a thread: then 30,000 faces are
    enough for the filter to pass as few as it does in a gallery of millions (~1%)."""
    _scan(scan_unit)
    from facelens.eval.search_bench import _data, _stats

    stats = _stats(embedder)
    gallery, probes, mates = _data(30_000, 500, "face-like", stats, np.random.default_rng(1),
                                   lambda _: None)
    index = SignScanIndex(stats["dim"], unit=scan_unit, candidates=10)
    exact = ExactIndex(stats["dim"])
    for each in (index, exact):
        each.add(np.arange(len(gallery)), gallery)
    index._threads = 2
    assert index._passing[index._pass(10)] < 0.012
    scores, found = index.search(probes, 10)
    want_scores, want = exact.search(probes, 10)
    named = np.flatnonzero(want[:len(mates), 0] == mates)
    assert len(named) > 0.85 * len(mates)
    assert np.mean(found[named, 0] == mates[named]) >= 0.99
    hit = found == want
    np.testing.assert_allclose(scores[hit], want_scores[hit], atol=2e-3)


@pytest.mark.parametrize("scan_unit", SignScanIndex.UNITS)
def test_sign_scan_fills_k_when_threads_keep_more_than_they_hold(scan_unit: str) -> None:
    """5 threads over 1,037 faces (3 blocks) hold 512, 512, 13 and none, so with 300 kept a
    thread most of their slots are empty: those must rank below every face when the threads'
    finds are cut to the best 2·keep (not wrap around when negated, which handed back -1
    ids)."""
    _scan(scan_unit)
    gallery = unit(1_037, 256, seed=26)
    index = SignScanIndex(256, unit=scan_unit)
    index._threads = 5
    index.add(np.arange(1_037), gallery)
    found = index.search(noisy(gallery[::50]), 300)[1]
    assert (found >= 0).all() and all(len(set(row)) == 300 for row in found)
    np.testing.assert_array_equal(found[:, 0], np.arange(0, 1_037, 50))


def test_a_milvus_lite_file_is_searched_by_the_next_process(tmp_path: Path) -> None:
    """milvus-lite keeps a file that the next process (the next CLI command, a restarted
    serve) reopens: its collection came back released, and each search failed with
    'collection ... is in state released'."""
    (tmp_path / "probe").mkdir()
    _milvus(tmp_path / "probe")  # skips where milvus-lite cannot start
    here = tmp_path / "kept"
    here.mkdir()
    np.save(here / "g.npy", unit(50))
    prelude = ("import json, sys; from pathlib import Path; import numpy as np; "
               "from facelens.index.milvus import MilvusIndex; ")
    steps = {  # each its own process, as two CLI commands are
        "build": "index = MilvusIndex(int(sys.argv[3]), sys.argv[1] + '/m.db'); "
                 "index.add(np.arange(50), np.load(sys.argv[2])); "
                 "index.save(Path(sys.argv[1]) / 'index.json'); index.close()",
        "search": "index = MilvusIndex.load(Path(sys.argv[1]) / 'index.json'); "
                  "_, ids = index.search(np.load(sys.argv[2])[:5], 1); "
                  "print(json.dumps(ids.tolist()))",
    }
    for step in steps.values():
        done = subprocess.run([sys.executable, "-c", prelude + step, str(here),
                               str(here / "g.npy"), str(DIM)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[0], [1], [2], [3], [4]]
