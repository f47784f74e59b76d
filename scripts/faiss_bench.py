#!/usr/bin/env python3
"""faiss reference for `kiana bench vector`: exact IndexFlatIP vs IndexHNSWFlat (inner product).

Usage:
  faiss_bench.py --base BASE.f32 --queries Q.f32 --dim 384 --k 10 --truth TRUTH.i32
                 --m 16 --ef-construction 100 --ef 16,32,64,128,256 [--repeat 3]
BASE/Q: float32 little-endian row-major, L2-normalised (inner product = cosine). TRUTH: int32
row-major (num_queries x k) exact top-k ids. Builds use all faiss/OpenMP threads; searches run with
faiss.omp_set_num_threads(1), one query per search() call in a loop (like a single-threaded server);
qps = best of --repeat loops. recall@k = |returned top-k & true top-k| / k, averaged over queries.
"qps_batch" is one batched search() call over all queries (still 1 thread), for comparison.
Prints one JSON line: {"faiss", "build_seconds" (HNSW add), "build_threads", "flat_build_seconds",
"n", "queries", "k", "flat": {"recall", "qps", "qps_batch"}, "hnsw": [{"ef", "recall", "qps",
"qps_batch"}, ...]}.  faiss missing -> {"error": "faiss not installed"}, exit 3; other errors -> one
line on stderr, exit 2.  Dependencies: numpy, faiss-cpu.
"""
import argparse, json, sys, time
import numpy as np


class Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"faiss_bench.py: {message}", file=sys.stderr)
        sys.exit(2)


def read_matrix(path, dtype, cols):
    a = np.fromfile(path, dtype=dtype)
    if a.size == 0 or a.size % cols:
        raise ValueError(f"{path}: {a.size} values is not a non-empty multiple of {cols}")
    return np.ascontiguousarray(a.reshape(-1, cols))


def measure(index, queries, truth, k, repeat):
    best = float("inf")
    for _ in range(repeat):
        ids = np.empty((len(queries), k), dtype=np.int64)
        t0 = time.perf_counter()
        for i in range(len(queries)):
            ids[i] = index.search(queries[i:i + 1], k)[1][0]
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    index.search(queries, k)
    batch = time.perf_counter() - t0
    recall = (ids[:, :, None] == truth[:, None, :]).any(2).sum() / truth.size
    return {"recall": float(recall), "qps": len(queries) / best, "qps_batch": len(queries) / batch}


def main():
    ap = Parser(description="faiss flat vs HNSW reference (see module docstring)")
    for name in ("--base", "--queries", "--truth"):
        ap.add_argument(name, required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    try:
        import faiss
    except ImportError:
        print(json.dumps({"error": "faiss not installed"}))
        return 3
    try:
        efs = [int(e) for e in a.ef.split(",") if e.strip()]
        base = read_matrix(a.base, "<f4", a.dim).astype(np.float32)
        queries = read_matrix(a.queries, "<f4", a.dim).astype(np.float32)
        truth = read_matrix(a.truth, "<i4", a.k)
        if len(truth) != len(queries):
            raise ValueError(f"truth has {len(truth)} rows for {len(queries)} queries")
        if a.k > len(base) or a.repeat < 1 or not efs:
            raise ValueError("need k <= base size, --repeat >= 1 and at least one --ef")

        threads = faiss.omp_get_max_threads()
        t0 = time.perf_counter()
        flat = faiss.IndexFlatIP(a.dim)
        flat.add(base)
        flat_build = time.perf_counter() - t0
        hnsw = faiss.IndexHNSWFlat(a.dim, a.m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = a.ef_construction
        t0 = time.perf_counter()
        hnsw.add(base)
        build = time.perf_counter() - t0

        faiss.omp_set_num_threads(1)
        result = {"faiss": faiss.__version__, "build_seconds": build, "build_threads": threads,
                  "flat_build_seconds": flat_build, "n": len(base), "queries": len(queries), "k": a.k,
                  "m": a.m, "ef_construction": a.ef_construction,
                  "flat": measure(flat, queries, truth, a.k, a.repeat), "hnsw": []}
        for ef in efs:
            hnsw.hnsw.efSearch = ef
            result["hnsw"].append({"ef": ef, **measure(hnsw, queries, truth, a.k, a.repeat)})
        print(json.dumps(result))
        return 0
    except Exception as e:
        print(f"faiss_bench.py: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
