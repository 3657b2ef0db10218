"""Forecast head and losses: pinball and Student-t against independent references, RevIN, shapes, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqpipe.contracts import DataInfo
from seqpipe.tasks.forecast_losses import PointForecast, QuantileForecast, StudentTForecast, pinball_loss, student_t_cdf, student_t_icdf
from seqpipe.tasks.forecasting import Forecasting

B, SEQ, PRED, C = 4, 16, 8, 3


def info(targets=(0, 1, 2), calendar=()):
    names = ["a", "b", "c"]
    return DataInfo.from_dict({
        "columns": names, "targets": [names[i] for i in targets], "target_index": list(targets),
        "mean": [1.0, -2.0, 0.5], "std": [2.0, 0.5, 3.0], "seq_len": SEQ, "pred_len": PRED, "freq": "h",
        "calendar": list(calendar), "input_dim": C + len(calendar)})


def test_pinball_loss_matches_a_loop():
    generator = torch.Generator().manual_seed(0)
    forecasts, target = torch.randn(5, 7, 3, generator=generator), torch.randn(5, 7, generator=generator)
    levels = [0.1, 0.5, 0.9]
    total = 0.0
    for i in range(5):
        for j in range(7):
            for k, tau in enumerate(levels):
                error = target[i, j].item() - forecasts[i, j, k].item()
                total += tau * error if error >= 0 else (tau - 1) * error
    loss = QuantileForecast(levels)(forecasts, target)
    assert loss.item() == pytest.approx(total / (5 * 7 * 3), rel=1e-6)
    assert pinball_loss(forecasts, target, levels).shape == (5, 7, 3)


def test_student_t_nll_matches_the_formula_and_torch_distributions():
    generator = torch.Generator().manual_seed(1)
    raw, target = torch.randn(6, 5, 3, generator=generator, dtype=torch.float64), torch.randn(6, 5, generator=generator, dtype=torch.float64)
    loss = StudentTForecast()
    params = loss.from_raw(raw)
    loc, scale, df = params.unbind(-1)
    assert (scale > 0).all() and (df > 2).all()
    z = (target - loc) / scale
    log_density = (torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2) - 0.5 * torch.log(df * math.pi) - torch.log(scale)
                   - (df + 1) / 2 * torch.log1p(z**2 / df))
    torch.testing.assert_close(loss(params, target), -log_density.mean())
    torch.testing.assert_close(loss(params, target), -torch.distributions.StudentT(df, loc, scale).log_prob(target).mean())


def test_student_t_cdf_quantiles_and_crps():
    df = torch.tensor([2.5, 4.0, 10.0, 30.0], dtype=torch.float64)
    z = torch.tensor([-3.0, -0.4, 0.7, 2.2], dtype=torch.float64)
    stats = pytest.importorskip("scipy.stats")
    torch.testing.assert_close(student_t_cdf(z, df), torch.from_numpy(stats.t.cdf(z.numpy(), df.numpy())), atol=1e-7, rtol=0)
    levels = torch.tensor([0.05, 0.3, 0.5, 0.95], dtype=torch.float64)
    torch.testing.assert_close(student_t_icdf(levels, df), torch.from_numpy(stats.t.ppf(levels.numpy(), df.numpy())), atol=1e-6, rtol=0)
    # CRPS = ∫ (F(x) - 1{x ≥ y})² dx, integrated numerically on a wide grid
    loss = StudentTForecast()
    params = torch.tensor([[0.3, 1.5, 3.0], [-1.0, 0.5, 8.0]], dtype=torch.float64)
    target = torch.tensor([1.1, -2.0], dtype=torch.float64)
    for row in range(2):
        loc, scale, dof = params[row]
        integral = 0.0
        for grid, step in ((torch.linspace(-400, target[row].item(), 200001, dtype=torch.float64), 0.0),
                           (torch.linspace(target[row].item(), 400, 200001, dtype=torch.float64), 1.0)):  # split at the jump
            cdf = student_t_cdf((grid - loc) / scale, dof.expand_as(grid))
            integral += torch.trapezoid((cdf - step) ** 2, grid).item()
        assert loss.crps(params[row], target[row]).item() == pytest.approx(integral, abs=1e-5)


def test_quantile_crps_and_coverage():
    loss = QuantileForecast([0.1, 0.5, 0.9])
    params = torch.tensor([[0.0, 1.0, -1.0], [5.0, 6.0, 7.0]])  # crossing quantiles are sorted
    target = torch.tensor([0.5, 4.0])
    assert loss.to_quantiles(params)[0].tolist() == [-1.0, 0.0, 1.0]
    assert loss.to_prediction(params).tolist() == [0.0, 6.0]
    assert loss.covered(params, target).tolist() == [1.0, 0.0]
    manual = 2 * np.mean([max(t * (0.5 - q), (t - 1) * (0.5 - q)) for t, q in zip([0.1, 0.5, 0.9], [-1.0, 0.0, 1.0])])
    assert loss.crps(params, target)[0].item() == pytest.approx(manual)


@pytest.mark.parametrize("criterion, delta", [("mse", 1.0), ("l1", 1.0), ("huber", 1.0), ("huber", 0.3), ("huber", 2.5)])
def test_point_forecast_criteria_match_a_loop(criterion, delta):
    generator = torch.Generator().manual_seed(7)
    params = (1.5 * torch.randn(4, 6, 3, 1, generator=generator, dtype=torch.float64)).requires_grad_()
    target = 1.5 * torch.randn(4, 6, 3, generator=generator, dtype=torch.float64)
    total = 0.0
    for forecast, actual in zip(params.detach().numpy().ravel().tolist(), target.numpy().ravel().tolist()):
        error = abs(forecast - actual)
        if criterion == "mse":
            total += error**2
        elif criterion == "l1":
            total += error
        else:  # Huber (1964): quadratic within delta, linear with matching slope beyond
            total += 0.5 * error**2 if error <= delta else delta * (error - 0.5 * delta)
    loss = PointForecast(criterion, delta)(params, target)
    assert loss.item() == pytest.approx(total / target.numel(), rel=1e-12)
    loss.backward()  # the gradient of the l1 loss is the sign of the error: the forecast is pulled to the median
    if criterion == "l1":
        torch.testing.assert_close(params.grad[..., 0], torch.sign(params.detach()[..., 0] - target) / target.numel())


def test_point_forecast_rejects_bad_arguments():
    with pytest.raises(ValueError, match="criterion"):
        PointForecast("mape")
    with pytest.raises(ValueError, match="delta"):
        PointForecast("huber", delta=0.0)


@pytest.mark.parametrize("loss", [PointForecast(), QuantileForecast([0.1, 0.5, 0.9]), StudentTForecast()])
@pytest.mark.parametrize("channel_independent", [True, False])
def test_channel_independent_and_mixing_shapes(loss, channel_independent):
    head = Forecasting(loss=loss, channel_independent=channel_independent)
    data_info = info(targets=(2,), calendar=("hour", "day_of_week"))
    d_model = 5
    spec = head.backbone_input_spec(data_info)
    if channel_independent:  # the two other inputs cannot change a target's forecast: said once, at bind
        with pytest.warns(UserWarning, match=r"channel_independent forecasts each target from its own history, so the "
                                             r"other input column\(s\) a, b cannot change the forecast"):
            head.bind(d_model, data_info)
    else:
        head.bind(d_model, data_info)
    batch = {"x": torch.randn(B, SEQ, C), "x_calendar": torch.rand(B, SEQ, 2), "y": torch.randn(B, PRED, 1)}
    inputs, context = head.backbone_input(batch)
    expected = (B * C, SEQ, 1 + 2) if channel_independent else (B, SEQ, C + 2)
    assert inputs.shape == expected and spec.channels == expected[-1]
    if channel_independent:  # variable k of sample b is row b·C + k, its own (RevIN-normalised) series
        torch.testing.assert_close(inputs[1 * C + 2, :, 0], context.window[1, :, 2])
    outputs = head(torch.randn(inputs.shape[0], SEQ, d_model), None, batch, context)
    assert outputs.shape == (B, PRED, 1, loss.n_params)
    assert torch.isfinite(head.loss(outputs, batch))
    metrics = head.metrics()
    head.update_metrics(metrics, outputs, batch)
    values = metrics.compute()
    assert {"mse", "mae", "mse_orig", "mae_orig"} <= set(values) and ("crps" in values) == loss.probabilistic


@pytest.mark.parametrize("loss", [PointForecast(), StudentTForecast()])
def test_revin_round_trip(loss):
    """Instance normalisation makes the forecast equivariant: scaling and shifting each input variable scales
    and shifts its forecast the same way (the backbone only ever sees the normalised window)."""
    torch.manual_seed(0)
    head = Forecasting(loss=loss, revin=True)
    head.bind(4, info())
    backbone = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh())
    x = torch.randn(B, SEQ, C)
    scale, shift = torch.tensor([3.0, 0.5, 2.0]), torch.tensor([10.0, -4.0, 0.2])

    def forecast(inputs):
        batch = {"x": inputs}
        x, context = head.backbone_input(batch)
        return head(backbone(x), None, batch, context)

    plain, moved = forecast(x), forecast(x * scale + shift)
    torch.testing.assert_close(moved, loss.rescale(plain, shift.expand(B, PRED, C), scale.expand(B, PRED, C)), atol=1e-4, rtol=1e-4)
    batch = {"x": x}
    inputs, context = head.backbone_input(batch)
    normalised = inputs.view(B, C, SEQ).transpose(1, 2)
    mean, std = context.mean, context.std
    torch.testing.assert_close(normalised * std[:, None] + mean[:, None], x, atol=1e-5, rtol=1e-5)


def test_metrics_on_the_original_scale_and_prediction_rows():
    head = Forecasting(loss=QuantileForecast([0.1, 0.5, 0.9]), revin=False, linear_skip=False)
    data_info = info(targets=(0, 2))
    head.bind(3, data_info)
    outputs = torch.randn(B, PRED, 2, 3)
    batch = {"y": torch.randn(B, PRED, 2), "future_time": torch.from_numpy(
        np.stack([np.arange(PRED) * 3_600_000_000_000 + i for i in range(B)]).astype(np.int64)),
        "timestamped": torch.ones(B, dtype=torch.bool)}
    metrics = head.metrics()
    head.update_metrics(metrics, outputs, batch)
    point = outputs.sort(-1).values[..., 1]
    std, mean = torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.5])
    values = metrics.compute()
    assert values["mse"].item() == pytest.approx(((point - batch["y"]) ** 2).mean().item(), rel=1e-5)
    assert values["mae_orig"].item() == pytest.approx(((point - batch["y"]) * std).abs().mean().item(), rel=1e-5)
    frame = head.predictions(outputs, batch, data_info)
    assert list(frame.columns) == ["timestamp", "variable", "forecast", "q0.1", "q0.5", "q0.9"]
    assert len(frame) == B * PRED * 2 and frame["variable"].tolist()[:4] == ["a", "c", "a", "c"]
    assert frame["forecast"].iloc[1] == pytest.approx((point[0, 0, 1] * std[1] + mean[1]).item(), rel=1e-5)
    assert (frame["q0.1"] <= frame["q0.9"]).all()

