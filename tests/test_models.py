"""The notebook's four models must match Keras' parameter counts exactly."""

import pytest
import torch

from housenum.errors import ModelError
from housenum.models import count_parameters, create_model, list_models, model_spec


@pytest.mark.parametrize(("name", "total", "trainable"), [
    ("ann1", 68_010, 68_010),
    ("ann2", 310_250, 310_186),
    ("cnn1", 267_306, 267_306),
    ("cnn2", 164_362, 164_170),
])
def test_notebook_parameter_counts(name, total, trainable):
    model = create_model(name, channels=1)
    assert count_parameters(model) == total
    assert count_parameters(model, trainable_only=True) == trainable


@pytest.mark.parametrize(("name", "epochs", "batch", "lr"), [
    ("ann1", 20, 128, 1e-3), ("ann2", 30, 128, 5e-4), ("cnn1", 20, 32, 1e-3), ("cnn2", 30, 128, 1e-3),
])
def test_notebook_defaults(name, epochs, batch, lr):
    spec = model_spec(name)
    assert (spec.epochs, spec.batch_size, spec.lr, spec.channels) == (epochs, batch, lr, 1)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_maps_digits_to_ten_logits(name, channels):
    model = create_model(name, channels).eval()
    with torch.no_grad():
        out = model(torch.rand(4, channels, 32, 32))
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()


def test_stronger_family_is_registered():
    assert {"resnet", "resnet_fast"} <= set(list_models())
    assert count_parameters(create_model("resnet")) > count_parameters(create_model("cnn2"))


@pytest.mark.parametrize("name, widths", [("resnet_fast", (64, 128, 256)), ("resnet_mid", (48, 96, 192))])
def test_the_shipped_resnets_start_their_blocks_at_half_resolution(name, widths):
    from housenum.models.resnet import BasicBlock

    model = create_model(name, 3).eval()
    sizes = []
    for block in (m for m in model.modules() if isinstance(m, BasicBlock)):
        block.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert sizes == [(widths[0], 16, 16), (widths[1], 8, 8), (widths[2], 4, 4)]


def test_unknown_model_names_the_choices():
    with pytest.raises(ModelError, match="unknown model 'vgg'.*cnn2"):
        create_model("vgg")
