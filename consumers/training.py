"""DP-SGD training of the scorer with Opacus, and the accounting of runs on the same data.

``train_dp`` fits ``online_learning.scoring.SpecScorer`` (the family a learner spec's kind
declares: logistic, linear or softmax) with Opacus's ``make_private_with_epsilon`` (Poisson
sampling, flat clipping, RDP accountant).
``planned_history`` and ``composed_epsilon`` let the job check, before training, that every
run on the same data composed with the planned one stays within the total budget.

torch and opacus come with the ``[retrain]`` extra and are imported inside the functions
that need them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa

from eddyline.online_learning.scoring import SpecScorer
from eddyline.online_learning.spec import LearnerSpec


@dataclass(frozen=True)
class TrainResult:
    scorer: SpecScorer
    epsilon: float  # what Opacus's accountant measured for this run
    delta: float
    history: list[list[float]]  # the accountant's [noise multiplier, sample rate, steps]


@dataclass(frozen=True)
class TrainConfig:
    epsilon: float = 2.0  # per run
    delta: float = 1e-5
    epochs: int = 3
    batch_size: int = 256
    max_grad_norm: float = 1.0
    learning_rate: float = 0.5
    seed: int = 0


def planned_history(rows: int, cfg: TrainConfig) -> list[list[float]]:
    """The accountant history a run on ``rows`` rows would record (as Opacus computes it
    in ``make_private_with_epsilon``): for the budget check before training."""
    from opacus.accountants.utils import get_noise_multiplier

    batches = math.ceil(rows / cfg.batch_size)
    rate = 1.0 / batches
    sigma = get_noise_multiplier(
        target_epsilon=cfg.epsilon,
        target_delta=cfg.delta,
        sample_rate=rate,
        epochs=cfg.epochs,
        accountant="rdp",
    )
    return [[float(sigma), rate, cfg.epochs * batches]]


def composed_epsilon(history: list[list[float]], delta: float) -> float:
    """ε of every run in ``history`` together, from Opacus's RDP accountant."""
    from opacus.accountants import RDPAccountant

    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return float(accountant.get_epsilon(delta))


def labelled(spec: LearnerSpec, table: pa.Table) -> pa.Table:
    """The rows of ``table`` that carry the spec's label (the only ones trained on)."""
    from eddyline.online_learning.features import target_values

    keep = target_values(spec.kind, spec.target, table).is_not_null().to_numpy()
    return table.filter(pa.array(keep))


def train_dp(spec: LearnerSpec, table: pa.Table, cfg: TrainConfig) -> TrainResult:
    """The spec's family with DP-SGD on the labelled rows of ``table``: Opacus
    ``make_private_with_epsilon`` (Poisson sampling, flat clipping, RDP accountant).
    Logistic: BCE on one output; linear: squared error on the standardised target;
    softmax: cross-entropy over the classes seen in training."""
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(cfg.seed)
    table = labelled(spec, table)
    scorer = SpecScorer.fit(spec, table)
    x = torch.from_numpy(scorer.design(table))
    y_np = scorer.labels(table)
    if scorer.kind == "multiclass":
        y = torch.from_numpy(y_np.astype("int64"))
        loss_fn: torch.nn.Module = torch.nn.CrossEntropyLoss()
    else:
        y = torch.from_numpy(y_np.astype("float32"))
        loss_fn = torch.nn.BCEWithLogitsLoss() if scorer.kind == "binary" else torch.nn.MSELoss()
    model = torch.nn.Linear(x.shape[1], scorer.outputs)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size)
    engine = PrivacyEngine(accountant="rdp")
    generator = torch.Generator().manual_seed(cfg.seed)
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        target_epsilon=cfg.epsilon,
        target_delta=cfg.delta,
        epochs=cfg.epochs,
        max_grad_norm=cfg.max_grad_norm,
        poisson_sampling=True,
        noise_generator=generator,
    )
    for _ in range(cfg.epochs):
        for xb, yb in loader:
            if len(xb) == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad()
            out = model(xb)
            loss_fn(out if scorer.kind == "multiclass" else out.squeeze(1), yb).backward()
            optimizer.step()
    linear = model._module  # the GradSampleModule wraps the Linear
    scorer.weights = linear.weight.detach().numpy().T.astype(float).tolist()
    scorer.bias = linear.bias.detach().numpy().astype(float).tolist()
    history = [[float(s), float(q), int(n)] for s, q, n in engine.accountant.history]
    return TrainResult(scorer, float(engine.accountant.get_epsilon(cfg.delta)), cfg.delta, history)
