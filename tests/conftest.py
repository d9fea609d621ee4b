import pytest
import torch

from lth.presets import Config


@pytest.fixture
def tiny_cfg():
    """A lottery config that trains in a second or two on the embedded MNIST."""
    return Config(
        name="tiny", iterations=30, eval_every=10, levels=2, trials=2, batch_size=60,
        controls=["reinit", "random"], prune_rate=0.5, layer_rates={"fc3.weight": 0.25},
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
