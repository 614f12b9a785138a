"""Every sampler, with kwargs variants: the generic tests iterate over this registry
(STYLE §6). A new sampler gets all generic tests by adding one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import thermotrain as tt


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    #: builds the optimizer from (layers: list[list[Tensor]], **kwargs)
    build: Callable
    kwargs: dict
    #: kwargs that remove every source of noise (the deterministic limit)
    zero_noise: dict = field(default_factory=dict)
    #: needs at least two layers
    partitioned: bool = False

    @property
    def id(self) -> str:
        return self.name


def _flat(layers):
    return [p for layer in layers for p in layer]


SAMPLERS = [
    SamplerSpec("BAOAB", lambda L, **k: tt.BAOAB(_flat(L), **k),
                dict(lr=0.05, friction=1.0, temperature=1e-3), dict(temperature=0.0)),
    SamplerSpec("BAOAB-highfriction", lambda L, **k: tt.BAOAB(_flat(L), **k),
                dict(lr=0.1, friction=10.0, temperature=1e-4), dict(temperature=0.0)),
    SamplerSpec("SGLD", lambda L, **k: tt.SGLD(_flat(L), **k),
                dict(lr=0.05, temperature=5e-5), dict(temperature=0.0)),
    SamplerSpec("OverdampedLangevin", lambda L, **k: tt.OverdampedLangevin(_flat(L), **k),
                dict(lr=0.1, temperature=1e-4), dict(temperature=0.0)),
    SamplerSpec("AdaptiveLangevin", lambda L, **k: tt.AdaptiveLangevin(_flat(L), **k),
                dict(lr=0.05, temperature=1e-4, noise=0.01, coupling=0.05, xi_init=0.1),
                dict(noise=0.0)),
    SamplerSpec("AdLaLa", lambda L, **k: tt.AdLaLa(L, **k),
                dict(lr=0.1, friction=0.1, temperature=(1e-4, 1e-4), noise=0.01,
                     coupling=0.05), dict(noise=0.0, temperature=(1e-4, 0.0)), True),
    SamplerSpec("AdLaLa-swapped", lambda L, **k: tt.AdLaLa(L, adaptive_layers=(1,), **k),
                dict(lr=0.1, friction=1.0, temperature=(1e-3, 1e-4), noise=0.02,
                     coupling=0.1), dict(noise=0.0, temperature=(1e-3, 0.0)), True),
    SamplerSpec("LOL", lambda L, **k: tt.LOL(L, **k),
                dict(lr=0.1, friction=0.01, temperature=(1e-3, 1e-3)),
                dict(temperature=(0.0, 0.0)), True),
    SamplerSpec("LaLa", lambda L, **k: tt.LaLa(L, **k),
                dict(lr=0.05, friction=[1.0, 3.0], temperature=[1e-4, 1e-3]),
                dict(temperature=[0.0, 0.0]), True),
    SamplerSpec("PartitionedLangevin",
                lambda L, **k: tt.PartitionedLangevin(
                    [{"params": L[0], "scheme": "adaptive"},
                     {"params": L[1], "scheme": "sgld", "lr": 0.01}], **k),
                dict(lr=0.1, temperature=1e-4, noise=0.01, coupling=0.05),
                dict(temperature=0.0, noise=0.0), True),
]

# The other splittings of Langevin (SPEC §1): every generic property must hold for them.
SAMPLERS += [
    SamplerSpec(f"Langevin-{word}", lambda L, word=word, **k: tt.Langevin(_flat(L), splitting=word,
                                                                        **k),
                dict(lr=0.05, friction=1.0, temperature=1e-3), dict(temperature=0.0))
    for word in ("ABOBA", "OBABO", "BAOA")
]

# The default noise source is the counter-based Philox stream; torch generators
# (rng="torch"): every generic property must hold with them too.
SAMPLERS += [
    SamplerSpec(f"{name}-torch", spec.build, {**spec.kwargs, "rng": "torch"},
                spec.zero_noise, spec.partitioned)
    for spec in list(SAMPLERS)
    for name in [spec.name]
    if spec.name in ("BAOAB", "SGLD", "AdLaLa", "LOL", "PartitionedLangevin", "Langevin-OBABO")
]
