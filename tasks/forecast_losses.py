"""What a forecast head outputs and how it is scored: point (MSE), quantiles (pinball), Student-t (NLL).

The loss owns the meaning of the head's output (as pytorch-forecasting's metrics do): it says how many
numbers the head emits per forecast value, maps them to valid parameters, turns them into a point
forecast and quantiles, moves them between scales, and scores them. The head, metrics, CSV writer and
plot only ever call these methods, so every loss works everywhere.

Shapes: ``params (..., P)`` with ``P = n_params``; targets and point forecasts ``(...)``; quantiles
``(..., Q)``. Inside a head ``...`` is ``(B, pred_len, C)``.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqpipe.errors import ConfigError


class ForecastLoss(nn.Module):
    """Base class: the output methods default to a point forecast (``n_params`` = 1); subclasses define
    the training loss (:meth:`forward`)."""

    n_params = 1
    #: quantile levels written to predictions and drawn as intervals (empty: a point forecast)
    quantiles: list[float] = []

    @property
    def probabilistic(self) -> bool:
        return bool(self.quantiles)

    def from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Unconstrained head outputs (..., P) -> valid parameters (..., P)."""
        return raw

    def rescale(self, params: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Parameters of ``Y`` -> parameters of ``Y * scale + shift`` (``scale`` > 0, both broadcast to ``...``)."""
        return params * scale[..., None] + shift[..., None]

    def forward(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Parameters (..., P) and targets (...) -> the training loss, a scalar averaged over every forecast value."""
        raise NotImplementedError(f"{type(self).__name__} must define its training loss")

    def to_prediction(self, params: torch.Tensor) -> torch.Tensor:
        """The point forecast (...)."""
        return params[..., 0]

    def to_quantiles(self, params: torch.Tensor) -> torch.Tensor:
        """The forecast at each of :attr:`quantiles`, (..., Q)."""
        return params[..., :0]

    def crps(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Continuous ranked probability score per value (...)."""
        raise NotImplementedError(f"{type(self).__name__} is a point forecast: it has no CRPS")

    def covered(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Whether each target lies in the interval [lowest, highest quantile], as float (...)."""
        bounds = self.to_quantiles(params)
        return ((target >= bounds[..., 0]) & (target <= bounds[..., -1])).float()


class PointForecast(ForecastLoss):
    """A point forecast (one output per value), trained by a choice of error.

    Args:
        criterion: ``"mse"`` (the default): squared error, the forecast estimates the conditional mean.
            ``"l1"``: absolute error, it estimates the median; robust to the spikes of sensor data, and on
            ETT it lowers the test MAE markedly (and the MSE a little, see ``bench/RESULTS.md``).
            ``"huber"``: squared within ``delta`` of the target, absolute beyond (``torch``'s Huber loss).
        delta: the Huber threshold, on the data module's (standardised) scale.

    ``val/loss`` is this criterion, so early stopping and the best checkpoint follow it too.
    """

    def __init__(self, criterion: Literal["mse", "l1", "huber"] = "mse", delta: float = 1.0):
        super().__init__()
        if criterion not in ("mse", "l1", "huber"):
            raise ConfigError(f"PointForecast: criterion must be 'mse', 'l1' or 'huber', got {criterion!r}")
        if not delta > 0:
            raise ConfigError(f"PointForecast: delta must be positive, got {delta}")
        self.criterion, self.delta = criterion, float(delta)

    def forward(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.criterion == "l1":
            return F.l1_loss(params[..., 0], target)
        if self.criterion == "huber":
            return F.huber_loss(params[..., 0], target, delta=self.delta)
        return F.mse_loss(params[..., 0], target)


def quantile_levels(quantiles: Sequence[float], owner: str) -> list[float]:
    """``quantiles`` sorted, after checking they are distinct levels in (0, 1); ``owner`` names the loss in the
    error."""
    if not quantiles or any(not 0 < q < 1 for q in quantiles) or len(set(quantiles)) != len(quantiles):
        raise ConfigError(f"{owner}: quantiles must be distinct levels in (0, 1), got {list(quantiles)}")
    return sorted(float(q) for q in quantiles)


def pinball_loss(forecasts: torch.Tensor, target: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
    """Quantile (pinball) loss per value and level: forecasts (..., Q), target (...) -> (..., Q)."""
    tau = torch.as_tensor(levels, dtype=forecasts.dtype, device=forecasts.device)
    error = target[..., None] - forecasts
    return torch.maximum(tau * error, (tau - 1) * error)


class QuantileForecast(ForecastLoss):
    """One output per quantile level, trained with the pinball loss averaged over levels.

    The point forecast is the median (the level nearest 0.5). Quantiles are sorted before use, so crossing
    outputs still give ordered intervals. CRPS is estimated as twice the mean pinball loss over the levels
    (exact as the levels fill (0, 1) evenly); coverage counts targets between the lowest and highest level.

    Args:
        quantiles: levels in (0, 1), e.g. ``[0.1, 0.5, 0.9]`` (an 80 % interval around the median).
    """

    def __init__(self, quantiles: list[float] = [0.1, 0.5, 0.9]):
        super().__init__()
        self.quantiles = quantile_levels(quantiles, "QuantileForecast")
        self.n_params = len(self.quantiles)
        self._median = int(np.argmin([abs(q - 0.5) for q in self.quantiles]))

    def forward(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pinball_loss(params, target, self.quantiles).mean()

    def to_prediction(self, params: torch.Tensor) -> torch.Tensor:
        return self.to_quantiles(params)[..., self._median]

    def to_quantiles(self, params: torch.Tensor) -> torch.Tensor:
        return params.sort(dim=-1).values

    def crps(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 2 * pinball_loss(self.to_quantiles(params), target, self.quantiles).mean(-1)


# Gauss-Legendre rule on [0, 1] for the Student-t CDF (see student_t_cdf).
_NODES, _WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(64))
_NODES, _WEIGHTS = (_NODES + 1) / 2, _WEIGHTS / 2


def student_t_cdf(z: torch.Tensor, df: torch.Tensor) -> torch.Tensor:
    """CDF of the standard Student-t with ``df`` degrees of freedom at ``z`` (same shape, df ≥ 1).

    With ``z = √df·tan θ`` the density becomes ``c·cos^(df-1) θ dθ``, smooth and bounded on [0, π/2), so
    a 64-point Gauss-Legendre rule is accurate to ~1e-7 for the df a forecaster learns (torch has no
    regularised incomplete beta function).
    """
    theta = torch.atan(z.abs() / df.sqrt())
    nodes, weights = _NODES.to(z), _WEIGHTS.to(z)
    integrand = torch.cos(theta[..., None] * nodes) ** (df[..., None] - 1)
    log_c = torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2) - 0.5 * math.log(math.pi)
    half = log_c.exp() * theta * (integrand * weights).sum(-1)
    return 0.5 + torch.sign(z) * half


def student_t_icdf(p: torch.Tensor, df: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """Quantile function of the standard Student-t, by bisection in θ = atan(z/√df) ∈ (-π/2, π/2)."""
    low = torch.full_like(p, -math.pi / 2)
    high = torch.full_like(p, math.pi / 2)
    for _ in range(iterations):
        middle = (low + high) / 2
        below = student_t_cdf(df.sqrt() * torch.tan(middle), df) < p
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    return df.sqrt() * torch.tan((low + high) / 2)


class StudentTForecast(ForecastLoss):
    """A Student-t distribution per forecast value (location, scale, degrees of freedom), trained by its
    negative log-likelihood. The point forecast is the location (the median); quantiles are exact.
    CRPS is the closed form of Jordan, Krüger & Lerch (2019, scoringRules); coverage checks the CDF.

    Args:
        quantiles: levels written to predictions; the lowest and highest bound the interval.
        min_df: lower bound of the learned degrees of freedom (above 1, so the CRPS is finite).
    """

    n_params = 3

    def __init__(self, quantiles: list[float] = [0.1, 0.5, 0.9], min_df: float = 2.0):
        super().__init__()
        if min_df <= 1:
            raise ConfigError(f"StudentTForecast: min_df must exceed 1 (the CRPS of a Student-t needs df > 1), got {min_df}")
        self.quantiles = quantile_levels(quantiles, "StudentTForecast")
        self.min_df = min_df

    def from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        loc, scale, df = raw.unbind(-1)
        return torch.stack([loc, F.softplus(scale) + 1e-4, self.min_df + F.softplus(df)], dim=-1)

    def rescale(self, params: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        loc, spread, df = params.unbind(-1)
        return torch.stack([loc * scale + shift, spread * scale, df], dim=-1)

    def distribution(self, params: torch.Tensor) -> torch.distributions.StudentT:
        loc, scale, df = params.unbind(-1)
        return torch.distributions.StudentT(df, loc, scale)

    def forward(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -self.distribution(params).log_prob(target).mean()

    def to_quantiles(self, params: torch.Tensor) -> torch.Tensor:
        loc, scale, df = (p[..., None] for p in params.unbind(-1))
        levels = torch.tensor(self.quantiles, dtype=params.dtype, device=params.device).expand_as(loc.expand(*loc.shape[:-1], len(self.quantiles)))
        return loc + scale * student_t_icdf(levels, df.expand_as(levels))

    def crps(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loc, scale, df = params.unbind(-1)
        z = (target - loc) / scale
        density = self.distribution(torch.stack([torch.zeros_like(z), torch.ones_like(z), df], -1)).log_prob(z).exp()
        log_beta = lambda a, b: torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)  # noqa: E731
        half = torch.full_like(df, 0.5)
        constant = 2 * df.sqrt() * torch.exp(log_beta(half, df - 0.5) - 2 * log_beta(half, df / 2)) / (df - 1)
        score = z * (2 * student_t_cdf(z, df) - 1) + 2 * density * (df + z**2) / (df - 1) - constant
        return scale * score

    def covered(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loc, scale, df = params.unbind(-1)
        level = student_t_cdf((target - loc) / scale, df)
        return ((level >= self.quantiles[0]) & (level <= self.quantiles[-1])).float()
