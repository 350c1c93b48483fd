"""Benchmark: the adapted flow (``collapselab.flows.fit``) against standard optimizers, one process.

The fixed problem (docs/benchmarks/performance.md): inputs M = 16, Q = 4, N = 256 (64 per class), class
centres 2 * standard normal (numpy ``default_rng(0)``), points = centre + standard normal;
net Linear(16,64)-ReLU-Linear(64,64)-ReLU-Linear(64,4), PyTorch default init after
``torch.manual_seed(0)``, float64; cost C = (1/2N)|f(X) - Y|^2 with one-hot Y. Every
method starts from the same parameters and is timed to C <= 1e-10 (or its time cap),
single-threaded. Each method first runs one short warm-up on the same problem, so
one-time library initialisation (LAPACK, torch.func) is excluded for all alike, and
every method that finishes within 5 s is run ``--repeats`` times (default 3), its
fastest run counting (timeit's rule; the machine may be shared). One core for every method:
before numpy, torch or jax load, BLAS and XLA are made single-threaded (OMP/MKL/OPENBLAS
threads, ``--xla_cpu_multi_thread_eigen=false``) and the process is pinned to one core (the
lowest allowed, or ``--cpu``), since XLA's CPU runtime otherwise runs independent operations
concurrently on a pool sized by the allowed cores.

Methods: ours at its defaults (structured Gram, mixed precision: float32 Cholesky refined
in float64), in full float64 precision, and with the dense Jacobian for reference; plain gradient
descent (step N / lambda_max(D D^T) at the start), Adam (lr 1e-3), scipy
``least_squares`` (trf + lsmr, dense Jacobian from torch.func), torch-levenberg-marquardt
(its default QR solve and its Cholesky solve), and jaxopt's GaussNewton and LevenbergMarquardt
at their defaults (``benchmarks/jaxopt_baseline.py``: the net converted to a jax residual,
init_state and update compiled ahead of time, called from Python with the cap checked after
every step; its own script studies jaxopt's other settings and drivers). The last two need
``pip install '.[bench]'`` and are reported as skipped without it.

``--scaling`` times one step of ours as N and the width grow (N in {1024, 4096}, width in
{256, 1024}; QN up to 16384, K up to about 1.07 M) and reports the peak resident memory
against the dense Jacobian's size. ``--json`` prints one JSON object on stdout.

    python benchmarks/adapted_flow.py [--json] [--cap SECONDS] [--scaling] [--cpu CORE]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # single-threaded BLAS/LAPACK for numpy/scipy too (before they load)
if "--xla_cpu_multi_thread_eigen=false" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

ALLOWED_CPUS = sorted(os.sched_getaffinity(0))  # before pinning


def pin_process(cpu: int) -> int:
    """Pin every thread of this process to core ``cpu`` (threads started later inherit it)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except ProcessLookupError:  # the thread has ended
            pass
    return cpu


CPU = pin_process(ALLOWED_CPUS[0])  # at start-up, before any library starts a thread pool; --cpu moves it

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib.metadata import PackageNotFoundError, version  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import least_squares  # noqa: E402
from torch import nn  # noqa: E402

from collapselab.flows import AdaptedFlow, OutputMap  # noqa: E402

TARGET = 1e-10
OURS = (("auto", "auto"), ("structured", "full"), ("dense", "auto"))
"""Our rows (linalg, precision): the defaults (structured, mixed) first, the ratios are to it."""


def problem(n: int = 256, width: int = 64, m: int = 16, q: int = 4) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """The issue's data and network (``n`` samples, ``n / q`` per class)."""
    rng = np.random.default_rng(0)
    centres = 2.0 * rng.standard_normal((q, m))
    labels = np.repeat(np.arange(q), n // q)
    X = centres[labels] + rng.standard_normal((len(labels), m))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(m, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, q)).double()
    return torch.tensor(X), torch.eye(q, dtype=torch.float64)[torch.as_tensor(labels)], net


def cost(net: nn.Module, X: torch.Tensor, Y: torch.Tensor) -> float:
    with torch.no_grad():
        return 0.5 * float((net(X) - Y).square().sum()) / X.shape[0]


class _Stop(Exception):
    """Raised inside a baseline's callback when it reaches the target or its cap."""


def _result(name: str, seconds: float, steps: int, final: float, note: str = "") -> dict:
    return {"method": name, "seconds": seconds, "steps": steps, "final_cost": final, "reached": final <= TARGET, "note": note}


def run_ours(X, Y, net, cap: float, linalg: str = "auto", precision: str = "auto") -> dict:
    t0 = time.perf_counter()
    opt = AdaptedFlow(net, X, Y, tol=TARGET, linalg=linalg, precision=precision)
    tr = opt.run()
    seconds = time.perf_counter() - t0
    return _result(f"ours: AdaptedFlow ({opt.linalg}, {opt.precision})", seconds, tr.steps, float(tr.cost[-1]), tr.message)


def _torch_loop(name: str, X, Y, net, cap: float, opt: torch.optim.Optimizer, note: str) -> dict:
    t0 = time.perf_counter()
    steps, c = 0, cost(net, X, Y)
    while c > TARGET and time.perf_counter() - t0 < cap:
        opt.zero_grad()
        loss = 0.5 * (net(X) - Y).square().sum() / X.shape[0]
        loss.backward()
        opt.step()
        steps += 1
        c = float(loss.detach())  # cost before this step; checked exactly below
    c = cost(net, X, Y)
    return _result(name, time.perf_counter() - t0, steps, c, note)


def run_gd(X, Y, net, cap: float) -> dict:
    omap, theta = OutputMap.from_module(net, X)
    lam = float(torch.linalg.eigvalsh(omap.gram(theta))[-1])
    lr = X.shape[0] / lam  # stable: the largest output-space contraction is lr lam / N = 1
    return _torch_loop("plain GD", X, Y, net, cap, torch.optim.SGD(net.parameters(), lr=lr), f"lr = N / lambda_max = {lr:.3g}")


def run_adam(X, Y, net, cap: float) -> dict:
    return _torch_loop("Adam", X, Y, net, cap, torch.optim.Adam(net.parameters(), lr=1e-3), "lr = 1e-3")


def run_scipy(X, Y, net, cap: float) -> dict:
    omap, theta0 = OutputMap.from_module(net, X)
    n = X.shape[0]
    y = Y.reshape(-1)
    scale = 1.0 / math.sqrt(n)  # 0.5 |r|^2 = C with r = (f - y) / sqrt(N)
    t0 = time.perf_counter()
    state = {"evals": 0, "cost": math.inf}

    def fun(th: np.ndarray) -> np.ndarray:
        r = (omap.outputs(torch.from_numpy(th)).detach() - y) * scale
        state["evals"] += 1
        state["cost"] = min(state["cost"], 0.5 * float(r.square().sum()))
        if state["cost"] <= TARGET or time.perf_counter() - t0 > cap:
            raise _Stop
        return r.numpy()

    def jac(th: np.ndarray) -> np.ndarray:
        return (omap.jacobian(torch.from_numpy(th)) * scale).numpy()

    try:
        least_squares(fun, theta0.numpy(), jac=jac, method="trf", tr_solver="lsmr", ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=100_000)
    except _Stop:
        pass
    return _result("scipy least_squares (trf + lsmr)", time.perf_counter() - t0, state["evals"], state["cost"], "dense Jacobian by torch.func")


def run_torch_lm(X, Y, net, cap: float, solve_method: str = "qr") -> dict:
    from torch_levenberg_marquardt.training import LevenbergMarquardtModule

    lm = LevenbergMarquardtModule(net, solve_method=solve_method)  # MSE residuals, standard damping, learning rate 1
    t0 = time.perf_counter()
    steps, c = 0, cost(net, X, Y)
    while c > TARGET and time.perf_counter() - t0 < cap:
        _, _, stop, _ = lm.training_step(X, Y)
        steps += 1
        c = cost(net, X, Y)
        if stop:
            break
    row = _result(f"torch-levenberg-marquardt ({solve_method})", time.perf_counter() - t0, steps, c, "defaults" + (" but solve_method" if solve_method != "qr" else ""))
    row["tuned"] = solve_method != "qr"  # not the library's default configuration
    return row


def jaxopt_baselines(X, Y, net) -> dict[str, Callable]:
    """``{row name: run(X, Y, net, cap)}`` for jaxopt's GaussNewton and LevenbergMarquardt at their defaults.

    Builds the jax residual of ``net`` on ``(X, Y)`` and compiles each solver ahead of time
    here, outside every timing; a run starts from ``net``'s current parameters.
    """
    import jaxopt_baseline as jb

    prob = jb.Problem(X, Y, net, cost(net, X, Y))
    out = {}
    for name, (make, _) in jb.settings(prob.r, slow=False).items():
        compiled = jb.Compiled.of(make(), prob)

        label, setting = name.removesuffix(")").split(" (")  # "GaussNewton (defaults: CG)"

        def run(X, Y, net, cap: float, label: str = f"jaxopt {label}", note: str = setting, compiled: jb.Compiled = compiled) -> dict:
            theta0 = prob.theta(net)
            seconds, steps, final = compiled.run(theta0, TARGET, cap)
            return _result(label, seconds, steps, final, f"{note}; init_state + update compiled ahead ({compiled.compile_seconds:.1f} s apart)")

        out[f"jaxopt {label}"] = run
    return out


BASELINES: dict[str, Callable] = {
    "plain GD": run_gd,
    "Adam": run_adam,
    "scipy": run_scipy,
    "torch-LM": run_torch_lm,
    "torch-LM cholesky": lambda X, Y, net, cap: run_torch_lm(X, Y, net, cap, "cholesky"),
}
OPTIONAL = {"torch-LM": ["torch_levenberg_marquardt"], "torch-LM cholesky": ["torch_levenberg_marquardt"]}  # import names
SKIPPED_HINT = "skipped (pip install '.[bench]')"


def _missing(modules: list[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "numpy", "scipy", "torch-levenberg-marquardt", "jax", "jaxlib", "jaxopt"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def main_comparison(cap: float, caps: dict[str, float], repeats: int) -> dict:
    X, Y, net = problem()
    init = {k: v.clone() for k, v in net.state_dict().items()}

    def fresh() -> nn.Module:
        net.load_state_dict(init)
        return net

    skipped = {name: f"{', '.join(missing)} not installed: {SKIPPED_HINT}" for name, mods in OPTIONAL.items() if (missing := _missing(mods))}
    baselines = {name: fn for name, fn in BASELINES.items() if name not in skipped}
    if missing := _missing(["jax", "jaxopt"]):
        for name in ("jaxopt GaussNewton", "jaxopt LevenbergMarquardt"):
            skipped[name] = f"{', '.join(missing)} not installed: {SKIPPED_HINT}"
    else:
        baselines.update(jaxopt_baselines(X, Y, fresh()))  # compiles jaxopt's solvers (not timed)

    # warm-up: one short run of every method (first LAPACK / torch.func / XLA calls are slow once)
    for linalg, precision in OURS:
        AdaptedFlow(fresh(), X, Y, max_steps=1, linalg=linalg, precision=precision).run()
    for fn in baselines.values():
        fn(X, Y, fresh(), 0.05)
    def best(fn: Callable[[], dict]) -> dict:
        """Fastest of ``repeats`` runs for methods that finish within 5 s (noise on a shared machine)."""
        row = fn()
        for _ in range(repeats - 1):
            if row["seconds"] > 5.0:
                break
            again = fn()
            row = again if again["seconds"] < row["seconds"] else row
        return row

    rows = [best(lambda: run_ours(X, Y, fresh(), cap, linalg, precision)) for linalg, precision in OURS]
    for name, fn in baselines.items():
        rows.append(best(lambda: fn(X, Y, fresh(), caps.get(name, cap))))
    ours = rows[0]["seconds"]  # the defaults
    baselines = rows[len(OURS) :]
    for r in rows:
        r["ratio_to_ours"] = r["seconds"] / ours
    reached = [r for r in baselines if r["reached"]]
    fastest = min(reached, key=lambda r: r["seconds"]) if reached else None
    default = [r for r in reached if not r.get("tuned")]
    fastest_default = min(default, key=lambda r: r["seconds"]) if default else None
    return {
        "problem": "M=16, Q=4, N=256, net 16-64-64-4 ReLU, float64, C=(1/2N)|f-Y|^2 <= 1e-10, 1 thread, 1 core",
        "initial_cost": cost(fresh(), X, Y),
        "rows": rows,
        "skipped": skipped,
        "fastest_baseline": fastest["method"] if fastest else None,
        "speedup_vs_fastest_baseline": (fastest["seconds"] / ours) if fastest else None,
        "fastest_default_baseline": fastest_default["method"] if fastest_default else None,
        "speedup_vs_fastest_default_baseline": (fastest_default["seconds"] / ours) if fastest_default else None,
        "speedup_lower_bound_vs_all": min(r["seconds"] for r in baselines) / ours if baselines else None,
    }


def one_step(n: int, width: int, precision: str) -> dict:
    """Time one step of ours on the scaling problem; the peak memory is this process's."""
    X, Y, net = problem(n=n, width=width)
    opt = AdaptedFlow(net, X, Y, tol=TARGET, max_steps=1, memory_limit=20 * 2**30, precision=precision)
    k, qn = opt.theta.numel(), opt.y.numel()
    t0 = time.perf_counter()
    opt.step()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB on Linux)
    return {"N": n, "width": width, "K": k, "QN": qn, "linalg": opt.linalg, "precision": precision, "seconds_per_step": seconds, "peak_rss_gib": peak, "dense_jacobian_gib": qn * k * 8 / 2**30}


def scaling() -> list[dict]:
    """One step of ours, at its default (mixed) and full precision, as N and the width grow: each
    case in a fresh process on the same core, so that its peak resident memory is its own."""
    out = []
    for n in (1024, 4096):
        for width in (256, 1024):
            for precision in ("mixed", "full"):
                cmd = [sys.executable, __file__, "--one-step", str(n), str(width), precision, "--cpu", str(CPU)]
                row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                out.append(row)
                print(
                    f"  N={n:5d} width={width:5d} K={row['K']:8d} QN={row['QN']:6d} {precision:5s}: {row['seconds_per_step']:8.2f} s/step, "
                    f"peak RSS {row['peak_rss_gib']:5.1f} GiB (dense D would be {row['dense_jacobian_gib']:6.1f} GiB)",
                    file=sys.stderr,
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--cap", type=float, default=40.0, help="time cap per baseline in seconds (GD and Adam: half)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method that finishes within 5 s; the fastest counts")
    parser.add_argument("--scaling", action="store_true", help="also time one step for N in {1024, 4096} x width in {256, 1024} (slow)")
    parser.add_argument("--cpu", type=int, default=CPU, help="the one core every method runs on (default: the lowest allowed)")
    parser.add_argument("--one-step", nargs=3, metavar=("N", "WIDTH", "PRECISION"), help="time one step of one scaling case, print JSON (used by --scaling)")
    args = parser.parse_args()
    cpu = pin_process(args.cpu)
    torch.set_num_threads(1)
    if args.one_step:
        print(json.dumps(one_step(int(args.one_step[0]), int(args.one_step[1]), args.one_step[2])))
        return
    caps = {"plain GD": args.cap / 2, "Adam": args.cap / 2}
    report = {"cpu": cpu, "allowed_cpus": ALLOWED_CPUS, "versions": versions(), **main_comparison(args.cap, caps, args.repeats)}
    if args.scaling:
        report["scaling"] = scaling()
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(report["problem"], f"; C(0) = {report['initial_cost']:.4f}")
    print(f"every method on core {cpu} (allowed: {ALLOWED_CPUS});", ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"{'method':38s} {'time [s]':>9s} {'steps':>7s} {'final C':>10s} {'reached':>8s} {'x ours':>7s}")
    for r in report["rows"]:
        print(f"{r['method']:38s} {r['seconds']:9.3f} {r['steps']:7d} {r['final_cost']:10.2e} {str(r['reached']):>8s} {r['ratio_to_ours']:7.1f}")
    for name, why in report["skipped"].items():
        print(f"{name:38s} {why}")
    if report["fastest_default_baseline"]:
        print(f"speed-up vs the fastest baseline at its defaults that reached 1e-10 ({report['fastest_default_baseline']}): {report['speedup_vs_fastest_default_baseline']:.1f}x")
    if report["fastest_baseline"]:
        print(f"speed-up vs the fastest baseline including tuned settings ({report['fastest_baseline']}): {report['speedup_vs_fastest_baseline']:.1f}x")
    print(f"speed-up vs every baseline (capped times are lower bounds): >= {report['speedup_lower_bound_vs_all']:.1f}x")
    for row in report.get("scaling", []):
        print(f"N={row['N']} width={row['width']}: {row['seconds_per_step']:.2f} s/step ({row['linalg']}), peak RSS {row['peak_rss_gib']:.1f} GiB, dense D {row['dense_jacobian_gib']:.1f} GiB")


if __name__ == "__main__":
    main()
