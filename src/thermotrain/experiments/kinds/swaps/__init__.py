"""The swap studies (issue 11, docs/science.md §9-§10) as experiment kinds: ``swap-acceptance``,
``replica-exchange``, ``aging``, ``swap-speedup``. Each module validates its own TOML schema,
trains through :func:`thermotrain.training.train` with the :mod:`thermotrain.swaps` hooks,
and writes config.json, metrics.csv, summary.json, report.md and figures/ (docs/swaps.md)."""

from __future__ import annotations

from .. import Experiment, register
from . import acceptance, aging, exchange, speedup

register(Experiment("swap-acceptance", acceptance.run, acceptance.report, acceptance.table,
                    "Metropolis acceptance of parameter swaps vs temperature (spiral net)"))
register(Experiment("replica-exchange", exchange.run, exchange.report, exchange.table,
                    "Parallel tempering of BAOAB on the 4-turn spiral vs no exchange vs AdLaLa"))
register(Experiment("aging", aging.run, aging.report, aging.table,
                    "DEEP-GLASS aging: Δ(t_w, t_w + t) on MNIST, small vs large hidden width"))
register(Experiment("swap-speedup", speedup.run, speedup.report, speedup.table,
                    "Does any swap protocol train faster? Time-to-accuracy vs no swaps"))
