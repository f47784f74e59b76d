#!/usr/bin/env python3
"""Reference all-MiniLM-L6-v2 sentence embedder in plain numpy (for `kiana bench embed`).

Independent implementation of the BERT forward pass: word+position+token_type(0) embeddings ->
LayerNorm(eps 1e-12) -> 6 x [12-head self-attention (head 32) with padding mask, residual+LayerNorm,
384->1536 erf-GELU ->384, residual+LayerNorm] -> mean pooling over non-padding tokens -> L2 norm.
Weights are read straight from model.safetensors (8-byte LE header length, JSON header, F32 data),
kept as float32 and transposed/fused once at load; all matmuls go through numpy's BLAS (`@`).
Only dependency: numpy.

Usage:
  minilm_numpy.py --model DIR --check REFERENCE.json
      Embeds each reference sentence's ids alone and all together in one padded batch; prints the
      lower of the two cosines vs. the reference embedding per sentence; exit 1 if any < 0.9999.
  minilm_numpy.py --model DIR --ids IDS.json --batch 32 [--repeat 3] [--out OUT.f32]
      IDS.json: JSON list of token-id lists (with [CLS]/[SEP], <= 512 ids each). Consecutive batches
      of --batch in the given order, each padded to its own longest sequence. Loads the model and runs
      one warm-up batch untimed, then times the whole set --repeat times and prints one JSON line:
      {"sentences", "seconds" (best), "sentences_per_second", "threads" (BLAS, or null), "numpy"}.
      --out writes the last run's embeddings as N x 384 float32 little-endian, row-major.
Errors: one line on stderr, exit 2.
"""
import argparse, glob, json, os, struct, sys, time
import numpy as np

LAYERS, HEADS, HIDDEN, EPS = 6, 12, 384, 1e-12
HEAD_DIM = HIDDEN // HEADS


def load_safetensors(path):
    """name -> float32 ndarray (read-only views into a memmap of the file)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(t["shape"])
    return out


def load_model(model_dir):
    w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    m = {"word": f32(w["embeddings.word_embeddings.weight"]),
         "pos": f32(w["embeddings.position_embeddings.weight"]),
         "type0": f32(w["embeddings.token_type_embeddings.weight"][0]),
         "ln": (f32(w["embeddings.LayerNorm.weight"]), f32(w["embeddings.LayerNorm.bias"])),
         "layers": []}
    for i in range(LAYERS):
        p = lambda s: w[f"encoder.layer.{i}.{s}"]
        m["layers"].append({  # weights stored (out, in) -> transpose once to (in, out); Q,K,V fused
            "qkv_w": f32(np.concatenate([p(f"attention.self.{x}.weight") for x in ("query", "key", "value")]).T),
            "qkv_b": f32(np.concatenate([p(f"attention.self.{x}.bias") for x in ("query", "key", "value")])),
            "ao_w": f32(p("attention.output.dense.weight").T), "ao_b": f32(p("attention.output.dense.bias")),
            "ln1": (f32(p("attention.output.LayerNorm.weight")), f32(p("attention.output.LayerNorm.bias"))),
            "in_w": f32(p("intermediate.dense.weight").T), "in_b": f32(p("intermediate.dense.bias")),
            "out_w": f32(p("output.dense.weight").T), "out_b": f32(p("output.dense.bias")),
            "ln2": (f32(p("output.LayerNorm.weight")), f32(p("output.LayerNorm.bias")))})
    return m


def layer_norm(x, gb):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)
    return xc / np.sqrt(var + EPS) * gb[0] + gb[1]


# erf(z) ~ z*P(z^2)/Q(z^2) on z clamped to [-4, 4] (the rational form Eigen/XLA use for float erf),
# evaluated in float64: max abs error 6.5e-8 vs math.erf (|erf(4)| = 1 - 1.5e-8).
_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
      -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
      -1.42647390514189e-02)


def erf(x):
    z = np.clip(np.asarray(x, dtype=np.float64), -4.0, 4.0)
    z2 = z * z
    p, q = _P[0], _Q[0]
    for c in _P[1:]:
        p = p * z2 + c
    for c in _Q[1:]:
        q = q * z2 + c
    return z * p / q


def gelu_(h, block=16384):
    """Exact GELU 0.5*x*(1+erf(x/sqrt2)), in place on a contiguous float32 array; same erf as above,
    evaluated blockwise into preallocated float64 scratch (no per-block allocations)."""
    flat = h.reshape(-1)
    z, z2, p, q = (np.empty(block) for _ in range(4))
    for i in range(0, flat.size, block):
        v = flat[i:i + block]
        n = v.size
        zz, zz2, pp, qq = z[:n], z2[:n], p[:n], q[:n]
        np.multiply(v, 0.7071067811865476, out=zz)
        np.clip(zz, -4.0, 4.0, out=zz)
        np.multiply(zz, zz, out=zz2)
        pp.fill(_P[0])
        qq.fill(_Q[0])
        for c in _P[1:]:
            pp *= zz2
            pp += c
        for c in _Q[1:]:
            qq *= zz2
            qq += c
        pp *= zz
        pp /= qq          # erf
        pp += 1.0
        pp *= v
        pp *= 0.5
        v[...] = pp
    return h


def embed_batch(m, seqs):
    """seqs: list of id lists -> (len(seqs), 384) float32, L2-normalised."""
    B, T = len(seqs), max(len(s) for s in seqs)
    ids = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.float32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1.0
    x = layer_norm(m["word"][ids] + m["pos"][:T] + m["type0"], m["ln"])          # (B, T, H)
    bias = (1.0 - mask) * np.finfo(np.float32).min                             # additive key mask
    scale = np.float32(1.0 / np.sqrt(HEAD_DIM))
    x = x.reshape(B * T, HIDDEN)
    for L in m["layers"]:
        qkv = (x @ L["qkv_w"] + L["qkv_b"]).reshape(B, T, 3, HEADS, HEAD_DIM).transpose(0, 2, 3, 1, 4)
        ctx = np.empty((B, T, HEADS, HEAD_DIM), dtype=np.float32)
        for b in range(B):  # attention one sequence at a time: (h, T, T) scores instead of (B, h, T, T)
            q, k, v = qkv[b]                                                      # (h, T, d) each
            s = (q * scale) @ k.transpose(0, 2, 1) + bias[b]                      # (h, T, T)
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            ctx[b] = (s @ v).transpose(1, 0, 2)
        x = layer_norm(x + ctx.reshape(B * T, HIDDEN) @ L["ao_w"] + L["ao_b"], L["ln1"])
        h = gelu_(x @ L["in_w"] + L["in_b"])
        x = layer_norm(x + h @ L["out_w"] + L["out_b"], L["ln2"])
    x = x.reshape(B, T, HIDDEN)
    pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)


def embed_all(m, seqs, batch):
    return np.concatenate([embed_batch(m, seqs[i:i + batch]) for i in range(0, len(seqs), batch)])


def blas_threads():
    """Thread count of numpy's bundled OpenBLAS via ctypes, or None if not discoverable."""
    import ctypes
    d = os.path.dirname(np.__file__)
    for lib in glob.glob(os.path.join(d, "..", "numpy.libs", "*openblas*")) + glob.glob(os.path.join(d, ".dylibs", "*openblas*")):
        try:
            h = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                    "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(h, sym):
                return int(getattr(h, sym)())
    return None


def read_ids(path):
    with open(path) as f:
        seqs = json.load(f)
    if not isinstance(seqs, list) or not seqs or not all(
            isinstance(s, list) and 0 < len(s) <= 512 and all(isinstance(t, int) and 0 <= t < 30522 for t in s)
            for s in seqs):
        raise ValueError(f"{path}: expected a non-empty JSON list of id lists (1..512 ids in [0, 30522))")
    return seqs


def check(m, ref_path):
    ref = json.load(open(ref_path))["sentences"]
    names = list(ref)
    seqs = [ref[n]["ids"] for n in names]
    want = np.array([ref[n]["embedding"] for n in names], dtype=np.float64)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    alone = np.concatenate([embed_batch(m, [s]) for s in seqs])
    together = embed_batch(m, seqs)
    cosine = lambda e: (e * want).sum(1) / np.linalg.norm(e.astype(np.float64), axis=1)
    cos = np.minimum(cosine(alone), cosine(together))
    for c, n in zip(cos, names):
        print(f"{c:.9f}  (1-cos {1 - c:+.1e})  {n}")
    print(f"min cosine {cos.min():.9f} over {len(names)} sentences (alone and batched)")
    return 0 if cos.min() >= 0.9999 else 1


def bench(m, ids_path, batch, repeat, out):
    seqs = read_ids(ids_path)
    embed_batch(m, seqs[:batch])  # warm-up, untimed
    best, emb = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        emb = embed_all(m, seqs, batch)
        best = min(best, time.perf_counter() - t0)
    if out:
        emb.astype("<f4").tofile(out)
    print(json.dumps({"sentences": len(seqs), "seconds": best, "sentences_per_second": len(seqs) / best,
                      "threads": blas_threads(), "numpy": np.__version__}))
    return 0


class Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"minilm_numpy.py: {message}", file=sys.stderr)
        sys.exit(2)


def main():
    ap = Parser(description="numpy reference for all-MiniLM-L6-v2 (see module docstring)")
    ap.add_argument("--model", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check")
    g.add_argument("--ids")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    try:
        if a.batch < 1 or a.repeat < 1:
            raise ValueError("--batch and --repeat must be >= 1")
        m = load_model(a.model)
        return check(m, a.check) if a.check else bench(m, a.ids, a.batch, a.repeat, a.out)
    except Exception as e:
        print(f"minilm_numpy.py: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
