"""Benchmark: exact neural-collapse metrics of features larger than memory (ImageNet-shaped).

Writes synthetic float32 features ``h_i = mu_{y_i} + noise`` to a ``.npy`` file (default
N = 1,281,167, d = 2048, C = 1000: 10.5 GB, the ImageNet training set's penultimate ResNet-50
features) and times, each in its own process (so that its peak resident memory, ``ru_maxrss``,
is its own):

  * read:    one sequential read of the file in blocks (the floor of any exact method);
  * ours:    ``stream_report`` (two exact passes, memory O(B d + C d + C^2)), per pass;
  * public:  the usual approach, load everything and compute in numpy float64 (class loops,
             a d x d pseudo-inverse, nearest class centre by one distance GEMM), run under an
             address-space limit (RLIMIT_AS) below the memory available, so it fails cleanly
             where it does not fit; its speed is timed on the first rows and scaled to N;
  * 2 ranks: ``torchrun`` with 2 gloo processes, each reading half the rows, both passes
             reduced with all_reduce; the largest relative difference from one process;
  * many classes (C = 32,000 > d = 1024, N = 300,000): which metrics stay exact and affordable.

    python benchmarks/nc_scale.py [--quick] [--dir /tmp/streaming-bench] [--json OUT.json] [--keep]

The data are deleted at the end unless ``--keep``. ``--quick`` runs tiny sizes in seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GiB = 1 << 30
FULL = {"samples": 1_281_167, "dim": 2048, "classes": 1000, "public_rows": 32_768,
        "many_samples": 300_000, "many_dim": 1024, "many_classes": 32_000, "slice_rows": 4096}
QUICK = {"samples": 20_000, "dim": 64, "classes": 10, "public_rows": 4096,
         "many_samples": 20_000, "many_dim": 32, "many_classes": 400, "slice_rows": 1024}
# the fields compared between one process and two (those the report computes without a classifier)
COMPARED = ("nc1", "nc1_trace_ratio", "cdnv", "nc2_equinorm_means", "nc2_equiangular_means", "nc2_etf_error_means",
            "ncc_accuracy")


def peak_rss_gib() -> float:
    """This process's peak resident set (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------------- data
def write_features(path: Path, N: int, d: int, C: int, seed: int, block: int = 8192) -> None:
    """``h_i = 3 mu_{y_i} + z_i`` (mu, z standard normal) as float32 ``.npy``, balanced labels
    (every class ``floor(N/C)`` or one more times, shuffled) beside it; written block by
    block, never all in memory."""
    rng = np.random.default_rng(seed)
    mu = (3.0 * rng.standard_normal((C, d))).astype(np.float32)
    y = rng.permutation(np.arange(N) % C)
    np.save(path.with_suffix(".labels.npy"), y)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (N, d)})
        for a in range(0, N, block):
            yb = y[a : a + block]
            h = rng.standard_normal((len(yb), d), dtype=np.float32)
            h += mu[yb]
            f.write(h.tobytes())


# ------------------------------------------------------------------------------- workers
def worker_write(args: argparse.Namespace) -> dict:
    """Write the data in a process of its own: ``ru_maxrss`` survives fork and exec, so the
    parent of the measuring processes must stay small."""
    d = Path(args.dir)
    t0 = time.perf_counter()
    if args.target == "many":
        write_features(d / "many.npy", args.many_samples, args.many_dim, args.many_classes, args.seed + 1)
    else:
        write_features(d / "features.npy", args.samples, args.dim, args.classes, args.seed)
    return {"seconds": time.perf_counter() - t0}


def worker_read(args: argparse.Namespace) -> dict:
    """One sequential read of the whole file into a reused 16 MiB-scale buffer."""
    path = Path(args.dir) / "features.npy"
    buf = bytearray(2048 * args.dim * 4)
    t0, total = time.perf_counter(), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return {"seconds": time.perf_counter() - t0, "bytes": total, "peak_rss_gib": peak_rss_gib()}


def worker_ours(args: argparse.Namespace) -> dict:
    import torch

    from collapselab.collapse import stream_report

    torch.set_num_threads(args.threads)
    d = Path(args.dir)
    marks: list[tuple[str, float]] = []

    def progress(iterable, *, desc, total):  # records when each pass starts
        marks.append((desc, time.perf_counter()))
        return iterable

    rows = (0, args.ours_rows) if args.ours_rows else None
    t0 = time.perf_counter()
    rep = stream_report(d / "features.npy", d / "features.labels.npy", num_classes=args.classes, rows=rows, progress=progress)
    t1 = time.perf_counter()
    passes = {"pass1": marks[1][1] - marks[0][1], "pass2": t1 - marks[1][1]}
    return {"rows": rep.num_samples, "seconds": t1 - t0, "passes": passes, "peak_rss_gib": peak_rss_gib(), "report": rep.as_dict(extras=False)}


def worker_means(args: argparse.Namespace) -> dict:
    """The first pass alone (exact class means: counts and float64 sums), read as stream_report
    reads: the cheap half, which shows the memory and I/O behaviour at any N."""
    import torch

    from collapselab.collapse import CollapseStatistics
    from collapselab.collapse._sources import _Rows, batch_rows

    torch.set_num_threads(args.threads)
    d = Path(args.dir)
    feats, labs = _Rows(d / "features.npy", "features", "bench", None), _Rows(d / "features.labels.npy", "labels", "bench", None)
    B = batch_rows(args.classes)
    t0 = time.perf_counter()
    st = CollapseStatistics(args.classes, covariance=False)
    for a in range(0, len(feats), B):
        b = min(a + B, len(feats))
        st.update(feats.read(a, b), labs.read(a, b))
    st.means()
    return {"seconds": time.perf_counter() - t0, "peak_rss_gib": peak_rss_gib()}


def public_metrics(H32: np.ndarray, y: np.ndarray, C: int) -> dict:
    """The usual in-memory float64 computation: class means by masks, Sigma_W by class loops,
    NC1 = Tr(Sigma_W Sigma_B^+)/C with a pseudo-inverse, nearest class centre by one distance GEMM."""
    H = H32.astype(np.float64)
    N, d = H.shape
    means = np.stack([H[y == c].mean(0) for c in range(C)])
    Sw = np.zeros((d, d))
    for c in range(C):
        D = H[y == c] - means[c]
        Sw += D.T @ D
    Sw /= N
    Mc = means - means.mean(0)
    Sb = Mc.T @ Mc / C
    nc1 = float(np.trace(Sw @ np.linalg.pinv(Sb, hermitian=True)) / C)
    dist = (means * means).sum(1) - 2.0 * H @ means.T
    return {"nc1": nc1, "ncc_accuracy": float(np.mean(dist.argmin(1) == y))}


def worker_public(args: argparse.Namespace) -> dict:
    d = Path(args.dir)
    y = np.load(d / "features.labels.npy")
    mm = np.load(d / "features.npy", mmap_mode="r")
    # speed on the first n rows (those ours ran on when it was limited to a prefix): not scaled
    # to N, since the class loop costs C d^2 whatever N
    n = min(args.ours_rows or args.public_rows, len(y))
    C = args.classes
    out: dict = {"rows_timed": n}
    if n:
        t0 = time.perf_counter()
        sub = public_metrics(np.array(mm[:n]), y[:n], C)
        out.update(seconds_rows=time.perf_counter() - t0, subset=sub)
    # the whole file: under an address-space limit below what is available, never the machine's last bytes
    need_load, need_f64 = mm.nbytes, 2 * mm.nbytes
    del mm  # its mapping would count against the address-space limit
    avail = mem_available()
    limit = max(avail - 6 * GiB, 1 * GiB)
    out.update(bytes_float32=need_load, bytes_float64=need_f64, mem_available=avail, limit_as=limit)
    if need_load > limit:
        out["failed_at"] = f"not attempted: loading needs {need_load / GiB:.1f} GiB, limit {limit / GiB:.1f} GiB"
        return out
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    step = "np.load (float32)"
    try:
        t0 = time.perf_counter()
        H = np.load(d / "features.npy")
        out["seconds_load"] = time.perf_counter() - t0
        step = "float64 copy"
        H64 = H.astype(np.float64)
        out["seconds_load_and_copy"] = time.perf_counter() - t0
        del H64
        if n < len(y):  # the metrics of the whole file, timed (the subset was all of it otherwise)
            step = "metrics"
            t0 = time.perf_counter()
            out["full"] = public_metrics(H, y, C)
            out["seconds_whole"] = time.perf_counter() - t0
        else:
            out["full"], out["seconds_whole"] = out["subset"], out["seconds_rows"]
        out["failed_at"] = None
    except MemoryError:
        out["failed_at"] = step
    out["peak_rss_gib"] = peak_rss_gib()
    return out


def worker_rank(args: argparse.Namespace) -> dict | None:
    import torch
    import torch.distributed as dist

    from collapselab.collapse import stream_report

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        d = Path(args.dir)
        N = len(np.load(d / "features.labels.npy", mmap_mode="r"))
        rows = (rank * N // world, (rank + 1) * N // world)
        dist.barrier()
        t0 = time.perf_counter()
        rep = stream_report(d / "features.npy", d / "features.labels.npy", num_classes=args.classes, rows=rows, all_reduce=True)
        seconds = time.perf_counter() - t0
        peaks = [None] * world
        dist.all_gather_object(peaks, peak_rss_gib())
        return {"seconds": seconds, "world": world, "peak_rss_gib": peaks, "report": rep.as_dict(extras=False)} if rank == 0 else None
    finally:
        dist.destroy_process_group()


def worker_many(args: argparse.Namespace) -> dict:
    """C > d: the class-level statistics and the pairwise (C x C) metrics exactly (the latter
    in row tiles), the per-sample rules timed on a slice."""
    import torch

    from collapselab.collapse import CollapseStatistics
    from collapselab.collapse import _metrics as m
    from collapselab.collapse import _pairwise as pw
    from collapselab.collapse._sources import stream_statistics

    torch.set_num_threads(args.threads)
    d = Path(args.dir)
    H = np.load(d / "many.npy", mmap_mode="r")
    y = np.load(d / "many.labels.npy")
    N, dim = H.shape
    C = args.many_classes
    B = 2048

    def batches():
        return ((np.array(H[a : a + B]), y[a : a + B]) for a in range(0, N, B))

    out: dict = {"samples": N, "dim": dim, "classes": C}
    t0 = time.perf_counter()
    first = CollapseStatistics(C, covariance=False)
    for h, lab in batches():
        first.update(h, lab)
    means = first.means()
    out["means"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = stream_statistics(batches, C, per_sample=False, covariance=True, where="many")
    mom = stats.moments()
    out["two_pass_sigma_w"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mc = mom.centred_means()
    tol = m.default_rtol(C, dim)
    s, v = m.row_basis(mc, tol, null=mom.centring_null())
    out["nc1"] = m.nc1_span(mom, s, v)
    out["nc1_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["nc1_trace_ratio"] = m.nc1_trace_ratio(mom, mc)
    out["nc2_equinorm_means"] = m.equinorm(mc)
    W = torch.randn(C, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out["nc3"] = m.nc3_distance(W, mc)
    out["linear_metrics_seconds"] = time.perf_counter() - t0
    # pairwise metrics (CDNV, equiangularity, ETF errors, self-duality): sums over row tiles of
    # the C x C matrices, whose height comes from the memory budget
    out["pairwise_tile_rows"] = pw.tile_rows(C)
    out["pairwise_bytes_untiled"] = C * C * 8
    out["peak_rss_gib_before_pairwise"] = peak_rss_gib()
    pairwise = {
        "cdnv": lambda: m.cdnv_pairs(mom),
        "nc2_equiangular_means": lambda: m.equiangularity(mc),
        "nc2_etf_error_means": lambda: m.etf_error(mc, mc),
        "nc2_equiangular_weights": lambda: m.equiangularity(W),
        "nc2_etf_error_weights": lambda: m.etf_error(W, W),
        "nc3_self_duality_error": lambda: m.self_duality_error(W, mc),
    }
    out["pairwise_seconds"] = {}
    for name, f in pairwise.items():
        t0 = time.perf_counter()
        out[name] = f()
        out["pairwise_seconds"][name] = time.perf_counter() - t0
    out["peak_rss_gib_after_pairwise"] = peak_rss_gib()
    # per-sample rules (nearest class centre, NC4, accuracy, margins): a slice, scaled to N
    n = min(args.slice_rows, N)
    rules = CollapseStatistics(C, means=means, weights=W, covariance=False)
    t0 = time.perf_counter()
    for a in range(0, n, 128):
        rules.update(np.array(H[a : min(a + 128, n)]), y[a : min(a + 128, n)])
    out["per_sample_slice_seconds"] = time.perf_counter() - t0
    out["per_sample_seconds_scaled"] = out["per_sample_slice_seconds"] * N / n
    out["slice_rows"] = n
    out["peak_rss_gib"] = peak_rss_gib()
    return out


WORKERS = {"write": worker_write, "read": worker_read, "means": worker_means, "ours": worker_ours, "public": worker_public, "rank": worker_rank, "many": worker_many}


# ---------------------------------------------------------------------------------- main
def spawn(args: argparse.Namespace, name: str, *, torchrun: int = 0, target: str = "features") -> dict:
    base = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else [])
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in FULL or k in ("dir", "threads", "seed", "ours_rows")]
    flags += ["--quick"] if args.quick else []
    proc = subprocess.run([*base, __file__, "--worker", name, f"--target={target}", *flags], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads((Path(args.dir) / f"{name}.json").read_text())


def rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for k in COMPARED:
        x, y = a.get(k), b.get(k)
        if x is None or y is None:
            continue
        worst = max(worst, abs(x - y) / max(abs(y), 1e-300))
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, seconds)")
    p.add_argument("--dir", default="/tmp/streaming-bench", help="where the data are written (and deleted)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--keep", action="store_true", help="keep the data files")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the single-process runs")
    p.add_argument("--processes", type=int, default=2, help="ranks of the torchrun run (0: skip it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default="read,ours,public,ranks,many",
                   help="comma-separated subset of read, means (pass 1 alone), ours, public, ranks, many")
    p.add_argument("--ours-rows", type=int, default=0, help="ours: only the first rows (0: all); pass 1 alone always reads all")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--target", default="features", help=argparse.SUPPRESS)
    for k, v in FULL.items():
        p.add_argument(f"--{k.replace('_', '-')}", type=int, default=None)
    args = p.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.worker:
        res = WORKERS[args.worker](args)
        if res is not None:
            (Path(args.dir) / f"{args.worker}.json").write_text(json.dumps(res))
        return 0

    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    results: dict = {"sizes": {k: getattr(args, k) for k in FULL}, "threads": args.threads}
    try:
        results["write_seconds"] = spawn(args, "write")["seconds"]
        results["file_gib"] = (d / "features.npy").stat().st_size / GiB
        steps = args.steps.split(",")
        for name in ("read", "means", "ours", "public"):
            if name in steps:
                results[name] = spawn(args, name)
        if args.processes and "ranks" in steps:
            results["ranks"] = spawn(args, "rank", torchrun=args.processes)
            results["ranks"]["max_rel_diff"] = rel_diff(results["ranks"]["report"], results["ours"]["report"])
        for f in ("features.npy", "features.labels.npy"):
            if not args.keep:
                (d / f).unlink()
        if "many" in steps:
            spawn(args, "write", target="many")
            results["many"] = spawn(args, "many")
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print_summary(results)
    return 0


def print_summary(r: dict) -> None:
    s, read = r["sizes"], r["read"]
    print(f"N = {s['samples']}, d = {s['dim']}, C = {s['classes']}: {r['file_gib']:.2f} GiB float32, torch threads {r['threads']}")
    print(f"  one sequential read   {read['seconds']:9.1f} s   1.00x   peak RSS {read['peak_rss_gib']:.2f} GiB")
    if "means" in r:
        mn = r["means"]
        print(f"  ours, pass 1 alone    {mn['seconds']:9.1f} s  {mn['seconds'] / read['seconds']:5.2f}x   peak RSS {mn['peak_rss_gib']:.2f} GiB")
    if "ours" in r:
        print_ours(r)
    if "public" in r:
        print_public(r)
    if "ranks" in r:
        print_ranks(r)
    if "many" in r:
        print_many(r)


def print_ours(r: dict) -> None:
    read, ours = r["read"], r["ours"]
    print(f"  ours (two passes)     {ours['seconds']:9.1f} s  {ours['seconds'] / read['seconds']:5.2f}x   peak RSS {ours['peak_rss_gib']:.2f} GiB"
          f"   ({ours['rows']} rows: pass 1 {ours['passes']['pass1']:.1f} s, pass 2 {ours['passes']['pass2']:.1f} s)")


def print_public(r: dict) -> None:
    pub = r["public"]
    fit = pub.get("failed_at") or f"{pub['seconds_whole']:.1f} s"
    rows = f"{pub['seconds_rows']:9.1f} s on the first {pub['rows_timed']} rows" if pub["rows_timed"] else "(not timed on a prefix)"
    print(f"  public, in memory     {rows}; whole file: {fit} "
          f"(float32 {pub['bytes_float32'] / GiB:.1f} GiB, float64 {pub['bytes_float64'] / GiB:.1f} GiB, limit {pub['limit_as'] / GiB:.1f} GiB)")


def print_ranks(r: dict) -> None:
    read, k = r["read"], r["ranks"]
    print(f"  {k['world']} ranks (gloo)        {k['seconds']:9.1f} s  {k['seconds'] / read['seconds']:5.2f}x   peak RSS per rank "
          f"{', '.join(f'{x:.2f}' for x in k['peak_rss_gib'])} GiB; max rel. difference from one process {k['max_rel_diff']:.1e}")


def print_many(r: dict) -> None:
    m = r["many"]
    print(f"many classes: N = {m['samples']}, d = {m['dim']}, C = {m['classes']}; peak RSS {m['peak_rss_gib']:.2f} GiB")
    print(f"  class means (1 pass)            {m['means']:9.1f} s  exact")
    print(f"  Sigma_W (2 passes, d x d)       {m['two_pass_sigma_w']:9.1f} s  exact")
    print(f"  NC1 (SVD of C x d means)        {m['nc1_seconds']:9.1f} s  exact")
    print(f"  trace ratio, equinorm, NC3      {m['linear_metrics_seconds']:9.1f} s  exact")
    for name, sec in m["pairwise_seconds"].items():
        print(f"  {name:<31} {sec:9.1f} s  exact, tiles of {m['pairwise_tile_rows']} rows (C x C = {m['pairwise_bytes_untiled'] / GiB:.1f} GiB untiled)")
    print(f"  peak RSS before / after the pairwise metrics: {m['peak_rss_gib_before_pairwise']:.2f} / {m['peak_rss_gib_after_pairwise']:.2f} GiB")
    print(f"  per-sample (NCC, NC4, margins)  {m['per_sample_seconds_scaled']:9.1f} s  exact, N C d; scaled from {m['slice_rows']} rows")


if __name__ == "__main__":
    sys.exit(main())
