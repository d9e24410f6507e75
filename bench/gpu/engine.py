"""Measures what one GPU does with a decode step, to set the GPU side of the physics against.

Runs on one CUDA GPU with PyTorch and nothing else (no model download: the weights are random,
which moves the same bytes and does the same arithmetic as trained ones). It measures:

* ceilings: a device-to-device copy and a read-only reduction (bytes per second), and one
  large bf16 and FP8 matrix product (FLOP/s);
* the cost of a small kernel replayed from a CUDA graph, and of one launched from Python;
* matrix products of decode and prefill shapes (Llama 3.1 8B whole, Llama 3.1 70B split
  eight ways), bf16 and FP8, at 1 to 4,096 rows, each against its bytes and its arithmetic;
* the grouped product of a mixture-of-experts layer's routed experts (DeepSeek-V3's and
  Mixtral 8x7B's shapes, bf16 and FP8) over the experts a batch's tokens chose at random;
* attention over a KV cache at a decode step (flash-decoding through PyTorch's SDPA, and two
  batched products), against the cache's bytes;
* whole decode steps of a Llama 3.1 8B-shaped model (random bf16 weights, a static KV cache,
  the step captured in one CUDA graph) at batches 1-512 and contexts 1k-8k, and the number
  of kernels a step launches; the same steps split into the weights' products and the rest,
  with bf16 and FP8 weights;
* whole prefill passes of the same model, 512-8,192 tokens;
* decode steps and prefill passes of a Llama 3.1 70B-shaped model with FP8 weights, which
  fits one H200;
* the 8B-shaped decode steps with the work between products fused by the PyTorch compiler.

`PARTS=ceilings,kernels,products,experts,llama8b,llama70b,fused` picks the parts to run
(default: all). FP8 parts run only on GPUs with FP8 products (compute capability 8.9 on).

Each figure is the median of timed graph replays after warm-ups, with the weights of the
product measurements rotated through copies larger than the L2 cache, so that no product
reads cached weights.

    python3 bench/gpu/engine.py            # writes $OUT/engine.json (or ./engine.json)
    SMOKE=1 python3 bench/gpu/engine.py    # tiny shapes of the 8B parts (the CPU if no GPU)

`bench/gpu/README.md` gives the results of 2026-11-29 on an H200 and sets them beside the
physics; the tests in `crates/perf/src/gpu.rs` check the physics against them.
"""

import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SMOKE = os.environ.get("SMOKE") == "1" or DEV == "cpu"
OUT = os.environ.get("OUT", ".")
BUDGET_S = float(os.environ.get("BUDGET_S", "330"))
START = time.monotonic()
BF16 = torch.bfloat16
FP8 = getattr(torch, "float8_e4m3fn", None)
if DEV == "cuda" and torch.cuda.get_device_capability() < (8, 9):
    FP8 = None  # no FP8 products before Ada and Hopper
L2_BYTES = 60e6 if DEV == "cuda" else 1e6

results = {"device": DEV, "smoke": SMOKE, "torch": torch.__version__, "rows": []}


def elapsed():
    return time.monotonic() - START


def save():
    with open(os.path.join(OUT, "engine.json"), "w") as f:
        json.dump(results, f, indent=1)


def record(kind, **kw):
    row = {"kind": kind, **kw}
    results["rows"].append(row)
    print(json.dumps(row), flush=True)
    save()


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def timed(calls, iters=10, graph=True):
    """Median seconds of one call of `calls` (a list of closures run in turn)."""
    if DEV != "cuda":
        for c in calls:
            c()
        t = time.perf_counter()
        for c in calls:
            c()
        return (time.perf_counter() - t) / len(calls)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            for c in calls:
                c()
    torch.cuda.current_stream().wait_stream(side)
    sync()
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for c in calls:
                c()

        def run():
            g.replay()
    else:

        def run():
            for c in calls:
                c()

    run()
    sync()
    times = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / len(calls))
    del run
    if graph:
        del g
    return statistics.median(times)


def rnd(*shape, dtype=BF16, scale=0.02):
    """Normal values drawn straight into `dtype`, with no 32-bit copy of a large tensor."""
    return torch.empty(*shape, device=DEV, dtype=dtype).normal_(0.0, scale)


def copies(nbytes):
    """How many copies of a weight of `nbytes` put four L2 caches' worth between reuses, at
    most 16 (for the smallest weights, about two caches' worth)."""
    return max(2, min(16, math.ceil(4 * L2_BYTES / max(nbytes, 1))))


def ceilings():
    # A second of large products first, so that the clocks have left idle.
    w = rnd(4096, 4096)
    t0 = time.monotonic()
    while time.monotonic() - t0 < (0.1 if SMOKE else 1.0):
        for _ in range(20):
            w @ w
        sync()
    del w
    n = (1 << 22) if SMOKE else (1 << 30)  # elements: 2 GiB of bf16 on a GPU
    x = rnd(n)
    y = torch.empty_like(x)
    t = timed([lambda: y.copy_(x)], iters=10)
    record("copy", bytes=2 * 2 * n, s=t, gb_s=4 * n / t / 1e9)
    acc = torch.empty((), device=DEV, dtype=torch.float32)
    t = timed([lambda: torch.sum(x, dim=0, dtype=torch.float32, out=acc)], iters=10)
    record("read", bytes=2 * n, s=t, gb_s=2 * n / t / 1e9)
    del x, y
    m = 512 if SMOKE else 8192
    a, b = rnd(m, m), rnd(m, m)
    t = timed([lambda: a @ b], iters=10)
    record("matmul_peak", dtype="bf16", m=m, s=t, tflops=2 * m**3 / t / 1e12)
    if DEV == "cuda" and FP8 is not None:
        a8 = a.to(FP8)
        b8 = b.to(FP8).t().contiguous().t()
        one = torch.ones((), device=DEV)
        t = timed([lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=BF16)])
        record("matmul_peak", dtype="fp8", m=m, s=t, tflops=2 * m**3 / t / 1e12)


def small_kernels():
    x = torch.zeros(1024, device=DEV, dtype=torch.float32)
    n = 20 if SMOKE else 500
    t = timed([lambda: x.add_(1.0)] * n, iters=10)
    record("tiny_kernel", graph=True, s=t)
    if DEV == "cuda":
        t = timed([lambda: x.add_(1.0)] * n, iters=10, graph=False)
        record("tiny_kernel", graph=False, s=t)


# (name, K, N): the projections of a layer. 8B whole; 70B's split over eight chips.
SHAPES = [
    ("8b.qkv", 4096, 6144),
    ("8b.o", 4096, 4096),
    ("8b.gate_up", 4096, 28672),
    ("8b.down", 14336, 4096),
    ("70b-tp8.qkv", 8192, 1280),
    ("70b-tp8.o", 1024, 8192),
    ("70b-tp8.gate_up", 8192, 7168),
    ("70b-tp8.down", 3584, 8192),
]
ROWS = [1, 16, 64, 128, 256, 512, 1024, 2048, 4096]


def products():
    shapes = [(n, k // 64, nn // 64) for n, k, nn in SHAPES] if SMOKE else SHAPES
    rows = [1, 16, 64] if SMOKE else ROWS
    for dtype in ["bf16", "fp8"]:
        if dtype == "fp8" and (DEV != "cuda" or FP8 is None):
            continue
        for name, k, n in shapes:
            width = 1 if dtype == "fp8" else 2
            ws = [rnd(n, k) for _ in range(copies(n * k * width))]
            if dtype == "fp8":
                ws = [w.to(FP8) for w in ws]
            one = torch.ones((), device=DEV)
            for m in rows:
                if elapsed() > BUDGET_S * 0.45:
                    record("skipped", what=f"products {dtype} {name} m={m}", why="time")
                    return
                x = rnd(m, k)
                if dtype == "fp8":
                    if m % 16:
                        continue
                    x = x.to(FP8)
                    calls = [
                        (lambda w=w: torch._scaled_mm(x, w.t(), scale_a=one, scale_b=one, out_dtype=BF16))
                        for w in ws
                    ]
                else:
                    calls = [(lambda w=w: x @ w.t()) for w in ws]
                t = timed(calls, iters=8)
                nbytes = (n * k + m * k) * width + m * n * 2
                record(
                    "product", dtype=dtype, shape=name, m=m, k=k, n=n, s=t,
                    bytes=nbytes, flops=2 * m * n * k,
                    gb_s=nbytes / t / 1e9, tflops=2 * m * n * k / t / 1e12,
                )
            del ws


# Routed experts' first product (gate and up fused): (name, experts, chosen per token, K, N).
# DeepSeek-V3 (https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json: hidden
# 7168, moe_intermediate_size 2048, 256 routed experts, 8 per token) and Mixtral 8x7B
# (https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json: hidden 4096,
# intermediate 14336, 8 experts, 2 per token).
EXPERTS = [("deepseek-v3", 256, 8, 7168, 4096), ("mixtral-8x7b", 8, 2, 4096, 28672)]


def grouped(a, b, offs, fp8, scales):
    if fp8:
        sa, sb = scales
        return torch._scaled_grouped_mm(a, b, sa, sb, offs=offs, out_dtype=BF16)
    return torch._grouped_mm(a, b, offs=offs, out_dtype=BF16)


def experts():
    """One grouped product over the experts a batch's tokens chose, against its bytes."""
    if DEV != "cuda" or not hasattr(torch, "_grouped_mm"):
        record("skipped", what="experts", why="no grouped product here")
        return
    gen = torch.Generator(device=DEV)
    gen.manual_seed(1)
    for name, n_exp, k_tok, k, n in EXPERTS:
        # (experts, N, K) in memory, seen as (experts, K, N): each expert's weight row-major
        # by output, as checkpoints store it.
        w = rnd(n_exp, n, k).transpose(-2, -1)
        w8 = w.to(FP8) if FP8 is not None else None
        # Correct first: a small grouped product against one product per expert.
        counts = torch.tensor([3, 0, 5] + [1] * (n_exp - 3), device=DEV)
        offs = counts.cumsum(0).to(torch.int32)
        a = rnd(int(counts.sum()), k)
        ref = torch.cat([a[o - c : o] @ w[i] for i, (o, c) in enumerate(zip(offs.tolist(), counts.tolist()))])
        try:
            got = grouped(a, w, offs, False, None)
            err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
            record("experts_check", model=name, dtype="bf16", rel_err=err)
        except Exception as e:  # noqa: BLE001
            record("experts_check", model=name, dtype="bf16", error=str(e)[:300])
            continue
        for dtype in ["bf16", "fp8"]:
            for tokens in [1, 4, 16, 64, 256, 1024, 4096]:
                if elapsed() > BUDGET_S * 0.6:
                    record("skipped", what=f"experts {name} {dtype} {tokens}", why="time")
                    return
                choice = torch.rand(tokens, n_exp, device=DEV, generator=gen).topk(k_tok, dim=1).indices
                counts = torch.bincount(choice.flatten(), minlength=n_exp)
                offs = counts.cumsum(0).to(torch.int32)
                rows = tokens * k_tok
                a = rnd(rows, k)
                touched = int((counts > 0).sum())
                try:
                    if dtype == "fp8":
                        a8 = a.to(FP8)
                        sa = torch.ones(rows, device=DEV)
                        sb = torch.ones(n_exp, n, device=DEV)
                        calls = [lambda: grouped(a8, w8, offs, True, (sa, sb))]
                    else:
                        calls = [lambda: grouped(a, w, offs, False, None)]
                    t = timed(calls, iters=8)
                    width = 1 if dtype == "fp8" else 2
                    record(
                        "experts", model=name, dtype=dtype, tokens=tokens, rows=rows,
                        touched=touched, busiest=int(counts.max()), k=k, n=n, s=t,
                        bytes=touched * k * n * width, flops=2 * rows * k * n,
                    )
                except Exception as e:  # noqa: BLE001
                    record("experts", model=name, dtype=dtype, tokens=tokens, error=str(e)[:300])
                    break
        del w, w8
        torch.cuda.empty_cache()


# Llama 3.1 8B (https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json).
CFG = dict(layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=14336, vocab=128256)
if SMOKE:
    CFG = dict(layers=2, hidden=256, heads=4, kv_heads=2, head_dim=64, ffn=512, vocab=1000)


class Model:
    """Random weights in Llama's shapes; layer weights fused as engines fuse them."""

    def __init__(self, cfg, fp8=False):
        self.c = c = cfg
        h, d = c["hidden"], c["head_dim"]
        qkv = (c["heads"] + 2 * c["kv_heads"]) * d
        # FP8 weights are drawn a matrix at a time, so that a model too large for the card
        # in 16 bits (70B) never stands whole in them.
        mat = (lambda *shape: rnd(*shape).to(FP8)) if fp8 else rnd
        self.layers = [
            dict(
                n1=torch.ones(h, device=DEV, dtype=BF16),
                qkv=mat(qkv, h),
                o=mat(h, c["heads"] * d),
                n2=torch.ones(h, device=DEV, dtype=BF16),
                gu=mat(2 * c["ffn"], h),
                down=mat(h, c["ffn"]),
            )
            for _ in range(c["layers"])
        ]
        self.norm = torch.ones(h, device=DEV, dtype=BF16)
        self.embed = rnd(c["vocab"], h)
        self.head = mat(c["vocab"], h)
        self.weight_bytes = sum(t.numel() * t.element_size() for l in self.layers for t in l.values())
        self.weight_bytes += self.head.numel() * self.head.element_size()

    @staticmethod
    def rms(x, w):
        v = x.float()
        v = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5)
        return v.to(BF16) * w

    @staticmethod
    def rope(x, cos, sin):
        half = x.shape[-1] // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin


ONE = None


def linear(x, w):
    """x times w transposed; an FP8 weight multiplies x cast to FP8 (per-tensor scales of
    one), padded to the 16 rows the FP8 product needs, as engines pad a small batch."""
    global ONE
    if w.dtype != FP8:
        return x @ w.t()
    if ONE is None:
        ONE = torch.ones((), device=DEV)
    rows = x.shape[0]
    if rows % 16:
        x = F.pad(x, (0, 0, 0, 16 - rows % 16))
    y = torch._scaled_mm(x.to(FP8), w.t(), scale_a=ONE, scale_b=ONE, out_dtype=BF16)
    return y[:rows] if rows % 16 else y


def rope_table(pos, d):
    inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device=DEV, dtype=torch.float32) / d))
    ang = pos.float()[..., None] * inv
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos().to(BF16), ang.sin().to(BF16)


def fast_kernels():
    """SDPA's backends other than the reference one, which materialises the scores."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])


def attend_sdpa(q, k, v, causal=False):
    # q (B, H, n, D), k and v (B, KV, L, D): grouped heads read each key and value once.
    with fast_kernels():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)


def attend_expand(q, k, v, causal=False):
    # The grouped heads spelt out: fine for a prompt, a copy of the cache at a decode step.
    r = q.shape[1] // k.shape[1]
    with fast_kernels():
        return F.scaled_dot_product_attention(
            q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1), is_causal=causal
        )


def attend_matmul(q, k, v):
    b, h, _, d = q.shape
    kv = k.shape[1]
    qg = q.view(b, kv, h // kv, d)
    s = torch.matmul(qg, k.transpose(-1, -2)).float() * (1.0 / math.sqrt(d))
    p = torch.softmax(s, dim=-1).to(BF16)
    return torch.matmul(p, v).view(b, h, 1, d)


def attention():
    """Times each way of attending at a decode step; returns the fastest that ran."""
    c = CFG
    best, failed = {}, set()
    cases = [(1, 8192), (64, 2048), (256, 1024)] if not SMOKE else [(2, 64)]
    for b, L in cases:
        layers = 4  # rotate over four layers' caches so the cache is not in L2
        ks = [rnd(b, c["kv_heads"], L, c["head_dim"]) for _ in range(layers)]
        vs = [rnd(b, c["kv_heads"], L, c["head_dim"]) for _ in range(layers)]
        q = rnd(b, c["heads"], 1, c["head_dim"])
        nbytes = 2 * b * c["kv_heads"] * L * c["head_dim"] * 2
        for name, f in [("sdpa", attend_sdpa), ("matmul", attend_matmul)]:
            try:
                t = timed([(lambda i=i: f(q, ks[i], vs[i])) for i in range(layers)], iters=10)
                record("attention", impl=name, batch=b, ctx=L, s=t, bytes=nbytes, gb_s=nbytes / t / 1e9)
                best[name] = best.get(name, 0.0) + t
            except Exception as e:  # noqa: BLE001 - a backend may refuse a shape
                record("attention", impl=name, batch=b, ctx=L, error=str(e)[:200])
                failed.add(name)
        del ks, vs
    ran = [n for n in best if n not in failed]
    name = min(ran, key=best.get) if ran else "matmul"
    return {"sdpa": attend_sdpa, "matmul": attend_matmul}[name]


class Decode:
    """One decode step of `batch` sequences at context `ctx`, with a static KV cache."""

    def __init__(self, m, batch, ctx, attend):
        c = m.c
        self.m, self.attend = m, attend
        self.kc = [torch.zeros(batch, c["kv_heads"], ctx, c["head_dim"], device=DEV, dtype=BF16) for _ in range(c["layers"])]
        self.vc = [torch.zeros_like(k) for k in self.kc]
        for k, v in zip(self.kc, self.vc):
            k.normal_(0, 0.02)
            v.normal_(0, 0.02)
        self.tok = torch.randint(0, c["vocab"], (batch,), device=DEV)
        self.pos = torch.full((batch,), ctx - 1, device=DEV, dtype=torch.long)
        self.slot = torch.tensor([ctx - 1], device=DEV)
        self.batch = batch
        # "full" runs the step; "rest" all but the weights' products, whose outputs are
        # taken ready-made; "products" the products alone.
        self.mode = "full"
        self.fp8 = None
        self.one = torch.ones((), device=DEV)
        self.outs = {}

    def use_fp8(self):
        """The weights' products in FP8 (per-tensor scales of one), as FP8 checkpoints run."""
        self.fp8 = {id(w): w.to(FP8) for l in self.m.layers for w in l.values() if w.dim() == 2}
        self.fp8[id(self.m.head)] = self.m.head.to(FP8)

    def lin(self, x, w):
        if self.mode == "rest":
            key = (id(w), x.shape[0])
            if key not in self.outs:
                self.outs[key] = rnd(x.shape[0], w.shape[0])
            return self.outs[key]
        if self.fp8 is not None:
            return linear(x, self.fp8[id(w)])
        return linear(x, w)

    def products(self):
        m, c, b = self.m, self.m.c, self.batch
        if not self.outs:
            self.ins = {n: rnd(b, n) for n in {c["hidden"], c["heads"] * c["head_dim"], c["ffn"]}}
            self.outs = {"ready": True}
        for l in m.layers:
            self.lin(self.ins[c["hidden"]], l["qkv"])
            self.lin(self.ins[c["heads"] * c["head_dim"]], l["o"])
            self.lin(self.ins[c["hidden"]], l["gu"])
            self.lin(self.ins[c["ffn"]], l["down"])
        self.lin(self.ins[c["hidden"]], m.head)

    def embed(self):
        """The step's input: each sequence's last token, and the rotary table at its place."""
        x = self.m.embed[self.tok]
        cos, sin = rope_table(self.pos, self.m.c["head_dim"])
        return x, cos[:, None, None, :], sin[:, None, None, :]

    def step(self):
        m, c = self.m, self.m.c
        b, hd = self.batch, c["head_dim"]
        x, cos, sin = self.embed()
        nq, nkv = c["heads"] * hd, c["kv_heads"] * hd
        for i, l in enumerate(m.layers):
            h = Model.rms(x, l["n1"])
            qkv = self.lin(h, l["qkv"])
            q = qkv[:, :nq].view(b, c["heads"], 1, hd)
            k = qkv[:, nq : nq + nkv].view(b, c["kv_heads"], 1, hd)
            v = qkv[:, nq + nkv :].view(b, c["kv_heads"], 1, hd)
            q, k = Model.rope(q, cos, sin), Model.rope(k, cos, sin)
            self.kc[i].index_copy_(2, self.slot, k)
            self.vc[i].index_copy_(2, self.slot, v)
            a = self.attend(q, self.kc[i], self.vc[i]).reshape(b, nq)
            x = x + self.lin(a, l["o"])
            h = Model.rms(x, l["n2"])
            g, u = self.lin(h, l["gu"]).chunk(2, dim=-1)
            x = x + self.lin(F.silu(g) * u, l["down"])
        logits = self.lin(Model.rms(x, m.norm), m.head)
        self.tok.copy_(logits.argmax(-1))


class Fused(Decode):
    """The same step with the work between products fused by the PyTorch compiler, as
    serving engines fuse it: one compiled piece before attention (norm, projection, rotary
    embedding) and one after (projection, residual, norm, gated activation, projection,
    residual); the cache write and attention run as they are."""

    def __init__(self, m, batch, ctx, attend):
        super().__init__(m, batch, ctx, attend)
        c = m.c
        hd, heads, kvh = c["head_dim"], c["heads"], c["kv_heads"]
        nq, nkv = heads * hd, kvh * hd

        def before(x, n1, w, cos, sin):
            b = x.shape[0]
            qkv = linear(Model.rms(x, n1), w)
            q = qkv[:, :nq].view(b, heads, 1, hd)
            k = qkv[:, nq : nq + nkv].view(b, kvh, 1, hd)
            v = qkv[:, nq + nkv :].view(b, kvh, 1, hd)
            return Model.rope(q, cos, sin), Model.rope(k, cos, sin), v

        def after(x, a, o, n2, gu, down):
            x = x + linear(a, o)
            g, u = linear(Model.rms(x, n2), gu).chunk(2, dim=-1)
            return x + linear(F.silu(g) * u, down)

        opts = dict(fullgraph=True, dynamic=False)
        self.before = torch.compile(before, **opts)
        self.after = torch.compile(after, **opts)

    def step(self):
        m, c = self.m, self.m.c
        b, hd = self.batch, c["head_dim"]
        x, cos, sin = self.embed()
        for i, l in enumerate(m.layers):
            q, k, v = self.before(x, l["n1"], l["qkv"], cos, sin)
            self.kc[i].index_copy_(2, self.slot, k)
            self.vc[i].index_copy_(2, self.slot, v)
            a = self.attend(q, self.kc[i], self.vc[i]).reshape(b, c["heads"] * hd)
            x = self.after(x, a, l["o"], l["n2"], l["gu"], l["down"])
        logits = linear(Model.rms(x, m.norm), m.head)
        self.tok.copy_(logits.argmax(-1))


def fused(attend):
    """Decode steps of the 8B-shaped model with the work between products fused."""
    m = Model(CFG)
    cases = [(1, 1024), (1, 8192), (8, 2048), (64, 2048), (256, 1024)] if not SMOKE else [(1, 64)]
    for b, L in cases:
        if elapsed() > BUDGET_S * 0.9:
            record("skipped", what=f"fused b={b}", why="time")
            return
        try:
            t0 = time.monotonic()
            dec = Fused(m, b, L, attend)
            dec.step()
            sync()
            compile_s = time.monotonic() - t0
            t = timed([dec.step], iters=8)
            record(
                "fused", model="llama-3.1-8b-shape", dtype="bf16", batch=b, ctx=L, s=t,
                weight_bytes=m.weight_bytes, kernels=count_kernels(dec.step), compile_s=compile_s,
            )
            del dec
        except Exception as e:  # noqa: BLE001
            record("fused", batch=b, ctx=L, error=str(e)[:400])
        if DEV == "cuda":
            torch.cuda.empty_cache()


def count_kernels(fn):
    if DEV != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def decode(m, attend, model="llama-3.1-8b-shape", dtype="bf16", cases=None):
    c = m.c
    kv_token = 2 * c["layers"] * c["kv_heads"] * c["head_dim"] * 2
    cases = cases or [
        (1, 1024), (1, 8192), (8, 2048), (32, 2048), (64, 1024), (64, 4096),
        (128, 2048), (256, 1024), (256, 2048), (512, 1024),
    ]
    if SMOKE:
        cases = [(1, 64), (4, 128)]
    for b, L in cases:
        if elapsed() > BUDGET_S * 0.8:
            record("skipped", what=f"decode b={b} ctx={L}", why="time")
            return
        try:
            dec = Decode(m, b, L, attend)
            try:
                dec.step()
            except Exception as e:  # noqa: BLE001
                record("note", what=f"{attend.__name__} refused the decode step; products instead", why=str(e)[:200])
                attend = attend_matmul
                dec.attend = attend
            t = timed([dec.step], iters=8)
            kernels = count_kernels(dec.step) if b == 1 and L == 1024 else None
            record(
                "decode", model=model, dtype=dtype, batch=b, ctx=L, s=t,
                weight_bytes=m.weight_bytes, kv_bytes=b * L * kv_token,
                attention=attend.__name__, kernels=kernels,
            )
            del dec
        except torch.OutOfMemoryError as e:
            record("decode", batch=b, ctx=L, error=str(e)[:200])
        if DEV == "cuda":
            torch.cuda.empty_cache()


def decomposition(m, attend):
    """A decode step split into its weights' products and the rest, in bf16 and FP8."""
    cases = [(1, 1024), (16, 2048), (64, 2048), (256, 1024)] if not SMOKE else [(1, 64), (16, 64)]
    for dtype in ["bf16", "fp8"]:
        if dtype == "fp8" and (DEV != "cuda" or FP8 is None):
            continue
        for b, L in cases:
            if elapsed() > BUDGET_S * 0.85:
                record("skipped", what=f"decomposition {dtype} b={b}", why="time")
                return
            if dtype == "fp8" and b % 16:
                continue
            try:
                dec = Decode(m, b, L, attend)
                if dtype == "fp8":
                    dec.use_fp8()
                row = {}
                for mode, fn in [("full", dec.step), ("products", dec.products), ("rest", dec.step)]:
                    dec.mode = mode if mode != "products" else "full"
                    if mode == "rest":
                        dec.outs = {}
                        dec.mode = "rest"
                    fn()
                    row[mode] = timed([fn], iters=8)
                    row[mode + "_kernels"] = count_kernels(fn) if b in (1, 16) else None
                    if mode == "products":
                        dec.outs = {}
                record("decompose", dtype=dtype, batch=b, ctx=L, **row)
                del dec
            except Exception as e:  # noqa: BLE001
                record("decompose", dtype=dtype, batch=b, ctx=L, error=str(e)[:300])
            if DEV == "cuda":
                torch.cuda.empty_cache()


def prefill(m, model="llama-3.1-8b-shape", dtype="bf16", cases=None):
    c = m.c
    hd, nq, nkv = c["head_dim"], c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"]
    cases = (cases or [512, 2048, 8192]) if not SMOKE else [32]

    def run(toks, n):
        x = m.embed[toks]
        pos = torch.arange(n, device=DEV)
        cos, sin = rope_table(pos, hd)
        cos, sin = cos[None, None], sin[None, None]
        for l in m.layers:
            h = Model.rms(x, l["n1"])
            qkv = linear(h, l["qkv"])
            q = qkv[:, :nq].view(n, c["heads"], hd).transpose(0, 1)[None]
            k = qkv[:, nq : nq + nkv].view(n, c["kv_heads"], hd).transpose(0, 1)[None]
            v = qkv[:, nq + nkv :].view(n, c["kv_heads"], hd).transpose(0, 1)[None]
            q, k = Model.rope(q, cos, sin), Model.rope(k, cos, sin)
            a = attend(q, k, v, causal=True)
            a = a[0].transpose(0, 1).reshape(n, nq)
            x = x + linear(a, l["o"])
            h = Model.rms(x, l["n2"])
            g, u = linear(h, l["gu"]).chunk(2, dim=-1)
            x = x + linear(F.silu(g) * u, l["down"])
        return linear(Model.rms(x[-1:], m.norm), m.head)

    attend = attend_sdpa
    try:
        n = cases[0]
        q = rnd(1, c["heads"], n, hd)
        kv = rnd(1, c["kv_heads"], n, hd)
        attend(q, kv, kv, causal=True)
    except Exception as e:  # noqa: BLE001
        record("note", what="grouped heads refused for prompts; spelt out instead", why=str(e)[:200])
        attend = attend_expand
    for n in cases:
        if elapsed() > BUDGET_S * 0.95:
            record("skipped", what=f"prefill n={n}", why="time")
            return
        toks = torch.randint(0, c["vocab"], (n,), device=DEV)
        try:
            t = timed([lambda: run(toks, n)], iters=5)
            record(
                "prefill", model=model, dtype=dtype, tokens=n, s=t,
                weight_bytes=m.weight_bytes, attention=attend.__name__,
            )
        except Exception as e:  # noqa: BLE001
            record("prefill", tokens=n, error=str(e)[:200])


# Llama 3.1 70B (https://huggingface.co/meta-llama/Llama-3.1-70B/blob/main/config.json), whose
# FP8 weights (70 GB) fit one H200 with room for a KV cache.
CFG70 = dict(layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128, ffn=28672, vocab=128256)


def llama70b(attend):
    """Decode steps and prefill passes of a Llama 3.1 70B-shaped model in FP8 on one GPU."""
    m = Model(CFG70, fp8=True)
    name = "llama-3.1-70b-shape"
    decode(m, attend, name, "fp8", [(1, 1024), (1, 8192), (16, 2048), (64, 2048), (128, 1024), (256, 512)])
    prefill(m, name, "fp8", [512, 2048])


def main():
    torch.manual_seed(0)
    if DEV == "cuda":
        p = torch.cuda.get_device_properties(0)
        results["gpu"] = {
            "name": p.name, "sms": p.multi_processor_count, "memory": p.total_memory,
            "capability": list(torch.cuda.get_device_capability()), "cuda": torch.version.cuda,
        }
    # PARTS=a,b runs only those parts (default: all): ceilings, kernels, products, experts,
    # llama8b (decode steps, their split, prefill), llama70b, fused.
    parts = set(filter(None, os.environ.get("PARTS", "").split(","))) or {
        "ceilings", "kernels", "products", "experts", "llama8b", "llama70b", "fused",
    }
    if SMOKE:
        parts -= {"experts", "llama70b"}  # full-size shapes only
    for name, part in [
        ("ceilings", ceilings), ("kernels", small_kernels), ("products", products), ("experts", experts)
    ]:
        if name in parts:
            part()
            if DEV == "cuda":
                torch.cuda.empty_cache()
    attend = attention()
    if "llama8b" in parts:
        m = Model(CFG)
        decode(m, attend)
        decomposition(m, attend)
        prefill(m)
        del m
        if DEV == "cuda":
            torch.cuda.empty_cache()
    if "llama70b" in parts and FP8 is not None and DEV == "cuda":
        llama70b(attend)
    if "fused" in parts:
        fused(attend)
    results["seconds"] = elapsed()
    save()
    print(f"done in {elapsed():.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
