"""The decoder's masked attention: FlexAttention with the mask as a BlockMask computes what SDPA
with the dense mask does, on the block-causal mask of a real layout. On CPU the values (torch has
no FlexAttention backward there); on the GPU (marked gpu) values and gradients, compiled, which is
where ``auto`` picks Flex."""

import pytest
import torch

from starx.models import create_model
from starx.ops.attention import ATTENTION, masked_attention, uses_flex


@pytest.fixture
def attention_impl():
    yield ATTENTION
    ATTENTION["impl"] = "auto"


def star_mask(seq_multiplier: int = 2, img_size: int = 32) -> torch.Tensor:
    model = create_model("star_tiny", img_size=img_size, patch_size=4, seq_multiplier=seq_multiplier, backend="torch")
    mask = model.mask
    assert 0.2 < mask.float().mean() < 0.8  # block-causal: neither empty nor dense
    return mask


def qkv(mask: torch.Tensor, device: str, dtype: torch.dtype, grad: bool, heads: int = 2, dim: int = 16):
    torch.manual_seed(0)
    return [torch.randn(3, heads, n, dim, device=device, dtype=dtype, requires_grad=grad)
            for n in (mask.shape[0], mask.shape[1], mask.shape[1])]


def test_flex_values_match_sdpa_on_a_star_mask(attention_impl):
    mask = star_mask()
    q, k, v = qkv(mask, "cpu", torch.float64, grad=False)
    outs = {}
    for impl in ("sdpa", "flex"):
        attention_impl["impl"] = impl
        assert uses_flex(q) == (impl == "flex")
        outs[impl] = masked_attention(q, k, v, mask)
    torch.testing.assert_close(outs["flex"], outs["sdpa"], rtol=1e-9, atol=1e-9)


def test_auto_keeps_sdpa_outside_compiled_cuda(attention_impl):
    assert not uses_flex(torch.zeros(1, 1, 2, 2))  # CPU, eager
    attention_impl["impl"] = "flash"
    with pytest.raises(ValueError, match="auto, sdpa or flex"):
        uses_flex(torch.zeros(1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_flex_matches_sdpa_with_gradients_on_gpu(attention_impl):
    mask = star_mask(seq_multiplier=4, img_size=64).cuda()  # 128 x 128 tiles, some of them fully masked
    q, k, v = qkv(mask, "cuda", torch.float32, grad=True, dim=64)
    dout = torch.randn_like(q)
    results = {}
    assert torch.compile(lambda a: torch.tensor(uses_flex(a)))(q).item()  # auto: Flex, compiled on CUDA
    for impl in ("sdpa", "auto"):
        attention_impl["impl"] = impl
        torch._dynamo.reset()
        out = torch.compile(lambda a, b, c: masked_attention(a, b, c, mask))(q, k, v)
        results[impl] = (out, *torch.autograd.grad(out, (q, k, v), dout))
    for ref, got in zip(results["sdpa"], results["auto"]):
        torch.testing.assert_close(got, ref, rtol=2e-3, atol=2e-3)
