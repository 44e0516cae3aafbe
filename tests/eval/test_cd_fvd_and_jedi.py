"""CD-FVD and JEDi against their reference implementations (cd-fvd 0.1.1, videojedi 1.1.0, installed without
their dependencies by requirements-refs.txt: their pins would replace our torch).

- CD-FVD: cd-fvd's own VideoMAE-v2 ``VisionTransformer`` class, tiny and random, converted to transformers by
  the same code that converts the real checkpoint: features agree to float32 precision.
- JEDi: videojedi's ``mmd_poly`` (loaded from its file; the package's __init__ needs V-JEPA 1's training code)
  on the same random features, times 100 as ``JEDiMetric.compute_metric`` does.
"""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from ophora.eval.mmd import jedi_distance


def _videojedi_mmd():
    spec = importlib.util.find_spec("videojedi")
    if spec is None:
        pytest.fail("videojedi is not installed: pip install --no-deps -r requirements-refs.txt")
    path = Path(spec.submodule_search_locations[0]) / "mmd_polynomial.py"
    module_spec = importlib.util.spec_from_file_location("videojedi_mmd_polynomial", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.mmd_poly


@pytest.mark.parametrize("n1,n2,dims", [(40, 55, 1280), (200, 150, 16)])
def test_jedi_equals_videojedi(n1, n2, dims):
    rng = np.random.default_rng(dims)
    x, y = rng.normal(size=(n1, dims)), rng.normal(0.1, 1.2, size=(n2, dims))
    reference = 100 * _videojedi_mmd()(x, y, degree=2, coef0=0)  # JEDiMetric.compute_metric
    assert jedi_distance(x, y) == pytest.approx(reference, rel=1e-10)
    assert jedi_distance(x, x) == pytest.approx(0.0, abs=1e-10)


def test_cd_fvd_features_equal_the_reference_videomae_v2():
    from cdfvd.third_party.VideoMAEv2.videomaev2_finetune import VisionTransformer
    from torch import nn

    from ophora.eval.videomae import videomae_from_state_dict

    torch.manual_seed(3)
    # cd-fvd hard-codes the 16-frame, 224 px token grid (8 x 16 x 16); the width is what we shrink.
    reference = VisionTransformer(img_size=224, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2,
                                  qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=5,
                                  all_frames=16, tubelet_size=2, use_mean_pooling=True).eval()
    with torch.no_grad():
        for parameter in reference.parameters():  # non-trivial biases and norms, so a wrong mapping shows
            parameter.normal_(0, 0.5)
    config = dict(image_size=224, patch_size=14, num_frames=16, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=64, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True,
                  use_mean_pooling=True, num_labels=5)
    ours = videomae_from_state_dict(reference.state_dict(), config, Path("tiny.pth"))
    videos = np.random.default_rng(0).integers(0, 255, size=(2, 16, 48, 64, 3), dtype=np.uint8)
    # cd-fvd's preprocess_videomae (its module imports torchvision, which we do not ship), line for line:
    # permute(3, 0, 1, 2) / 255, then interpolate the (C, T, H, W) tensor to (224, 224), bilinear, no corners.
    expected_inputs = torch.stack([torch.nn.functional.interpolate(
        torch.from_numpy(v).permute(3, 0, 1, 2).to(torch.float32) / 255, size=(224, 224), mode="bilinear",
        align_corners=False) for v in videos])
    inputs = torch.stack([ours.preprocess(v) for v in videos])
    torch.testing.assert_close(inputs, expected_inputs, rtol=0, atol=0)
    with torch.no_grad():
        expected = reference.forward_features(expected_inputs)
        features = ours(inputs)
    assert features.shape == (2, 32)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
