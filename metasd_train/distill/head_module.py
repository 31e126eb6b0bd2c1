"""LightningModule training an EAGLE-3 draft head against a frozen target, with training-time test.

Each batch runs the teacher once (hidden states + logits) and unrolls the head `ttt_steps` times
(`DraftHead.unroll`). Row t of every step predicts x_{t+2}, so every step's target is the teacher's
distribution at position t+1 restricted to the draft vocabulary and renormalised. The unroll runs over
every position (later steps read earlier steps' outputs), but training takes the head's logits, the
teacher's targets and the loss only on the response rows (`loss_rows`): the same loss, without the
draft-vocabulary logits and fp32 softmaxes of prompt and padding rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from metasd_train.data.datamodule import loss_rows
from metasd_train.distill.module import Frozen
from metasd_train.distill.optim import adamw_warmup_cosine
from metasd_train.errors import UserError
from metasd_train.models.attention import no_cudnn_attention

METRICS = ("acceptance", "top1", "accept_len")


@dataclass
class Targets:
    """Teacher side of a batch, rows aligned with the head's (row t predicts x_{t+2}): over the [B, T]
    grid (validation) or over the loss rows only, [N] (training); written [...] below."""

    probs: torch.Tensor  # [..., K] teacher at t+1 over the draft vocab, renormalised
    on_draft: torch.Tensor | None  # [..., K] teacher at t+1 over the draft vocab, not renormalised (tv only)
    argmax: torch.Tensor  # [...] teacher's greedy target id at t+1
    valid: torch.Tensor  # [...] bool: a response position (loss_mask at t+1)
    in_vocab: torch.Tensor  # [...] bool: the teacher's argmax is draftable
    neg_entropy: torch.Tensor  # [...] sum p log p of `probs`: the same for every unrolled step


def fkl(logits: torch.Tensor, t: Targets) -> torch.Tensor:
    """KL(teacher_on_draft || head) per row (cross-entropy minus the teacher's entropy)."""
    # logits: [..., K] -> [...]
    return t.neg_entropy - (t.probs * F.log_softmax(logits.float(), -1)).sum(-1)


def tv(logits: torch.Tensor, t: Targets) -> torch.Tensor:
    """1 - acceptance of speculative sampling: the head proposes only draft tokens."""
    # logits: [..., K] -> [...]
    if t.on_draft is None:
        raise RuntimeError("internal error: Targets built without on_draft (see HeadDistillModule._teacher)")
    return 1 - torch.minimum(t.on_draft, logits.float().softmax(-1)).sum(-1)


STEP_LOSSES = {"fkl": fkl, "tv": tv}


class HeadDistillModule(L.LightningModule):
    """Trains `head` (a DraftHead, or a peft wrapper of one) against the frozen `teacher`."""

    def __init__(
        self,
        head,
        teacher,
        domains: list[str],
        loss: str = "fkl",
        tv_weight: float = 0.0,
        ttt_steps: int = 5,
        step_decay: float = 0.8,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 50,
        max_steps: int = 1000,
    ):
        super().__init__()
        if loss not in STEP_LOSSES:
            raise UserError(f"head loss {loss!r} is not known; choose one of {sorted(STEP_LOSSES)}")
        if ttt_steps < 1:
            raise UserError(f"ttt_steps={ttt_steps}; choose 1 or more")
        self.save_hyperparameters(logger=False, ignore=["head", "teacher"])
        self.head = head
        self.teacher = Frozen(teacher)
        self.domains = list(domains)
        keys = [f"{m}_{d}" for m in METRICS for d in self.domains] + ["accept_len_all"]
        self.val_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in keys})

    def on_fit_start(self) -> None:
        self.teacher.model.to(self.device)

    on_validation_start = on_fit_start

    def _teacher(self, batch, on_draft: bool = True, rows: torch.Tensor | None = None):
        """features [B, T, 3d], next-token embeddings [B, T, d], and the teacher's Targets: over the
        whole [B, T] grid, or, with `rows` (flat indices b*T + t), over those rows only ([N])."""
        ids, attn, loss_mask = batch["input_ids"], batch["attention_mask"], batch["loss_mask"].bool()
        model, layers = self.teacher.model, self.head.config.feature_layers
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=attn, output_hidden_states=True)
            features = torch.cat([out.hidden_states[i] for i in layers], dim=-1)
            embeds = model.get_input_embeddings()(torch.cat((ids[:, 1:], ids[:, -1:]), 1))
            if rows is None:
                targets = self._grid_targets(out.logits[:, 1:], loss_mask[:, 1:], on_draft)  # row t: teacher at t+1
            else:  # row b*T + t reads the teacher at (b, t+1): flat index + 1 (a loss row has t < T-1)
                teacher = out.logits.flatten(0, 1)[rows + 1]
                targets = self._targets(teacher, torch.ones_like(rows, dtype=torch.bool), on_draft)
        return features, embeds, targets

    def _targets(self, logits: torch.Tensor, valid: torch.Tensor, on_draft: bool = True) -> Targets:
        """The teacher's rows. The unnormalised `on_draft` needs an fp32 copy and a logsumexp of the
        logits over the whole vocabulary (among a large-vocabulary step's heaviest passes), so it is
        built only when asked: for the tv loss and the validation acceptance."""
        # logits: [..., V] teacher at t+1; valid: [...] -> Targets over the same rows
        draft_ids = torch.arange(self.head.d2t.shape[0], device=logits.device) + self.head.d2t
        on_vocab = logits[..., draft_ids].float()  # [..., K]
        argmax = logits.argmax(-1)
        probs = on_vocab.softmax(-1)
        unnormalised = None
        if on_draft:
            lse = logits.float().logsumexp(-1, keepdim=True)  # no full-vocabulary softmax is kept
            unnormalised = (on_vocab - lse).exp()
        neg_entropy = torch.special.xlogy(probs, probs).sum(-1)
        return Targets(probs, unnormalised, argmax, valid, self.head.t2d[argmax], neg_entropy)

    def _grid_targets(self, logits: torch.Tensor, valid: torch.Tensor, on_draft: bool = True) -> Targets:
        """Targets over the [B, T] grid; the last row, with no teacher at t+1, is invalid (zeros)."""
        # logits: [B, T-1, V]; valid: [B, T-1] -> Targets over T rows
        t = self._targets(logits, valid, on_draft)
        rows, grid = (0, 0, 0, 1), (0, 1)
        argmax = F.pad(t.argmax, grid)
        return Targets(
            F.pad(t.probs, rows),
            None if t.on_draft is None else F.pad(t.on_draft, rows),
            argmax,
            F.pad(t.valid, grid),
            self.head.t2d[argmax],
            F.pad(t.neg_entropy, grid),
        )

    def _unroll(self, batch, on_draft: bool = True, rows: torch.Tensor | None = None):
        """The head's logits at each unrolled step and the teacher's Targets, over the grid or `rows`."""
        dtype, steps = self.head.fc.weight.dtype, self.hparams.ttt_steps
        with no_cudnn_attention():  # every batch's padded length is a new shape to cuDNN
            features, embeds, targets = self._teacher(batch, on_draft, rows)
            outs = self.head.unroll(features.to(dtype), embeds.to(dtype), batch["attention_mask"], steps)
        if rows is not None:
            outs = [o.flatten(0, 1)[rows] for o in outs]
        return [self.head.logits(o) for o in outs], targets

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        rows = batch["loss_rows"] if "loss_rows" in batch else loss_rows(batch["loss_mask"])
        logits, t = self._unroll(batch, hp.loss == "tv" or hp.tv_weight > 0, rows)
        position = rows % batch["input_ids"].shape[1]
        loss = torch.zeros((), device=self.device)
        for k, step_logits in enumerate(logits):
            chosen = t.in_vocab & (position >= k)  # rows before position k have no chain of k+1 drafts
            per_row = STEP_LOSSES[hp.loss](step_logits, t)
            if hp.tv_weight > 0:
                per_row = per_row + hp.tv_weight * tv(step_logits, t)
            loss = loss + hp.step_decay**k * _masked_mean(per_row, chosen)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        domain = self.domains[dataloader_idx]  # one val dataloader per domain, in this order
        logits, t = self._unroll(batch)
        n = int(t.valid.sum())
        if n == 0:
            return
        first = logits[0].float()
        values = {
            "acceptance": _masked_mean(1 - tv(first, t), t.valid),
            "top1": _masked_mean((self.head.to_target(first.argmax(-1)) == t.argmax).float(), t.valid),
            "accept_len": _masked_mean(self.accept_lengths(logits, t), t.valid),
        }
        for name, value in values.items():
            metric = self.val_metrics[f"{name}_{domain}"]
            metric.update(value, weight=n)
            self.log(f"val/{name}/{domain}", metric, on_epoch=True, add_dataloader_idx=False, batch_size=n)
        self.val_metrics["accept_len_all"].update(values["accept_len"], weight=n)

    def on_validation_epoch_end(self) -> None:
        # logged here: a name may be logged from one dataloader only, and this one spans them all
        overall = self.val_metrics["accept_len_all"]
        if overall.update_called:
            self.log("val/accept_len/all", overall.compute())
        overall.reset()

    def accept_lengths(self, logits: list[torch.Tensor], t: Targets) -> torch.Tensor:
        """Greedy drafts accepted from each chain start (no bonus token), under teacher forcing."""
        # logits: steps x [B, T, K] -> [B, T] float in 0..steps
        match = [(self.head.to_target(x.argmax(-1)) == t.argmax) & t.valid for x in logits]
        alive = torch.ones_like(t.valid)
        total = torch.zeros(t.valid.shape, device=t.valid.device)
        for k, m in enumerate(match):  # chain from b: step k+1 sits at row b+k
            step_ok = F.pad(m[:, k:], (0, k))  # [B, T] indexed by chain start b
            alive = alive & step_ok
            total = total + alive.float()
        return total

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.head, self.hparams)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # values, mask: [B, T] or [N] -> []; zero (with a gradient path) when nothing is selected
    return (values * mask).sum() / mask.sum().clamp_min(1)
