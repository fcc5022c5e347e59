"""Segmentation losses for decoder fine-tuning: Dice + BCE on the mask, MSE on predicted IoU
(DAFT's combination), all restricted to the resized image (the padding is never scored)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per row, averaged. Shapes (B, 1, S, S)."""
    prob = torch.sigmoid(logits) * valid
    inter = (prob * target).sum(dim=(1, 2, 3))
    total = prob.sum(dim=(1, 2, 3)) + (target * valid).sum(dim=(1, 2, 3))
    return (1 - (2 * inter + 1) / (total + 1)).mean()


def masked_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def hard_iou(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """IoU of (logits > 0) with the target per row, (B,), no gradient."""
    with torch.no_grad():
        pred = (logits > 0).float() * valid
        inter = (pred * target).sum(dim=(1, 2, 3))
        union = ((pred + target * valid) > 0).float().sum(dim=(1, 2, 3))
        return inter / union.clamp(min=1)


def total_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Dice + BCE + MSE(iou_pred, actual IoU); also the parts, for the log."""
    dice = soft_dice_loss(logits, target, valid)
    bce = masked_bce(logits, target, valid)
    iou = F.mse_loss(iou_pred.reshape(-1), hard_iou(logits, target, valid))
    loss = dice + bce + iou
    return loss, {"loss": loss.item(), "dice": dice.item(), "bce": bce.item(), "iou": iou.item()}


def mask_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """BCE + soft Dice of the student's mask logits against the teacher's mask probabilities
    (soft targets), inside the resized image. Shapes (B, 1, S, S)."""
    target = torch.sigmoid(teacher_logits)
    return masked_bce(student_logits, target, valid) + soft_dice_loss(student_logits, target, valid)


def soft_target_bce(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """BCE of the student's mask logits against the teacher's mask probabilities, inside the
    resized image: a proper scoring rule, lowest (zero gradient) where the student's logits
    equal the teacher's. (Soft Dice is not: against soft targets it pulls the student's
    probabilities towards 0/1, sharper than the teacher's.) Shapes (B, 1, S, S)."""
    return masked_bce(student_logits, torch.sigmoid(teacher_logits), valid)


# The task-aware term's mask loss, by name (``DistillConfig.kd_loss``).
MASK_DISTILLATION_LOSSES = {"bce_dice": mask_distillation_loss, "bce": soft_target_bce}
