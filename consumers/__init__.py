"""What reads eddyline's outputs: retraining jobs (drift events) and data scientists (Delta)."""

from eddyline.consumers.drift import DriftSubscriber

__all__ = ["DriftSubscriber", "Lake"]


def __getattr__(name: str) -> object:
    if name == "Lake":  # needs the [query] extra; import it only when asked for
        from eddyline.consumers.lake import Lake

        return Lake
    raise AttributeError(name)
