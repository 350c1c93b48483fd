"""Benchmark: explicit CE23 construction for N = 10^6 points, Q = M = 10 (target < 2 s; docs/benchmarks/performance.md).

Times, in one process and on the same data,

* ``construct_clustered`` end to end (best of ``--repeats``), and the time spent in each of
  its stages (boundary check, cluster geometry, admissible mu, cone layers, sector check,
  module assembly; one profiled call);
* two baselines on the same architecture: one forward pass of the constructed module over
  all points (what it costs merely to evaluate the network), and one full-batch Adam step
  (forward + backward) from a random initialisation (what one step of training costs);
* optionally (``--sequential N``) CE24's construction with the LP search on ``N`` points.

Prints the times and the ratios; ``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
from typing import Any

import torch
from _timing import best_of

from collapselab.construct import construct_clustered, construct_sequential
from collapselab.core.cost import weighted_l2
from collapselab.core.data import gaussian_clusters, sequentially_separable
from collapselab.core.network import ReLUNet




STAGES = ("check_data", "cluster_geometry", "admissible_mu", "cone_layer", "check_sectors", "assemble")
"""The functions construct_clustered calls, in order (its stages)."""


def _stages(X: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Seconds inside each stage of one ``construct_clustered`` call: cProfile's cumulative
    time of the stage functions (the pipeline itself, not a re-implementation of it)."""
    profile = cProfile.Profile()
    profile.runcall(construct_clustered, X, labels)
    times = dict.fromkeys(STAGES, 0.0)
    for (file, _line, name), (_cc, _nc, _tt, cumulative, _callers) in pstats.Stats(profile).stats.items():
        if name in times and "collapselab" in file:
            times[name] += cumulative
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of points N (default 10^6)")
    parser.add_argument("--q", type=int, default=10, help="number of classes Q = M (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions; the best time is reported")
    parser.add_argument("--sequential", type=int, default=0, help="also time CE24's construction on this many points (0: skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    data = gaussian_clusters(args.q, args.n // args.q, delta=0.02, seed=0)
    X, labels = data.X, data.labels
    total, result = best_of(lambda: construct_clustered(X, labels), args.repeats)
    stages = _stages(X, labels)
    with torch.no_grad():
        forward, out = best_of(lambda: result.module(X), args.repeats)
    measured_cost = float(weighted_l2(out, labels).sqrt())

    net = ReLUNet(result.module.widths)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def adam_step() -> None:
        opt.zero_grad()
        weighted_l2(net(X), labels).backward()
        opt.step()

    adam, _ = best_of(adam_step, 1)  # one step is slow and its time is stable
    report: dict[str, Any] = {
        "N": int(X.shape[0]),
        "Q": args.q,
        "M": args.q,
        "threads": torch.get_num_threads(),
        "construct_clustered_s": total,
        "stages_s": stages,
        "baseline_forward_s": forward,
        "baseline_adam_step_s": adam,
        "ratio_construct_over_forward": total / forward,
        "ratio_construct_over_adam_step": total / adam,
        "cost_reported": result.cost,
        "cost_module": measured_cost,
        "target_s": 2.0,
        "meets_target": total < 2.0,
    }
    if args.sequential:
        sdata = sequentially_separable(args.q, args.q, args.sequential // args.q, seed=0)
        seq, sres = best_of(lambda: construct_sequential(sdata.X, sdata.labels, order=list(range(args.q))), 1)
        greedy, _ = best_of(lambda: construct_sequential(sdata.X, sdata.labels, search="greedy"), 1)
        report.update({"sequential_N": int(sdata.num_samples), "sequential_given_order_s": seq, "sequential_greedy_s": greedy, "sequential_cost": sres.cost})
    if args.json:
        print(json.dumps(report))
        return
    print(f"construct_clustered: N={report['N']}, Q=M={args.q}, {report['threads']} threads (best of {args.repeats})")
    print(f"  total                 {total:8.3f} s   (target < 2 s: {'met' if total < 2 else 'MISSED'})")
    for name, sec in stages.items():
        print(f"    {name:20s}{sec:8.3f} s")
    print(f"  baseline forward pass {forward:8.3f} s   construct / forward   = {total / forward:6.2f}")
    print(f"  baseline Adam step    {adam:8.3f} s   construct / Adam step = {total / adam:6.2f}")
    print(f"  cost reported {result.cost:.2e}, cost of module(X) {measured_cost:.2e}")
    if args.sequential:
        print(f"construct_sequential: N={report['sequential_N']}: given order {report['sequential_given_order_s']:.3f} s, greedy search {report['sequential_greedy_s']:.3f} s, cost {report['sequential_cost']:.1e}")


if __name__ == "__main__":
    main()
