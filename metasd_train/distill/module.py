"""LightningModule for token-level distillation of a drafter against a frozen target."""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import MeanMetric

from metasd_train.distill.losses import acceptance, kd_loss
from metasd_train.distill.optim import adamw_warmup_cosine
from metasd_train.models.attention import no_cudnn_attention


class Frozen:
    """Holds the teacher outside the module's parameters: not trained, not checkpointed."""

    def __init__(self, model):
        self.model = model.eval().requires_grad_(False)


class DistillModule(L.LightningModule):
    def __init__(
        self,
        student,
        teacher,
        domains: list[str],
        loss: str = "tv",
        ce_weight: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 5,
        max_steps: int = 100,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["student", "teacher"])
        self.student = student
        self.teacher = Frozen(teacher)
        self.domains = list(domains)
        names = ("acceptance", "top1", "kd")
        self.val_metrics = torch.nn.ModuleDict({f"{m}_{d}": MeanMetric() for m in names for d in self.domains})

    def on_fit_start(self) -> None:
        self.teacher.model.to(self.device)

    on_validation_start = on_fit_start

    def _logits(self, batch):
        # batch: input_ids/attention_mask/loss_mask [B, T] -> student, teacher logits [N, V] at masked positions
        mask = batch["loss_mask"]
        ids, attn = batch["input_ids"], batch["attention_mask"]
        with no_cudnn_attention():  # every batch's padded length is a new shape to cuDNN
            with torch.no_grad():
                t = self.teacher.model(input_ids=ids, attention_mask=attn).logits[mask]
            s = self.student(input_ids=ids, attention_mask=attn).logits[mask]
        labels = ids[:, 1:][mask[:, :-1]]
        return s, t[:, : s.shape[-1]], labels

    def training_step(self, batch, batch_idx):
        s, t, labels = self._logits(batch)
        hp = self.hparams
        ce_weight = 1.0 if hp.loss == "ce" else hp.ce_weight
        loss = kd_loss(s, t, hp.loss)
        if ce_weight > 0:
            loss = loss + ce_weight * torch.nn.functional.cross_entropy(s.float(), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        domain = self.domains[dataloader_idx]  # one val dataloader per domain, in this order
        s, t, _ = self._logits(batch)
        n = s.shape[0]
        for name, value in (
            ("acceptance", acceptance(s, t).mean()),
            ("top1", (s.argmax(-1) == t.argmax(-1)).float().mean()),
            ("kd", kd_loss(s, t, "fkl")),
        ):
            metric = self.val_metrics[f"{name}_{domain}"]
            metric.update(value, weight=n)
            self.log(f"val/{name}/{domain}", metric, on_epoch=True, add_dataloader_idx=False, batch_size=n)

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.student, self.hparams)
