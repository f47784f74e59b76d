#!/usr/bin/env python3
"""Reference all-MiniLM-L6-v2 sentence embedder in plain numpy (for `kiana bench embed`).

Independent implementation of the BERT forward pass: word+position+token_type(0) embeddings ->
LayerNorm(eps 1e-12) -> 6 x [12-head self-attention (head 32) with padding mask, residual+LayerNorm,
384->1536 exact-erf GELU ->384, residual+LayerNorm] -> mean pooling over non-padding tokens -> L2 norm.
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


# W. J. Cody's rational approximations (CALERF), evaluated in float64: |x| <= 0.46875 -> erf directly,
# 0.46875 < |x| <= 4 -> erfc; for |x| > 4, erfc < 1.6e-8 so erf = +-1. Max abs error well below 1e-7.
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
      8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
      3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)


def erf(x):
    x = np.asarray(x, dtype=np.float64)
    y = np.minimum(np.abs(x), 4.0)
    ysq = y * y
    num, den = _A[4] * ysq, ysq.copy()
    for i in range(3):
        num, den = (num + _A[i]) * ysq, (den + _B[i]) * ysq
    small = y * (num + _A[3]) / (den + _B[3])
    num, den = _C[8] * y, y.copy()
    for i in range(7):
        num, den = (num + _C[i]) * y, (den + _D[i]) * y
    large = 1.0 - np.exp(-ysq) * (num + _C[7]) / (den + _D[7])
    large[np.abs(x) > 4.0] = 1.0
    return np.copysign(np.where(y <= 0.46875, small, large), x)


def gelu(x):
    return (0.5 * x * (1.0 + erf(x * 0.7071067811865476))).astype(np.float32)


def embed_batch(m, seqs):
    """seqs: list of id lists -> (len(seqs), 384) float32, L2-normalised."""
    B, T = len(seqs), max(len(s) for s in seqs)
    ids = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.float32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1.0
    x = layer_norm(m["word"][ids] + m["pos"][:T] + m["type0"], m["ln"])          # (B, T, H)
    bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]           # (B, 1, 1, T)
    scale = np.float32(1.0 / np.sqrt(HEAD_DIM))
    for L in m["layers"]:
        qkv = (x @ L["qkv_w"] + L["qkv_b"]).reshape(B, T, 3, HEADS, HEAD_DIM).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                          # (B, h, T, d)
        s = (q * scale) @ k.transpose(0, 1, 3, 2) + bias                          # (B, h, T, T)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B, T, HIDDEN)
        x = layer_norm(x + ctx @ L["ao_w"] + L["ao_b"], L["ln1"])
        h = gelu(x @ L["in_w"] + L["in_b"])
        x = layer_norm(x + h @ L["out_w"] + L["out_b"], L["ln2"])
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
    cos = np.minimum((alone * want).sum(1), (together * want).sum(1))
    for c, n in zip(cos, names):
        print(f"{c:.9f}  {n}")
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
