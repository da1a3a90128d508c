"""DINO head loss (value, centring / sharpening, gradients reach only the student), the
cosine alternative, and the EMA teacher update arithmetic."""
from __future__ import annotations

import copy

import torch

from fit3d_ros.models import build_backbone
from fit3d_ros.training.fit3d.finetune import add_lora
from fit3d_ros.training.snd.head import DINOHead, cosine_loss, dino_loss, update_center
from fit3d_ros.training.snd.train import cosine_lr, ema_update


def test_dino_loss_value_and_centre():
    torch.manual_seed(0)
    head = DINOHead(8, hidden=16, bottleneck=4, prototypes=10)
    s, t = torch.randn(5, 8), torch.randn(5, 8)
    center = torch.randn(10) * 0.1
    w = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    loss, mean = dino_loss(head, s, t, center, 0.04, 0.1, w)
    # by hand: softmax((t_logits - c) / 0.04) · -log_softmax(s_logits / 0.1), valid rows
    tl, sl = head(t), head(s)
    p_t = torch.exp((tl - center) / 0.04)
    p_t = p_t / p_t.sum(1, keepdim=True)
    log_p_s = sl / 0.1 - torch.logsumexp(sl / 0.1, 1, keepdim=True)
    ce = -(p_t * log_p_s).sum(1)
    assert torch.allclose(loss, ce[w > 0].mean(), atol=1e-5)
    assert torch.allclose(mean, tl[w > 0].mean(0), atol=1e-6)
    c = center.clone()
    update_center(c, mean, 0.9)
    assert torch.allclose(c, 0.9 * center + 0.1 * mean)
    # logits are cosines to unit prototypes: in [-1, 1]
    assert tl.abs().max() <= 1 + 1e-6


def test_gradients_reach_only_the_student():
    student = build_backbone("vit_tiny_test", pretrained=False)
    teacher = build_backbone("vit_tiny_test", pretrained=False)
    params = add_lora(student.model, 2, None, seed=0)
    for b in params[1::2]:
        torch.nn.init.normal_(b, std=0.01)  # B != 0 so that A gets gradient too
    head = DINOHead(48, hidden=32, bottleneck=8, prototypes=16)
    x = torch.rand(1, 3, 28, 28)
    target = teacher(x).patch[0].reshape(48, -1).T          # built with autograd on
    pred = student(x).patch[0].reshape(48, -1).T
    loss, _ = dino_loss(head, pred, target, torch.zeros(16))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(p.grad is not None for p in head.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for n, p in student.named_parameters()
               if not n.endswith((".A", ".B")))
    target2 = target.detach().requires_grad_(True)
    cosine_loss(student(x).patch[0].reshape(48, -1).T, target2).backward()
    assert target2.grad is None


def test_ema_update_arithmetic():
    student = build_backbone("vit_tiny_test", pretrained=False).model
    teacher = copy.deepcopy(student)
    params = add_lora(student, 2, 4.0, seed=0)
    for p in params:
        torch.nn.init.normal_(p)
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    lora = student.blocks[1].attn.qkv
    merged = lora.base.weight + 2.0 * lora.B @ lora.A     # alpha / rank = 2
    ema_update(teacher, student, 0.9)
    after = teacher.state_dict()
    want = 0.9 * t_before["blocks.1.attn.qkv.weight"] + 0.1 * merged
    assert torch.allclose(after["blocks.1.attn.qkv.weight"], want, atol=1e-6)
    changed = {k for k in after if not torch.equal(after[k], t_before[k])}
    assert changed == {f"blocks.{i}.attn.{n}.weight" for i in range(2) for n in ("qkv", "proj")}
    ema_update(teacher, student, 1.0)                      # momentum 1: frozen
    assert torch.equal(teacher.state_dict()["blocks.1.attn.qkv.weight"],
                       after["blocks.1.attn.qkv.weight"])


def test_cosine_schedule():
    assert cosine_lr(0, 100, 2e-5) == 2e-5
    assert abs(cosine_lr(50, 100, 2e-5) - 1e-5) < 1e-12 and cosine_lr(100, 100, 1.0) == 0.0
